"""`sohoa sign`, `sohoa package build`, `sohoa handover build|verify`."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import click

from sohoa.config import Settings
from sohoa.errors import ExitCode


@click.command("sign")
@click.argument("src", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.argument("dst", type=click.Path(path_type=Path, dir_okay=False))
@click.pass_obj
def sign(settings: Settings, src: Path, dst: Path) -> None:
    """Sign the PDF/A SRC with the digitizing body's key (signing.*) into DST."""
    from deliver.signing import SigningError, load_key, sign_pdf

    if dst.exists():
        raise click.ClickException(f"{dst} đã có; không ghi đè")
    try:
        key = load_key(settings.signing)
        try:
            copy = sign_pdf(src, dst, key, settings.signing)
        finally:
            key.close()
    except SigningError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Đã ký: {copy.path} ({copy.signing_time.isoformat(timespec='seconds')})")


@click.group("package")
def package() -> None:
    """Gói tin AIP_hoso / SIP_hoso (E-ARK CSIP 2.0.4) của hồ sơ đã nghiệm thu."""


def _selection(f):
    f = click.option("--site", help="Mã điểm số hóa.")(f)
    f = click.option("--fonds", help="Phông.")(f)
    f = click.option("--unit", help="Đơn vị (theo kế hoạch).")(f)
    f = click.option("--file", "file_code", help="Một hồ sơ (mã hồ sơ).")(f)
    f = click.option("--sip", is_flag=True, help="SIP_hoso cho lưu trữ ở hệ thống khác.")(f)
    return f


def _build_all(settings: Settings, out: Path, site, fonds, unit, file_code, sip):
    """Facts of the selection, then every package; (built, refused) with nothing built when
    any file is refused."""
    from consumers.db import connect
    from deliver import facts as fx
    from deliver.facts import problems
    from deliver.package import PackageRefused, build
    from deliver.signing import SigningError, load_key

    with connect(settings.postgres, reader=True) as conn:
        keys = fx.accepted_files(conn, site=site, fonds=fonds, unit=unit, file_code=file_code)
        loaded = [fx.load(conn, *k) for k in keys]
    files = [f for f in loaded if f is not None]
    if not files:
        raise click.ClickException("không có hồ sơ đã nghiệm thu nào trong phạm vi đã chọn")
    refused = {f"{f.site_id}/{f.fonds}/{f.file_code}": problems(f) for f in files}
    refused = {k: v for k, v in refused.items() if v}
    if refused:
        return [], refused
    try:
        key = load_key(settings.signing)
    except SigningError as exc:
        raise click.ClickException(str(exc)) from None
    built = []
    try:
        for f in files:
            try:
                built.append((build(f, key, settings, out, sip=sip), f))
            except PackageRefused as exc:  # pragma: no cover - problems() ran above
                refused[exc.file] = exc.reasons
            except SigningError as exc:
                raise click.ClickException(str(exc)) from None
    finally:
        key.close()
    return built, refused


def _print_refused(refused: dict[str, list[str]]) -> None:
    for file, reasons in refused.items():
        click.echo(f"TỪ CHỐI {file}:", err=True)
        for r in reasons:
            click.echo(f"  - {r}", err=True)


def _record(settings: Settings, step: str, items, handover: str | None, at) -> None:
    from consumers.db import connect
    from deliver.store import record

    with connect(settings.postgres) as conn:
        for pkg, pages, detail in items:
            record(conn, step, site_id=pkg["site_id"], fonds=pkg["fonds"],
                   file_code=pkg["file_code"], revision=pkg["revision"], kind=pkg["kind"],
                   package=pkg["package"], package_sha256=pkg["sha256"],
                   package_bytes=pkg["size"], pages=pages, at=at, handover=handover,
                   detail=detail)
        conn.commit()


def _as_row(pkg) -> dict:
    return {"site_id": pkg.site_id, "fonds": pkg.fonds, "file_code": pkg.file_code,
            "revision": pkg.revision, "kind": pkg.kind, "package": pkg.path.name,
            "sha256": pkg.sha256, "size": pkg.size}


@package.command("build")
@_selection
@click.option("--out", type=click.Path(path_type=Path, file_okay=False),
              help="Thư mục ghi gói (mặc định deliver.output_dir/goi).")
@click.pass_obj
def package_build(settings: Settings, site, fonds, unit, file_code, sip, out) -> None:
    """Build the package of each accepted file of the selection (one ZIP per file). A file
    with a page not accepted or a required field missing is refused, with the list."""
    out = out or settings.deliver.output_dir / "goi"
    built, refused = _build_all(settings, out, site, fonds, unit, file_code, sip)
    if refused:
        _print_refused(refused)
        click.echo(f"{len(refused)} hồ sơ bị từ chối; không đóng gói.", err=True)
        sys.exit(ExitCode.ERROR)
    now = datetime.now(ZoneInfo(settings.signing.timezone))
    _record(settings, "packaged", [(_as_row(p), p.pages, {}) for p, _ in built], None, now)
    for p, _ in built:
        click.echo(f"{p.path}  {p.pages} trang  {p.size} byte  sha256 {p.sha256}")
    if settings.store.enabled:  # the packages into the object store too (streams/outputs.py)
        from streams.outputs import store_outputs

        for p, _ in built:
            uri, = store_outputs(settings.store, p.site_id, p.fonds, p.file_code, p.revision,
                                 [p.path])
            click.echo(f"  → {uri}")


@click.group("handover")
def handover() -> None:
    """Bàn giao cho Lưu trữ lịch sử: gói tin, mục lục hồ sơ, biên bản, mã kiểm tra."""


@handover.command("build")
@_selection
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Thư mục chứa hồ sơ bàn giao.")
@click.pass_obj
def handover_build(settings: Settings, site, fonds, unit, file_code, sip, out: Path) -> None:
    """Gather the packages of one fonds or unit with the mục lục hồ sơ, the biên bản giao
    nhận and SHA256SUMS into OUT/<id>/."""
    import shutil

    from deliver.handover import PACKAGES_DIR, entry, write_documents

    if fonds is None and unit is None and file_code is None:
        raise click.ClickException("chọn --fonds hoặc --unit (hoặc --file)")
    now = datetime.now(ZoneInfo(settings.signing.timezone))
    scope = " ".join(x for x in (f"phông {fonds}" if fonds else "",
                                 f"đơn vị {unit}" if unit else "",
                                 f"điểm {site}" if site else "",
                                 f"hồ sơ {file_code}" if file_code else "") if x)
    hid = f"ban-giao-{now:%Y%m%d-%H%M%S}"
    root = out / hid
    if root.exists():
        raise click.ClickException(f"{root} đã có")
    work = out / f".{hid}.tmp"
    built, refused = _build_all(settings, work / PACKAGES_DIR, site, fonds, unit, file_code,
                                sip)
    if refused:
        shutil.rmtree(work, ignore_errors=True)
        _print_refused(refused)
        click.echo(f"{len(refused)} hồ sơ bị từ chối; không bàn giao.", err=True)
        sys.exit(ExitCode.ERROR)
    entries = [entry(p, f) for p, f in built]
    write_documents(work, entries, settings, scope, now)
    work.rename(root)
    rows: list[tuple[dict, int, dict]] = [(_as_row(p), p.pages, {}) for p, _ in built]
    _record(settings, "packaged", rows, None, now)
    _record(settings, "handed_over", rows, hid, now)
    click.echo(f"Đã lập hồ sơ bàn giao {root}: {len(entries)} gói, "
               f"{sum(e.pages for e in entries)} trang.")


@handover.command("verify")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--trust", "trust", multiple=True, type=click.Path(path_type=Path, exists=True),
              help="Chứng thư CA tin cậy (PEM/DER); mặc định signing.trust_roots.")
@click.option("--record/--no-record", default=True,
              help="Ghi kết quả vào kho tiến độ (mặc định có, nếu kết nối được).")
@click.pass_obj
def handover_verify(settings: Settings, directory: Path, trust, record: bool) -> None:
    """Re-check a hand-over: structure, checksums, signatures, PDF/A, METS/EAD/PREMIS, CSIP.
    Exit 1 naming each fault."""
    import json

    from deliver.handover import LIST_NAME
    from deliver.verify import verify

    roots = list(trust) or list(settings.signing.trust_roots)
    if not roots:
        raise click.ClickException("cần chứng thư CA tin cậy: --trust CA.pem hoặc "
                                   "signing.trust_roots")
    rep = verify(directory, roots)
    for f in rep.faults:
        click.echo(f"LỖI {f}", err=True)
    if record:
        try:
            listing = json.loads((directory / LIST_NAME).read_text(encoding="utf-8"))
            now = datetime.now(ZoneInfo(settings.signing.timezone))
            rows = [(p, p["pages"], {"faults": rep.packages.get(p["package"], [])})
                    for p in listing["packages"]]
            ok = [r for r in rows if not r[2]["faults"] and rep.ok]
            bad = [r for r in rows if r not in ok]
            _record(settings, "verified", [(r[0], r[1], {}) for r in ok], directory.name, now)
            _record(settings, "verify_failed", bad, directory.name, now)
        except Exception as exc:  # the receiving archive may have no progress store
            click.echo(f"(không ghi được vào kho tiến độ: {exc})", err=True)
    if not rep.ok:
        click.echo(f"KHÔNG ĐẠT: {len(rep.faults)} lỗi.", err=True)
        sys.exit(ExitCode.ERROR)
    click.echo(f"ĐẠT: {len(rep.packages)} gói, {rep.checked_pdfs} bản PDF/A đã kiểm tra.")
