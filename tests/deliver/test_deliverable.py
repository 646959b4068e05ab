"""Packages and hand-overs from the progress store: built from the facts PostgreSQL holds,
checked by independent validators (the shipped XSDs, pyHanko, veraPDF, eark-validator), and
every tamper named by `sohoa handover verify`."""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from deliver.cli import handover, package
from sohoa.config import DeliverConfig, PostgresConfig, Settings, SigningConfig
from sohoa.events import (
    CheckResult,
    FileAssembled,
    FileManifest,
    FileVerdict,
    OcrCompleted,
    PageChecked,
    PageRef,
    PageScanned,
    PageText,
)
from tests.support.deliver_helpers import BODY, PASSPHRASE, make_ca, make_pdfa
from tests.support.metadata_helpers import GOOD_DOC, GOOD_FILE
from tests.support.progress_store import apply_events, as_role, fresh_db

pytestmark = pytest.mark.integration
SITE, FONDS = "xa-tan-phu", "UBND"
T0 = datetime(2026, 3, 3, 2, 0, tzinfo=UTC)


def _sha(*parts: object) -> str:
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()


def accepted_file(code: str, docs: dict[str, int], ocr_pdf: Path, *, record: dict | None,
                  doc_records: dict[str, dict] | None = None, passed: bool = True) -> list:
    """The events of one file scanned, checked, OCR'd and accepted: ``docs`` maps each
    document to its page count; the OCR output is ``ocr_pdf`` (pages in the same order)."""
    evs: list = []
    refs: list[PageRef] = []
    for n, (doc, pages) in enumerate(docs.items(), 1):
        dsha = _sha(code, doc)
        for i in range(1, pages + 1):
            sha = _sha(code, doc, i)
            evs.append(PageScanned.make(
                site_id=SITE, fonds=FONDS, file_code=code, document=doc, page_index=i,
                document_pages=pages, number=n if pages == 1 else None,
                uri=f"file:///hot/{code}/{doc}", sha256=sha, document_sha256=dsha,
                size_bytes=100, media_type="application/pdf", path=f"{FONDS}/{code}/{doc}",
                occurred_at=T0))
            refs.append(PageRef(document=doc, page_index=i, uri=f"file:///hot/{code}/{doc}",
                                document_sha256=dsha, sha256=sha))
    manifest_docs = [{"name": d, **({"record": doc_records[d]} if doc_records and d in
                                    doc_records else {})} for d in docs]
    evs.append(FileManifest(site_id=SITE, fonds=FONDS, file_code=code, documents=manifest_docs,
                            record=record, occurred_at=T0))
    evs.append(FileAssembled(site_id=SITE, fonds=FONDS, file_code=code, pages=refs,
                             occurred_at=T0 + timedelta(minutes=1)))
    for r in refs:
        evs.append(PageChecked(
            site_id=SITE, fonds=FONDS, file_code=code, document=r.document,
            page_index=r.page_index, sha256=r.sha256, passed=passed,
            checks=[CheckResult(check="dpi", value=300.0, threshold=200, passed=passed)],
            occurred_at=T0 + timedelta(minutes=2)))
    evs.append(OcrCompleted(
        site_id=SITE, fonds=FONDS, file_code=code, output_uri=ocr_pdf.resolve().as_uri(),
        output_sha256=hashlib.sha256(ocr_pdf.read_bytes()).hexdigest(),
        pages=[PageText(document=r.document, page_index=r.page_index, chars=10) for r in refs],
        occurred_at=T0 + timedelta(minutes=3)))
    evs.append(FileVerdict(site_id=SITE, fonds=FONDS, file_code=code, verdict="accepted",
                           pages_total=len(refs), pages_accepted=len(refs),
                           occurred_at=T0 + timedelta(minutes=4)))
    return evs


def file_record(code: str, docs: dict[str, int]) -> tuple[dict, dict[str, dict]]:
    no = code.rsplit(".", 1)[1]
    rec = {**GOOD_FILE, "ma_ho_so": code, "so_ky_hieu_ho_so": no,
           "tong_so_van_ban": len(docs), "so_luong_to": sum(docs.values()),
           "so_luong_trang": sum(docs.values())}
    return rec, {d: {**GOOD_DOC, "so_thu_tu": i, "so_trang": p}
                 for i, (d, p) in enumerate(docs.items(), 1)}


@pytest.fixture(scope="module")
def world(stack, tmp_path_factory):
    """A database with two accepted files (one with a 2-page document), one accepted file
    missing metadata, one file with a page that failed; a CA and its PKCS#12 key."""
    d = tmp_path_factory.mktemp("deliver")
    dsn = fresh_db(stack, "deliv")
    ca = make_ca(d / "ca")
    a_docs, b_docs = {"001.pdf": 2, "002.pdf": 1}, {"001.tif": 1}
    a_ocr = make_pdfa(d / "ocr" / "a.pdf", pages=3)
    b_ocr = make_pdfa(d / "ocr" / "b.pdf", pages=1)
    events = []
    for code, docs, ocr in (("H01.1.05", a_docs, a_ocr), ("H01.1.06", b_docs, b_ocr)):
        rec, drec = file_record(code, docs)
        events += accepted_file(code, docs, ocr, record=rec, doc_records=drec)
    events += accepted_file("H01.1.07", b_docs, b_ocr, record=None)
    rec, drec = file_record("H01.1.08", b_docs)
    events += accepted_file("H01.1.08", b_docs, b_ocr, record=rec, doc_records=drec,
                            passed=False)
    with psycopg.connect(dsn) as conn:
        apply_events(conn, events)
    settings = Settings(
        postgres=PostgresConfig(dsn=SecretStr(dsn),
                                reader_dsn=SecretStr(as_role(dsn, "sohoa_reader"))),
        signing=SigningConfig(body_name=BODY, pkcs12_path=ca.p12,
                              pkcs12_passphrase=SecretStr(PASSPHRASE), trust_roots=[ca.root_pem]),
        deliver=DeliverConfig(archive_code="LTLS", agency_name="UBND xã Tân Phú",
                              receiver_name="Lưu trữ lịch sử tỉnh", output_dir=d / "out"))
    return {"dir": d, "dsn": dsn, "ca": ca, "settings": settings}


def _run(cmd, args: list[str], settings: Settings):
    return CliRunner().invoke(cmd, args, obj=settings, catch_exceptions=False)


def test_a_file_missing_metadata_or_a_page_is_refused_with_the_list(world) -> None:
    s = world["settings"]
    res = _run(package, ["build", "--file", "H01.1.07"], s)
    assert res.exit_code == 1
    assert "thiếu siêu dữ liệu hồ sơ" in res.output
    assert "văn bản '001.tif': thiếu siêu dữ liệu" in res.output
    res = _run(package, ["build", "--file", "H01.1.08"], s)
    assert res.exit_code == 1
    assert "trang chưa được chấp nhận: 001.tif trang 1 (không đạt kiểm tra)" in res.output
    res = _run(handover, ["build", "--fonds", FONDS, "--out", str(world["dir"] / "hv0")], s)
    assert res.exit_code == 1 and "không bàn giao" in res.output
    hv0 = world["dir"] / "hv0"
    assert not hv0.exists() or not list(hv0.iterdir())   # nothing left behind


@pytest.fixture(scope="module")
def handed_over(world) -> Path:
    s = world["settings"]
    with psycopg.connect(world["dsn"]) as conn:  # the two incomplete files leave the fonds
        conn.execute("UPDATE files SET fonds = 'KHAC' WHERE file_code IN "
                     "('H01.1.07', 'H01.1.08')")
        conn.execute("UPDATE pages SET fonds = 'KHAC' WHERE file_code IN "
                     "('H01.1.07', 'H01.1.08')")
    out = world["dir"] / "hv"
    res = _run(handover, ["build", "--fonds", FONDS, "--out", str(out)], s)
    assert res.exit_code == 0, res.output
    [root] = [p for p in out.iterdir() if p.is_dir()]
    return root


def test_handover_builds_and_verifies_and_the_store_shows_it(world, handed_over) -> None:
    root = handed_over
    names = sorted(p.name for p in (root / "goi").iterdir())
    assert names == ["AIP_hoso_LTLS.H01.1.05.zip", "AIP_hoso_LTLS.H01.1.06.zip"]
    for f in ("muc-luc-ho-so.xlsx", "bien-ban-giao-nhan.docx", "bien-ban-giao-nhan.pdf",
              "SHA256SUMS", "danh-sach-goi.json"):
        assert (root / f).is_file()
    with zipfile.ZipFile(root / "goi" / names[0]) as zf:
        members = zf.namelist()
        ead = zf.read("AIP_hoso_LTLS.H01.1.05/metadata/descriptive/EAD.xml").decode()
        premis = zf.read("AIP_hoso_LTLS.H01.1.05/representations/rep1/metadata/preservation/"
                         "PREMIS_rep1.xml").decode()
    assert "AIP_hoso_LTLS.H01.1.05/representations/rep1/data/H01.1.05.001.pdf" in members
    assert "AIP_hoso_LTLS.H01.1.05/representations/rep1/data/H01.1.05.002.pdf" in members
    assert '<unitid type="arcFileCode">LTLS.H01.1.05</unitid>' in ead
    assert '<unitid type="arcDocCode">LTLS.H01.1.05.001</unitid>' in ead
    assert "Hồ sơ xây dựng trường tiểu học xã Tân Phú" in ead
    for ev in ("capture", "validation", "creation", "digital signature generation"):
        assert f"<eventType>{ev}</eventType>" in premis
    assert f"Quét tại điểm {SITE}: 001.pdf trang 2" in premis
    res = _run(handover, ["verify", str(root)], world["settings"])
    assert res.exit_code == 0, res.output
    assert "ĐẠT: 2 gói, 3 bản PDF/A" in res.output
    with psycopg.connect(world["dsn"]) as conn:
        steps = conn.execute("SELECT file_code, step FROM v_file_deliverable ORDER BY 1").fetchall()
        site = conn.execute("SELECT files_packaged, files_handed_over, files_verified, "
                            "pages_verified FROM v_site_deliverables WHERE site_id = %s",
                            (SITE,)).fetchone()
    assert steps == [("H01.1.05", "verified"), ("H01.1.06", "verified")]
    assert site == (2, 2, 2, 4)
    _status_and_report_show_it(world)


def _status_and_report_show_it(world) -> None:
    from openpyxl import load_workbook

    from consumers.monthly import build_monthly
    from consumers.monthly_doc import write_monthly
    from consumers.status import collect

    s = world["settings"]
    with psycopg.connect(s.postgres.reader_dsn.get_secret_value()) as conn:
        data = collect(conn, s.campaign)
        rep = build_monthly(conn, s.campaign, T0.year, T0.month)
    [site] = [x for x in data["sites"] if x["site_id"] == SITE]
    assert site["deliverable"]["files_verified"] == 2
    assert site["deliverable"]["pages_verified"] == 4
    shown = {f["file_code"]: f["deliverable"] for f in data["files"]}
    assert shown["H01.1.05"] == "verified" and shown["H01.1.07"] is None
    out = write_monthly(rep, "xlsx", world["dir"] / "thang.xlsx")
    rows = list(load_workbook(out)["Bàn giao"].iter_rows(values_only=True))
    assert (2, 2, 2, 0, 4, 4) in [tuple(r[-6:]) for r in rows], rows


def _copy(root: Path, tmp: Path) -> Path:
    dst = tmp / root.name
    shutil.copytree(root, dst)
    return dst


def _rezip(zpath: Path, change) -> None:
    """Rewrite a package with ``change(name, data) -> data | None`` (None drops the member)."""
    with zipfile.ZipFile(zpath) as zf:
        items = [(i, zf.read(i)) for i in zf.infolist()]
    with zipfile.ZipFile(zpath, "w") as zf:
        for info, data in items:
            new = change(info.filename, data)
            if new is not None:
                zf.writestr(info, new)


def _resum(root: Path) -> None:
    from deliver.handover import write_sums

    write_sums(root)


def _verify(world, root: Path) -> list[str]:
    res = _run(handover, ["verify", "--no-record", str(root)], world["settings"])
    assert res.exit_code == 1, res.output
    return [line for line in res.output.splitlines() if line.startswith("LỖI ")]


def test_tampering_is_named(world, handed_over, tmp_path) -> None:
    pkg = "AIP_hoso_LTLS.H01.1.05.zip"
    # 1. one byte flipped in a package
    root = _copy(handed_over, tmp_path / "flip")
    z = root / "goi" / pkg
    data = bytearray(z.read_bytes())
    data[len(data) // 2] ^= 0x01
    z.write_bytes(bytes(data))
    faults = _verify(world, root)
    assert any(f"goi/{pkg}: SHA-256 không khớp SHA256SUMS" in f for f in faults)

    # 2. a signed PDF swapped for another document's (checksums recomputed by the forger)
    root = _copy(handed_over, tmp_path / "swap")
    z = root / "goi" / pkg
    with zipfile.ZipFile(root / "goi" / "AIP_hoso_LTLS.H01.1.06.zip") as zf:
        other = zf.read("AIP_hoso_LTLS.H01.1.06/representations/rep1/data/H01.1.06.001.pdf")
    _rezip(z, lambda n, d: other if n.endswith("H01.1.05.002.pdf") else d)
    _resum(root)
    faults = _verify(world, root)
    assert any("H01.1.05.002.pdf: SHA-256 khác METS" in f for f in faults), faults

    # 3. a signature stripped: the unsigned PDF/A in its place, METS and sums made to match
    root = _copy(handed_over, tmp_path / "strip")
    z = root / "goi" / pkg
    unsigned = make_pdfa(tmp_path / "unsigned.pdf", pages=1)
    _swap_with_matching_mets(z, "H01.1.05.002.pdf", unsigned.read_bytes())
    _resum(root)
    faults = _verify(world, root)
    assert any("H01.1.05.002.pdf: chữ ký số: không có chữ ký số" in f for f in faults), faults
    assert not any("SHA-256 khác METS" in f for f in faults)   # only the signature is wrong

    # 4. a field removed from METS (the CHECKSUM of a file)
    root = _copy(handed_over, tmp_path / "mets")
    z = root / "goi" / pkg

    def drop_checksum(name: str, data: bytes) -> bytes:
        if not name.endswith("/METS.xml"):
            return data
        from lxml import etree
        doc = etree.fromstring(data)
        el = next(e for e in doc.iter("{http://www.loc.gov/METS/}file")
                  if "H01.1.05.001.pdf" in etree.tostring(e).decode())
        del el.attrib["CHECKSUM"]
        return etree.tostring(doc, xml_declaration=True, encoding="UTF-8")

    _rezip(z, drop_checksum)
    _resum(root)
    faults = _verify(world, root)
    assert any("METS: representations/rep1/data/H01.1.05.001.pdf thiếu thuộc tính CHECKSUM"
               in f for f in faults), faults


def _swap_with_matching_mets(z: Path, name: str, new: bytes) -> None:
    from lxml import etree

    digest = hashlib.sha256(new).hexdigest()

    def change(member: str, data: bytes) -> bytes:
        if member.endswith(name):
            return new
        if member.endswith("/METS.xml"):
            doc = etree.fromstring(data)
            for el in doc.iter("{http://www.loc.gov/METS/}file"):
                if name in etree.tostring(el).decode():
                    el.set("CHECKSUM", digest)
                    el.set("SIZE", str(len(new)))
            return etree.tostring(doc, xml_declaration=True, encoding="UTF-8")
        return data

    _rezip(z, change)


def test_a_sip_for_another_archive_passes_the_csip_validator(world, tmp_path) -> None:
    """`package build --sip`: the SIP_hoso of an accepted file, checked by eark-validator (the
    independent CSIP validator, offline vocabularies) and by its own METS checksums."""
    from lxml import etree

    from deliver import csip

    out = tmp_path / "sip"
    res = _run(package, ["build", "--file", "H01.1.05", "--sip", "--out", str(out)],
               world["settings"])
    assert res.exit_code == 0, res.output
    [z] = sorted(out.glob("*.zip"))
    assert z.name == "SIP_hoso_LTLS.H01.1.05.zip"
    with zipfile.ZipFile(z) as zf:
        names = zf.namelist()
        mets = etree.fromstring(zf.read("SIP_hoso_LTLS.H01.1.05/METS.xml"))
        data = {n: zf.read(n) for n in names if "/representations/rep1/data/" in n}
    hdr = mets.find("{http://www.loc.gov/METS/}metsHdr")
    assert hdr is not None
    assert hdr.get("{https://DILCIS.eu/XML/METS/CSIPExtensionMETS}OAISPACKAGETYPE") == "SIP"
    assert sorted(n.rsplit("/", 1)[1] for n in data) == ["H01.1.05.001.pdf", "H01.1.05.002.pdf"]
    sums = {el.get("CHECKSUM") for el in mets.iter("{http://www.loc.gov/METS/}file")}
    assert {hashlib.sha256(b).hexdigest().upper() for b in data.values()} <= \
        {s.upper() for s in sums if s}
    assert csip.check([z]) == {z: []}
