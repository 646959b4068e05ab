"""One accepted hồ sơ → one ZIP: its AIP_hoso (or, with ``sip``, its SIP_hoso for an archive
on another system), an E-ARK CSIP 2.0.4 folder tree (Art. 17 TT 05/2025):

    <ID>/METS.xml
    <ID>/metadata/descriptive/EAD.xml
    <ID>/metadata/preservation/PREMIS.xml                       (AIP only)
    <ID>/representations/rep1/data/<mã hồ sơ>.<nnn>.pdf          (the signed copies)
    <ID>/representations/rep1/metadata/preservation/PREMIS_rep1.xml   (AIP only)
    <ID>/schemas/*.xsd

Every file is listed in METS with its SHA-256; the signed copies are the OCR's PDF/A split
by document (:mod:`deliver.split`) and signed (:mod:`deliver.signing`). Nothing is written
for a file with any problem (:func:`deliver.facts.problems`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from deliver import ipxml
from deliver.facts import FileFacts, problems
from deliver.ipxml import DocumentEntry, MetsInput, PackedFile, PremisAgent, PremisEvent
from deliver.signing import SigningKey, sign_pdf
from deliver.split import split_document
from deliver.xmlcheck import PACKAGE_SCHEMAS, SCHEMA_DIR, validate
from sohoa import __version__
from sohoa.config import Settings
from sohoa.metadata import signed_copy_name


class PackageRefused(ValueError):
    def __init__(self, file: str, reasons: list[str]) -> None:
        super().__init__(f"{file}: " + "; ".join(reasons))
        self.file = file
        self.reasons = reasons


@dataclass(frozen=True)
class BuiltPackage:
    site_id: str
    fonds: str
    file_code: str
    revision: int
    kind: str
    package_id: str
    path: Path
    sha256: str
    size: int
    pages: int
    pdf_bytes: int           # the signed copies alone


def arc_code(archive_code: str, code: str) -> str:
    """Art. 17: the archive's own code prefixed to a file's or document's code."""
    return f"{archive_code}.{code}" if archive_code else code


def package_id(kind: str, archive_code: str, file_code: str) -> str:
    return f"{kind}_hoso_{arc_code(archive_code, file_code)}"


def build(f: FileFacts, key: SigningKey, settings: Settings, out_dir: Path, *,
          sip: bool = False, now: datetime | None = None) -> BuiltPackage:
    """Build the package of one file into ``out_dir``; PackageRefused lists what is wrong."""
    reasons = problems(f)
    if reasons:
        raise PackageRefused(f"{f.fonds}/{f.file_code}", reasons)
    assert f.record is not None and f.revision is not None and f.ocr_pdf is not None
    kind = "SIP" if sip else "AIP"
    d = settings.deliver
    tz = ZoneInfo(settings.signing.timezone)
    now = (now or datetime.now(tz)).astimezone(tz)
    pid = package_id(kind, d.archive_code, f.file_code)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pkg-", dir=out_dir) as tmp:
        root = Path(tmp) / pid
        data_dir = root / "representations" / "rep1" / "data"
        data_dir.mkdir(parents=True)
        docs = _signed_documents(f, key, settings, Path(tmp), data_dir, root)
        schemas = []
        for i, name in enumerate(PACKAGE_SCHEMAS):
            dst = root / "schemas" / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(SCHEMA_DIR / name, dst)
            schemas.append(_packed(root, dst, "application/xml", now, f"schema-{i + 1}"))
        readme = root / "documentation" / "DOC_GOI.txt"
        readme.parent.mkdir(parents=True)
        readme.write_text(_readme(f, pid, kind, settings), encoding="utf-8")
        documentation = [_packed(root, readme, "text/plain", now, "doc-1")]
        ead_path = root / "metadata" / "descriptive" / "EAD.xml"
        _write_checked(ead_path, ipxml.ead(f.record, arc_code(d.archive_code, f.file_code), docs,
                                           package_id=pid, repository=d.receiver_name), "ead")
        premis_files: list[PackedFile] = []
        if not sip:
            pkg_premis, rep_premis = _premis(f, docs, settings, pid, now)
            p1 = root / "metadata" / "preservation" / "PREMIS.xml"
            p2 = root / "representations" / "rep1" / "metadata" / "preservation" / \
                "PREMIS_rep1.xml"
            _write_checked(p1, pkg_premis, "premis")
            _write_checked(p2, rep_premis, "premis")
            premis_files = [_packed(root, p1, "text/xml", now, "md-premis"),
                            _packed(root, p2, "text/xml", now, "md-premis-rep1")]
        mets = ipxml.mets(MetsInput(
            package_id=pid, label=f.record.tieu_de or f.file_code, kind=kind, created=now,
            ead=_packed(root, ead_path, "text/xml", now, "md-ead"), premis=premis_files,
            data=[d.file for d in docs], schemas=schemas, documentation=documentation,
            agency=d.agency_name or settings.signing.body_name))
        _write_checked(root / "METS.xml", mets, "mets")
        zip_path = out_dir / f"{pid}.zip"
        _zip(root, zip_path)
    digest, size = _sha256_size(zip_path)
    return BuiltPackage(f.site_id, f.fonds, f.file_code, f.revision, kind, pid, zip_path,
                        digest, size, len(f.pages), sum(x.file.size for x in docs))


def _signed_documents(f: FileFacts, key: SigningKey, settings: Settings, work: Path,
                      data_dir: Path, root: Path) -> list[DocumentEntry]:
    assert f.ocr_pdf is not None
    d = settings.deliver
    docs = []
    for doc in f.documents:
        number = f.number_of(doc)
        pages = [i for i, (name, _) in enumerate(f.ocr_pages) if name == doc]
        unsigned = work / "unsigned" / f"{number:03d}.pdf"
        split_document(f.ocr_pdf, pages, unsigned)
        name = signed_copy_name(f.file_code, number)
        copy = sign_pdf(unsigned, data_dir / name, key, settings.signing)
        rec = f.doc_records[doc]
        assert rec is not None
        docs.append(DocumentEntry(
            name=doc, number=number,
            file=_packed(root, copy.path, "application/pdf", copy.signing_time,
                         f"file-{number:03d}"),
            record=rec, arc_doc_code=arc_code(d.archive_code, f"{f.file_code}.{number:03d}"),
            source_sha256=[p.sha256 for p in f.pages_of(doc)], signed_at=copy.signing_time))
    return docs


def _premis(f: FileFacts, docs: list[DocumentEntry], settings: Settings, pid: str,
            now: datetime) -> tuple[bytes, bytes]:
    site = f.site_name or f.site_id
    agents = [
        PremisAgent("agent-site", f"Điểm số hóa {site}", "organization",
                    f"Mã điểm: {f.site_id}; nhà thầu: {f.contractor or 'chưa rõ'}; "
                    f"đơn vị: {f.unit or 'chưa rõ'}"),
        PremisAgent("agent-watch", f"sohoa watch {f.agent_version or ''}".strip(), "software",
                    f"Tác nhân quét tại điểm {f.site_id}"),
        PremisAgent("agent-sohoa", f"sohoa {__version__}", "software",
                    "Kiểm tra chất lượng, OCR (Tesseract/ocrmypdf), nghiệm thu, đóng gói"),
        PremisAgent("agent-signer", settings.signing.body_name or "Cơ quan số hóa",
                    "organization", "Ký số các bản số hóa (PAdES)"),
    ]
    objects = [ipxml.premis_entity_object("rep1", pid, "representation")]
    events: list[PremisEvent] = []
    for d in docs:
        objects.append(ipxml.premis_file_object(d.file.path, d.file, d.name,
                                                "PDF/A-2b", ipxml.PDFA2B_PRONOM))
        for p in f.pages_of(d.name):
            tag = f"{d.number:03d}-{p.page_index}"
            events.append(PremisEvent(
                f"ev-capture-{tag}", "capture", p.scanned_at,
                f"Quét tại điểm {f.site_id}: {d.name} trang {p.page_index} "
                f"(SHA-256 nội dung {p.sha256})", "success", ["agent-site", "agent-watch"],
                [d.file.path]))
            if p.checked_at is not None:
                events.append(PremisEvent(
                    f"ev-check-{tag}", "validation", p.checked_at,
                    f"Kiểm tra chất lượng trang {p.page_index} của {d.name}: đạt", "success",
                    ["agent-sohoa"], [d.file.path]))
        events.append(PremisEvent(
            f"ev-sign-{d.number:03d}", "digital signature generation", d.signed_at,
            f"Ký số PAdES bản số hóa {Path(d.file.path).name}", "success", ["agent-signer"],
            [d.file.path]))
    every = [d.file.path for d in docs]
    if f.ocr_at is not None:
        events.append(PremisEvent("ev-ocr", "creation", f.ocr_at,
                                  "Nhận dạng ký tự (OCR) tạo PDF/A-2b hai lớp (ảnh + chữ)",
                                  "success", ["agent-sohoa"], every))
    if f.verdict_at is not None:
        events.append(PremisEvent("ev-accept", "validation", f.verdict_at,
                                  f"Nghiệm thu hồ sơ (lần {f.revision}): đạt", "success",
                                  ["agent-sohoa"], every))
    rep = ipxml.premis(objects, events, agents, "../../../../schemas/premis.xsd")
    title = f.record.tieu_de if f.record else pid
    assert title is not None  # a record without its title is refused before (facts.py)
    pkg_objects = [ipxml.premis_entity_object(pid, title, "intellectualEntity")]
    pkg_events = [PremisEvent("ev-package", "information package creation", now,
                              f"Đóng gói AIP_hoso {pid} (E-ARK CSIP 2.0.4)", "success",
                              ["agent-sohoa"], [pid])]
    pkg = ipxml.premis(pkg_objects, pkg_events, agents[2:3], "../../schemas/premis.xsd")
    return pkg, rep


def _readme(f: FileFacts, pid: str, kind: str, settings: Settings) -> str:
    what = "gói lưu trữ (AIP_hoso)" if kind == "AIP" else "gói nộp lưu (SIP_hoso)"
    return (f"{pid}: {what} của hồ sơ {f.file_code} (phông {f.fonds or '—'}), "
            f"số hóa tại điểm {f.site_id}.\n"
            "Cấu trúc theo E-ARK CSIP 2.0.4 (TT 05/2025/TT-BNV, Điều 17): METS.xml liệt kê mọi "
            "tệp kèm SHA-256; metadata/descriptive/EAD.xml là siêu dữ liệu mô tả; "
            + ("metadata/preservation/PREMIS.xml và representations/rep1/metadata/preservation/"
               "PREMIS_rep1.xml là siêu dữ liệu bảo quản; " if kind == "AIP" else "")
            + "representations/rep1/data/ là các bản số hóa PDF/A-2b đã ký số "
            f"({settings.signing.body_name}); schemas/ là các lược đồ XML.\n"
            "Kiểm tra: sohoa handover verify THƯ_MỤC_BÀN_GIAO.\n")


def _packed(root: Path, path: Path, mimetype: str, created: datetime, xml_id: str) -> PackedFile:
    digest, size = _sha256_size(path)
    return PackedFile(path.relative_to(root).as_posix(), size, digest, mimetype, created, xml_id)


def _write_checked(path: Path, data: bytes, kind: str) -> None:
    errors = validate(data, kind)
    if errors:  # our own output breaking its schema is a bug: never ship it
        raise RuntimeError(f"{path.name} does not validate: {errors[:5]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _zip(root: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                arc = f"{root.name}/{p.relative_to(root).as_posix()}"
                # PDFs are compressed already; XML shrinks well.
                method = zipfile.ZIP_STORED if p.suffix == ".pdf" else zipfile.ZIP_DEFLATED
                zf.write(p, arc, compress_type=method)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, dst)


def _sha256_size(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size
