"""`sohoa status`: progress per site and per file, as a table or JSON."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from consumers.deliverables import SiteDeliverable, by_site
from consumers.progress import SiteProgress, load_sites
from sohoa.config import CampaignConfig

# OCR progress (migration 010) while the OCR of the current assembly runs: it has progress
# and no result yet.
_OCR_RUNNING = ("f.ocr_progress_revision = f.assembled_revision "
                "AND (f.ocr_revision IS NULL OR f.ocr_revision < f.assembled_revision)")
_FILES = f"""
SELECT f.site_id, f.fonds, f.file_code, f.state, f.documents, f.pages, f.expected_pages,
       f.assembled_pages, f.checked_pages, f.qc_failed_pages, f.verdict, f.pages_accepted,
       f.first_seen_at, f.last_page_at, f.closed_at, f.verdict_at, f.title, f.classification,
       CASE WHEN {_OCR_RUNNING} THEN f.ocr_pages_done END AS ocr_pages_done,
       CASE WHEN {_OCR_RUNNING} THEN f.ocr_pages_total END AS ocr_pages_total,
       d.step AS deliverable, d.package
FROM files f LEFT JOIN v_file_deliverable d USING (site_id, fonds, file_code)
WHERE (%(site)s::text IS NULL OR f.site_id = %(site)s::text)
  AND (%(state)s::text IS NULL OR f.state = %(state)s::text)
ORDER BY f.site_id, f.fonds, f.file_code
"""


def site_json(s: SiteProgress, d: SiteDeliverable | None = None) -> dict[str, Any]:
    out = {"site_id": s.site_id, "pages": s.pages_scanned, "documents": s.documents_scanned,
           "files": s.files_total}
    out.update(s.to_json())
    out["deliverable"] = vars(d or SiteDeliverable())
    return out


def collect(conn: psycopg.Connection, campaign: CampaignConfig, *, site: str | None = None,
            state: str | None = None, with_files: bool = True) -> dict[str, Any]:
    sites = load_sites(conn, campaign, site=site)
    deliverables = by_site(conn, site)
    files: list[dict[str, Any]] = []
    if with_files:
        rows = conn.cursor(row_factory=dict_row).execute(
            _FILES, {"site": site, "state": state}).fetchall()
        for r in rows:
            for k, v in r.items():
                if isinstance(v, datetime):
                    r[k] = v.astimezone(UTC).isoformat()
            files.append(r)
    return {"generated_at": datetime.now(UTC).isoformat(),
            "sites": [site_json(s, deliverables.get(s.site_id)) for s in sites],
            "files": files}


def _n(value: int) -> str:
    """An integer as officers read it (vi-VN: 1.234)."""
    return f"{value:,}".replace(",", ".")


def _d(value) -> str:
    return value.strftime("%d/%m/%Y") if value else "—"


def _ago(ts: datetime | None, now: datetime) -> str:
    if ts is None:
        return "—"
    secs = int((now - ts).total_seconds())
    if secs < 60:
        return f"{max(secs, 0)} giây trước"
    if secs < 3600:
        return f"{secs // 60} phút trước"
    if secs < 86400:
        return f"{secs // 3600} giờ trước"
    return f"{secs // 86400} ngày trước"


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f}".replace(",", " ").replace(".", ",").replace(" ", ".") + " MB"


def _uploads(s: SiteProgress) -> str:
    """Pages the site has not stored in the object store yet: how many, how big, how old."""
    if s.last_heartbeat_at is None or s.upload_pending_pages is None:
        return "—"
    if not s.upload_pending_pages:
        text = "0"
    else:
        age = int(s.oldest_unuploaded_age_s or 0)
        text = (f"{_n(s.upload_pending_pages)} trang, {_mb(s.upload_pending_bytes or 0)}, "
                f"cũ nhất {age // 60} phút")
    if s.upload_error:
        text += " [red](lỗi tải lên)[/]"
    return text


def render(data: dict[str, Any], sites: list[SiteProgress], console) -> None:
    from rich.table import Table

    now = datetime.now(UTC)
    t = Table(title="Tiến độ số hóa theo điểm (progress per site)", show_lines=False)
    for col, just in (("Điểm", "left"), ("Đơn vị", "left"), ("Nhà thầu", "left"),
                      ("Trang đã quét", "right"), ("Kế hoạch", "right"), ("Tỷ lệ", "right"),
                      ("Nghiệm thu", "right"), ("Hồ sơ", "right"), ("Hạn", "left"),
                      ("Dự kiến xong", "left"), ("Đánh giá", "left"), ("Trang gần nhất", "left"),
                      ("Máy trạm", "left"), ("Chờ gửi", "right"), ("Chờ tải lên", "left"),
                      ("Gói/giao/đạt", "right")):
        t.add_column(col, justify=just)
    delivered = {d["site_id"]: SiteDeliverable(**d["deliverable"]) for d in data["sites"]}
    for s in sites:
        pct = (f"{100 * s.pages_scanned / s.target_pages:.1f}%".replace(".", ",")
               if s.target_pages else "—")
        if s.target_pages is None:
            verdict = "[yellow]chưa có kế hoạch[/]"
        elif s.at_risk:
            verdict = "[red]chậm tiến độ[/]"
        else:
            verdict = "[green]đúng tiến độ[/]"
        t.add_row(s.site_id, s.unit or "—", s.contractor or "—", _n(s.pages_scanned),
                  _n(s.target_pages) if s.target_pages is not None else "—", pct,
                  _n(s.pages_accepted), f"{_n(s.files_accepted)}/{_n(s.files_total)}",
                  _d(s.deadline), _d(s.forecast_completion), verdict,
                  _ago(s.last_page_at, now), _ago(s.last_heartbeat_at, now),
                  _n(s.outbox_depth) if s.outbox_depth is not None else "—", _uploads(s),
                  delivered.get(s.site_id, SiteDeliverable()).short())
    console.print(t)
    files = data["files"]
    if files:
        ft = Table(title="Hồ sơ (files)")
        for col in ("Điểm", "Phông", "Mã hồ sơ", "Trạng thái", "Văn bản", "Trang",
                    "Đã kiểm tra", "Dự kiến", "QC lỗi", "Đang OCR", "Kết luận", "Bàn giao"):
            ft.add_column(col)
        for f in files:
            ocr = (f"{_n(f['ocr_pages_done'])}/{_n(f['ocr_pages_total'])} trang"
                   if f.get("ocr_pages_total") else "—")
            ft.add_row(f["site_id"], f["fonds"] or "—", f["file_code"],
                       STATE_VI.get(f["state"], f["state"]), _n(f["documents"]),
                       _n(f["pages"]), _n(f["checked_pages"]),
                       _n(f["expected_pages"]) if f["expected_pages"] else "—",
                       _n(f["qc_failed_pages"]), ocr, f["verdict"] or "—",
                       DELIVERABLE_VI.get(f["deliverable"] or "", "—"))
        console.print(ft)


STATE_VI = {
    "scanning": "đang quét", "closed": "đã đóng", "assembled": "đã ghép",
    "checked": "đã kiểm tra", "ocr_done": "đã OCR", "accepted": "đạt (nghiệm thu)",
    "needs_rescan": "cần quét lại", "rejected": "không đạt", "ocr_failed": "OCR lỗi",
}
FILE_STATES = tuple(STATE_VI)   # every state consumers.apply can give a file
DELIVERABLE_VI = {"packaged": "đã đóng gói", "handed_over": "đã bàn giao",
                  "verified": "đã kiểm tra, đạt", "verify_failed": "kiểm tra không đạt"}
