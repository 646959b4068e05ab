"""Page bytes reach the centre through the object store, end to end with real parts: the real
agent uploads to SeaweedFS and its events carry s3:// URIs; the QC workers run as another Unix
user, which cannot read the hot folder at all, and check every page from the store; the
consumer counts them in PostgreSQL; `sohoa status` shows the upload backlog and `sohoa
reconcile` compares the disk, the store and the database.

The site's environment and its row on `sohoa status` are in tests/support/objects_helpers.py.
"""

from __future__ import annotations

import io
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sohoa.events import PageScanned
from sohoa.samples import PageSpec, render_page, write_page
from tests.support.objects_helpers import MIB, SITE, objects_env, site_row, status
from tests.support.pages import text_lines
from tests.support.procs import SohoaProcess, run_sohoa, wait_for
from tests.support.typed_events import only
from tests.support.watch_helpers import read_topic

WORKER = "sohoa-wk"


def spec(seed: int) -> PageSpec:
    return PageSpec(seed=seed, text=text_lines(8, seed), noise=0.002)


def scanner_pdf(path: Path, seeds: list[int]) -> Path:
    """A multi-page PDF as a document scanner writes it: one JPEG image filling each page."""
    import img2pdf

    images = []
    for seed in seeds:
        buf = io.BytesIO()
        s = spec(seed)
        render_page(s).save(buf, "JPEG", quality=85, dpi=(s.dpi, s.dpi))
        images.append(buf.getvalue())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(img2pdf.convert(images))
    return path


@pytest.fixture(scope="module")
def worker_user() -> tuple[int, int]:
    """A Unix user for the centre's workers (created once): it shares no file with the site."""
    if os.geteuid() != 0:
        pytest.skip("running the workers as another user needs root")
    try:
        pw = pwd.getpwnam(WORKER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", WORKER], check=True, capture_output=True)
        pw = pwd.getpwnam(WORKER)
    return pw.pw_uid, pw.pw_gid


@pytest.fixture
def worker_home(worker_user) -> Iterator[Path]:
    home = Path(tempfile.mkdtemp(prefix="sohoa-wk-"))
    os.chown(home, *worker_user)
    yield home
    shutil.rmtree(home, ignore_errors=True)


def worker_python() -> str:
    """An interpreter the worker user can run: this venv's lives under /root (0700) here, so
    the system's python of the same version, given the venv's packages and the repository."""
    want = f"python{sys.version_info.major}.{sys.version_info.minor}"
    found = shutil.which(want, path="/usr/local/bin:/usr/bin:/bin")
    if found is None:
        pytest.skip(f"no system {want} the worker user can run")
    return found


def worker_env(env: dict[str, str], objects, home: Path) -> dict[str, str]:
    """The streams' environment: the workers' key, no file roots, its own dirs."""
    import site

    out = {k: v for k, v in env.items() if not k.startswith(("SOHOA_STORE__", "SOHOA_UPLOAD"))}
    repo = str(Path(__file__).resolve().parents[2])
    return {**out, **objects.env("workers"), "HOME": str(home), "TMPDIR": str(home),
            "PYTHONPATH": os.pathsep.join([repo, *site.getsitepackages()]),
            "SOHOA_SOURCES__WATCHER_ROOTS": "false",
            "SOHOA_STREAMS__DATA_DIR": str(home / "faust"),
            "SOHOA_OCR__OUTPUT_DIR": str(home / "ocr")}


def cannot_read(user: tuple[int, int], path: Path) -> bool:
    """The worker user really cannot open ``path`` (no hidden shared file system)."""
    r = subprocess.run([worker_python(), "-c", f"open({str(path)!r}, 'rb').read(1)"],
                       user=user[0], group=user[1], extra_groups=[], capture_output=True,
                       text=True, cwd="/")
    return r.returncode != 0 and "PermissionError" in r.stderr


def test_pages_travel_through_the_store_to_workers_that_cannot_see_the_site(
        stack, objects, worker_user, worker_home, tmp_path: Path) -> None:
    env = objects_env(stack, objects, tmp_path)
    root = Path(json.loads(env["SOHOA_WATCHER__ROOTS"])[0])
    assert run_sohoa(["db", "migrate"], env).returncode == 0
    hs1 = root / "FONDS-A" / "HS-01"
    for n in (1, 2, 3):
        write_page(hs1 / f"{n:03d}.png", spec(n))
    scanner_pdf(hs1 / "QD-15-UBND.pdf", list(range(100, 112)))  # > 1 MiB: parts
    write_page(root / "FONDS-A" / "HS-02" / "001.jpg", spec(50))
    write_page(root / "FONDS-A" / "HS-02" / "002.jpg", spec(51))
    for f in ("HS-01", "HS-02"):
        (root / "FONDS-A" / f / "DONE").touch()
    assert (hs1 / "QD-15-UBND.pdf").stat().st_size > MIB
    assert cannot_read(worker_user, hs1 / "001.png")
    expected = {("FONDS-A", "HS-01"): 15, ("FONDS-A", "HS-02"): 2}

    logs = tmp_path / "logs"
    wenv = worker_env(env, objects, worker_home)
    procs = (SohoaProcess(["consume"], env, logs / "consume.log"),
             SohoaProcess(["streams", "--role", "all"], wenv, logs / "streams.log",
                          user=worker_user[0], group=worker_user[1], python=worker_python()),
             SohoaProcess(["watch"], env, logs / "watch.log"))
    try:
        def judged():
            files = {(f["fonds"], f["file_code"]): f for f in status(env)["files"]}
            ok = all(files.get(k, {}).get("state") == "accepted"
                     and files[k]["checked_pages"] == n for k, n in expected.items())
            return files if ok else None

        files = wait_for(judged, 300, "every page checked from the store and accepted",
                         procs, interval=2.0)
        assert sum(f["pages"] for f in files.values()) == 17
        assert all(f["qc_failed_pages"] == 0 for f in files.values())
        row = wait_for(lambda: (r := site_row(env)) and r.get("upload_pending_pages") == 0
                       and r.get("outbox_depth") == 0 and r, 60, "an empty backlog", procs)
        assert row["oldest_unuploaded_age_s"] == 0 and row["upload_error"] is None
    finally:
        for p in reversed(procs):
            p.stop()
    evs = read_topic(stack, env["SOHOA_TOPICS__SITE_EVENTS"], 2000)
    pages = only(evs, PageScanned)
    assert len(pages) == 17
    assert all(e.uri == f"s3://sohoa-pages/{SITE}/{e.document_sha256[:2]}/"
                        f"{e.document_sha256}" for e in pages)
    # Disk, store and database agree; the workers' key reads the site's prefix.
    renv = {**env, **objects.env("workers")}
    r = run_sohoa(["reconcile", "--site", SITE, "--root", str(root), "--json"], renv)
    rec = json.loads(r.stdout)
    assert r.returncode == 0 and rec["ok"], rec
    assert rec["matched"] == 17 and rec["stored_documents"] == 6
    # The site's own key cannot hide a page behind a delete marker; a marker put there all
    # the same (the admin's key) is named by reconcile as tampering, and the workers still
    # read the stored version.
    from sohoa.config import Settings
    from sohoa.objectstore import ObjectStore, StoreError, page_key
    from streams.qc_task import check_chunk
    from streams.sources import PageSources

    pdf = next(e for e in pages if e.document == "QD-15-UBND.pdf")
    key = page_key(SITE, pdf.document_sha256)
    with pytest.raises(StoreError) as denied:
        ObjectStore(objects.store(f"site:{SITE}"), retries=0)._call(
            "delete_object", Bucket="sohoa-pages", Key=key)
    assert denied.value.code == "AccessDenied"
    r = run_sohoa(["reconcile", "--site", SITE, "--root", str(root), "--json"], renv)
    assert r.returncode == 0 and json.loads(r.stdout)["tampered"] == []
    ObjectStore(objects.store("admin"))._call("delete_object", Bucket="sohoa-pages", Key=key)
    r = run_sohoa(["reconcile", "--site", SITE, "--root", str(root), "--json"], renv)
    rec = json.loads(r.stdout)
    assert r.returncode == 1 and [d["document"] for d in rec["tampered"]] == [
        "QD-15-UBND.pdf"]
    assert rec["not_stored"] == []
    assert "bị ghi đè hoặc che trong kho lưu trữ" in run_sohoa(
        ["reconcile", "--site", SITE, "--root", str(root)], renv).stdout
    settings = Settings(store=objects.store("workers"))
    [checked] = check_chunk(SITE, pdf.uri, pdf.media_type, [(pdf.page_index, pdf.sha256)],
                            settings.qc, PageSources.from_settings(settings))
    assert checked.passed, checked.checks
