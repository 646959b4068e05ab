"""`sohoa status`: progress per site and per file, as a table or JSON."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from consumers.deliverables import SiteDeliverable, by_site
from consumers.progress import SiteProgress, load_sites
from consumers.vi import num, pct
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


def _n(value: int | None) -> str:
    """An integer as officers read it (vi-VN: 1.234)."""
    return "—" if value is None else num(value)


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


@dataclass(frozen=True)
class Column:
    header: str
    rank: int               # a narrow terminal keeps the lowest ranks
    right: bool = False


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


def _site_cells(s: SiteProgress, d: SiteDeliverable, now: datetime) -> list[str]:
    if s.target_pages is None:
        verdict = "[yellow]chưa có kế hoạch[/]"
    elif not s.remaining_pages:
        verdict = "[green]đã hoàn thành[/]"
    elif s.at_risk:
        verdict = "[red]chậm tiến độ[/]"
    else:
        verdict = "[green]đúng tiến độ[/]"
    share = s.pages_scanned / s.target_pages if s.target_pages else None
    return [s.name or s.site_id, s.site_id if s.name else "", s.unit or "—",
            s.contractor or "—", _n(s.pages_scanned), _n(s.target_pages),
            pct(share) if share is not None else "—", _n(s.pages_accepted),
            f"{_n(s.files_accepted)}/{_n(s.files_total)}", _d(s.deadline),
            _d(s.forecast_completion), verdict, _ago(s.last_page_at, now),
            _ago(s.last_heartbeat_at, now),
            _n(s.outbox_depth) if s.outbox_depth is not None else "—", _uploads(s), d.short()]


SITE_COLUMNS = (
    Column("Điểm", 0), Column("Mã điểm", 9), Column("Đơn vị", 6), Column("Nhà thầu", 8),
    Column("Đã quét", 1, True), Column("Kế hoạch", 5, True), Column("Tỷ lệ", 2, True),
    Column("Nghiệm thu", 7, True), Column("Hồ sơ", 10, True), Column("Hạn", 3),
    Column("Dự kiến xong", 4), Column("Đánh giá", 0), Column("Trang gần nhất", 11),
    Column("Máy trạm", 12), Column("Chờ gửi", 14, True), Column("Chờ tải lên", 15),
    Column("Gói/giao/đạt", 13, True))

FILE_COLUMNS = (
    Column("Điểm", 6), Column("Phông", 3), Column("Mã hồ sơ", 0), Column("Trạng thái", 0),
    Column("Văn bản", 6), Column("Trang", 1, True), Column("Đã kiểm tra", 7, True),
    Column("Dự kiến", 8, True), Column("QC lỗi", 2, True), Column("Đang OCR", 5, True),
    Column("Kết luận", 9), Column("Bàn giao", 4))


def _file_cells(f: dict[str, Any]) -> list[str]:
    return [f["site_id"], f["fonds"] or "—", f["file_code"],
            STATE_VI.get(f["state"], f["state"]), _n(f["documents"]), _n(f["pages"]),
            _n(f["checked_pages"]), _n(f["expected_pages"]) if f["expected_pages"] else "—",
            _n(f["qc_failed_pages"]),
            (f"{_n(f['ocr_pages_done'])}/{_n(f['ocr_pages_total'])} trang"
             if f.get("ocr_pages_total") else "—"),
            STATE_VI.get(f["verdict"] or "", f["verdict"] or "—"),
            DELIVERABLE_VI.get(f["deliverable"] or "", "—")]


def fit_columns(columns: tuple[Column, ...], rows: list[list[str]], width: int) -> list[int]:
    """Indices of the columns to show, in their order: columns by rank while they fit
    ``width`` whole (a rich table line is 1 + the sum of each column's width + 3); none if
    even the rank-0 columns do not."""
    from rich.cells import cell_len
    from rich.text import Text

    def plain(cell: str) -> int:
        return cell_len(Text.from_markup(cell).plain)

    widths = [max([cell_len(c.header)] + [plain(r[i]) for r in rows])
              for i, c in enumerate(columns)]
    chosen: list[int] = []
    used = 1
    for i in sorted(range(len(columns)), key=lambda i: columns[i].rank):
        if used + widths[i] + 3 > width:
            if columns[i].rank == 0:
                return []
            break
        chosen.append(i)
        used += widths[i] + 3
    return sorted(chosen)


def _table(title: str, columns: tuple[Column, ...], rows: list[list[str]], console) -> None:
    from rich.table import Table

    shown = fit_columns(columns, rows, console.width)
    if not shown:
        _vertical(title, columns, rows, console)
        return
    t = Table(title=title)
    for i in shown:
        t.add_column(columns[i].header, justify="right" if columns[i].right else "left",
                     no_wrap=True)
    for r in rows:
        t.add_row(*(r[i] for i in shown))
    console.print(t)
    hidden = [c.header for i, c in enumerate(columns) if i not in shown
              and any(r[i] for r in rows)]
    if hidden:
        console.print(f"[dim](màn hình hẹp: ẩn cột {', '.join(hidden)}; xem đủ bằng --json "
                      "hoặc cửa sổ rộng hơn)[/]", soft_wrap=False, overflow="fold")


def _vertical(title: str, columns: tuple[Column, ...], rows: list[list[str]],
              console) -> None:
    """One block per row, a line per column: a terminal too narrow for any table."""
    console.print(f"[bold]{title}[/]", overflow="fold")
    for r in rows:
        console.print("")
        for c, cell in zip(columns, r, strict=True):
            if cell:
                console.print(f"{c.header}: {cell}", overflow="fold")


def render(data: dict[str, Any], sites: list[SiteProgress], console) -> None:
    now = datetime.now(UTC)
    delivered = {d["site_id"]: SiteDeliverable(**d["deliverable"]) for d in data["sites"]}
    rows = [_site_cells(s, delivered.get(s.site_id, SiteDeliverable()), now) for s in sites]
    _table("Tiến độ số hóa theo điểm (progress per site)", SITE_COLUMNS, rows, console)
    if data["files"]:
        _table("Hồ sơ (files)", FILE_COLUMNS, [_file_cells(f) for f in data["files"]],
               console)


STATE_VI = {
    "scanning": "đang quét", "closed": "đã đóng", "assembled": "đã ghép",
    "checked": "đã kiểm tra", "ocr_done": "đã OCR", "accepted": "đạt (nghiệm thu)",
    "needs_rescan": "cần quét lại", "rejected": "không đạt", "ocr_failed": "OCR lỗi",
}
FILE_STATES = tuple(STATE_VI)   # every state consumers.apply can give a file
DELIVERABLE_VI = {"packaged": "đã đóng gói", "handed_over": "đã bàn giao",
                  "verified": "đã kiểm tra, đạt", "verify_failed": "kiểm tra không đạt"}
