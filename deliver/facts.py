"""What a package says about a file, read from the progress store (reader role): the file, its
current pages and their checks, its OCR output, its verdict, its site; and why a file cannot
be packaged yet (:func:`problems`, in Vietnamese)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg

from sohoa.hashing import file_sha256
from sohoa.metadata import DocumentRecord, FileRecord
from sohoa.naming import natural_key


@dataclass(frozen=True)
class PageFact:
    document: str
    page_index: int
    sha256: str
    document_sha256: str
    path: str
    media_type: str
    first_scanned_at: datetime
    scanned_at: datetime
    check_passed: bool | None
    checked_at: datetime | None


@dataclass
class FileFacts:
    site_id: str
    fonds: str
    file_code: str
    state: str
    classification: str
    revision: int | None              # the accepted (verdict) revision
    verdict_at: datetime | None
    record: FileRecord | None
    documents: list[str]              # in the file's order
    doc_records: dict[str, DocumentRecord | None]
    pages: list[PageFact]
    ocr_pdf: Path | None
    ocr_sha256: str | None
    ocr_pages: list[tuple[str, int]]  # the OCR PDF's pages, in order
    ocr_at: datetime | None
    site_name: str = ""
    unit: str = ""
    contractor: str = ""
    agent_version: str = ""
    bad_record: list[str] = field(default_factory=list)

    def pages_of(self, document: str) -> list[PageFact]:
        return [p for p in self.pages if p.document == document]

    def number_of(self, document: str) -> int:
        """The document's number in the file (Art. 8's name): its số thứ tự, else its place."""
        rec = self.doc_records.get(document)
        if rec is not None and rec.so_thu_tu is not None:
            return rec.so_thu_tu
        return self.documents.index(document) + 1


def accepted_files(conn: psycopg.Connection, *, site: str | None = None,
                   fonds: str | None = None, unit: str | None = None,
                   file_code: str | None = None) -> list[tuple[str, str, str]]:
    """(site, fonds, file code) of the files a selection names, accepted or not: a file
    named but not accepted is refused with its reason, not silently left out."""
    where, args = ["true"], []
    for col, val in (("f.site_id", site), ("f.fonds", fonds), ("s.unit", unit),
                     ("f.file_code", file_code)):
        if val is not None:
            where.append(f"{col} = %s")
            args.append(val)
    if file_code is None:
        where.append("f.state = 'accepted'")
    return [tuple(r) for r in conn.execute(
        "SELECT f.site_id, f.fonds, f.file_code FROM files f "
        "LEFT JOIN sites s ON s.site_id = f.site_id WHERE " + " AND ".join(where) +
        " ORDER BY f.site_id, f.fonds, f.file_code", args)]


def load(conn: psycopg.Connection, site: str, fonds: str, file_code: str) -> FileFacts | None:
    row = conn.execute(
        "SELECT f.state, COALESCE(f.classification, 'public'), f.verdict_revision, f.record, "
        "COALESCE(f.manifest_documents, '[]'::jsonb), v.occurred_at, s.name, s.unit, "
        "s.contractor, h.agent_version "
        "FROM files f LEFT JOIN verdicts v ON v.event_id = f.verdict_event_id "
        "LEFT JOIN sites s ON s.site_id = f.site_id "
        "LEFT JOIN site_heartbeats h ON h.site_id = f.site_id "
        "WHERE f.site_id = %s AND f.fonds = %s AND f.file_code = %s",
        (site, fonds, file_code)).fetchone()
    if row is None:
        return None
    state, classification, revision, record, manifest_docs, verdict_at, name, unit, \
        contractor, agent_version = row
    bad: list[str] = []
    file_record = _record(FileRecord, record, "hồ sơ", bad)
    doc_records = {d["name"]: _record(DocumentRecord, d.get("record"), f"văn bản {d['name']}",
                                      bad) for d in manifest_docs}
    pages = [PageFact(*r) for r in conn.execute(
        "SELECT p.document, p.page_index, p.sha256, p.document_sha256, p.path, p.media_type, "
        "p.first_scanned_at, p.scanned_at, p.check_passed, "
        "(SELECT max(c.checked_at) FROM page_checks c WHERE c.site_id = p.site_id "
        " AND c.fonds = p.fonds AND c.file_code = p.file_code AND c.document = p.document "
        " AND c.page_index = p.page_index AND c.revision = p.revision) "
        "FROM pages p WHERE p.site_id = %s AND p.fonds = %s AND p.file_code = %s "
        "AND NOT p.removed", (site, fonds, file_code))]
    listed = [d["name"] for d in manifest_docs]
    present = {p.document for p in pages}
    order = [n for n in listed if n in present] + sorted(present - set(listed), key=natural_key)
    rank = {d: i for i, d in enumerate(order)}
    pages.sort(key=lambda p: (rank[p.document], p.page_index))
    ocr = conn.execute(
        "SELECT output_uri, output_sha256, pages, occurred_at FROM ocr_results "
        "WHERE site_id = %s AND fonds = %s AND file_code = %s AND revision = %s "
        "AND status = 'completed'", (site, fonds, file_code, revision)).fetchone()
    ocr_pdf = ocr_sha = ocr_at = None
    ocr_pages: list[tuple[str, int]] = []
    if ocr is not None:
        ocr_pdf, ocr_sha, ocr_at = _file_uri(ocr[0]), ocr[1], ocr[3]
        ocr_pages = [(p["document"], int(p.get("page_index", 1))) for p in ocr[2] or []]
    return FileFacts(site, fonds, file_code, state, classification, revision, verdict_at,
                     file_record, order, doc_records, pages, ocr_pdf, ocr_sha, ocr_pages, ocr_at,
                     name or "", unit or "", contractor or "", agent_version or "", bad)


def _record(model: Any, raw: Any, what: str, bad: list[str]) -> Any:
    if raw is None:
        return None
    try:
        return model.model_validate(raw)
    except ValueError as exc:
        bad.append(f"{what}: siêu dữ liệu đã lưu không hợp lệ ({exc})")
        return None


def _file_uri(uri: str | None) -> Path | None:
    if not uri:
        return None
    parts = urlsplit(uri)
    return Path(unquote(parts.path)) if parts.scheme == "file" else None


def problems(f: FileFacts) -> list[str]:
    """Everything that stops the file from being packaged, each a Vietnamese sentence."""
    out = list(f.bad_record)
    if f.state != "accepted":
        out.append(f"hồ sơ chưa được nghiệm thu (trạng thái: {f.state})")
    if f.classification in ("confidential", "secret", "top_secret"):
        out.append("hồ sơ mật: siêu dữ liệu ở lại điểm số hóa, không đóng gói tại trung tâm")
    for p in f.pages:
        if p.check_passed is not True:
            why = "chưa kiểm tra" if p.check_passed is None else "không đạt kiểm tra"
            out.append(f"trang chưa được chấp nhận: {p.document} trang {p.page_index} ({why})")
    if not f.pages:
        out.append("hồ sơ không có trang nào")
    if f.record is None:
        out.append("thiếu siêu dữ liệu hồ sơ (record trong hoso.json hoặc mục lục hồ sơ)")
    else:
        out += [f"thiếu trường bắt buộc của hồ sơ: {m}" for m in f.record.missing()]
        if f.record.tong_so_van_ban not in (None, len(f.documents)):
            out.append(f"Tổng số văn bản trong hồ sơ là {f.record.tong_so_van_ban} nhưng hồ sơ "
                       f"có {len(f.documents)} văn bản")
        if f.record.so_luong_trang not in (None, len(f.pages)):
            out.append(f"Số lượng trang là {f.record.so_luong_trang} nhưng đã số hóa "
                       f"{len(f.pages)} trang")
    numbers: dict[int, str] = {}
    for d in f.documents:
        rec = f.doc_records.get(d)
        if rec is None:
            out.append(f"văn bản '{d}': thiếu siêu dữ liệu (danh mục văn bản)")
            continue
        out += [f"văn bản '{d}': thiếu trường bắt buộc: {m}" for m in rec.missing()]
        if rec.so_trang not in (None, len(f.pages_of(d))):
            out.append(f"văn bản '{d}': Số lượng trang của văn bản là {rec.so_trang} nhưng đã số "
                       f"hóa {len(f.pages_of(d))} trang")
        n = f.number_of(d)
        if n in numbers:
            out.append(f"văn bản '{d}' và '{numbers[n]}' cùng số thứ tự {n}")
        numbers[n] = d
    if f.ocr_pdf is None:
        out.append("chưa có bản PDF/A (OCR) của lần nghiệm thu này")
    elif not f.ocr_pdf.is_file():
        out.append(f"không thấy bản PDF/A {f.ocr_pdf}")
    elif file_sha256(f.ocr_pdf) != f.ocr_sha256:
        out.append(f"bản PDF/A {f.ocr_pdf.name} đã bị thay đổi sau OCR (SHA-256 khác)")
    elif [(p.document, p.page_index) for p in f.pages] != f.ocr_pages:
        out.append("các trang của bản PDF/A không khớp các trang đã nghiệm thu")
    return out
