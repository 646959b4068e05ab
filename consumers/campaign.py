"""Campaign plans: read PLAN.xlsx / PLAN.csv, validate every cell, upsert the sites."""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from consumers.db import PLAN_LOCK, scalar
from consumers.tabular import TabularError, read_rows
from sohoa.config import CampaignConfig
from sohoa.events import SITE_ID_RE

REQUIRED = ("site_id", "unit", "contractor", "target_pages", "target_files", "deadline")
OPTIONAL = ("name", "timezone", "work_start", "work_end")
# Vietnamese headers accepted too, so a plan typed by the province's staff imports as is.
ALIASES = {
    "ma_diem": "site_id", "mã điểm": "site_id", "điểm": "site_id",
    "don_vi": "unit", "đơn vị": "unit",
    "nha_thau": "contractor", "nhà thầu": "contractor",
    "so_trang": "target_pages", "số trang": "target_pages", "kế hoạch trang": "target_pages",
    "so_ho_so": "target_files", "số hồ sơ": "target_files", "kế hoạch hồ sơ": "target_files",
    "han": "deadline", "hạn": "deadline", "hạn hoàn thành": "deadline",
    "ten": "name", "tên": "name", "tên điểm": "name",
    "múi giờ": "timezone", "giờ bắt đầu": "work_start", "giờ kết thúc": "work_end",
}


class PlanError(ValueError):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class PlanRow:
    row: int
    site_id: str
    unit: str
    contractor: str | None
    target_pages: int
    target_files: int
    deadline: date
    name: str | None
    timezone: str
    work_start: time
    work_end: time


def _norm_header(h: Any) -> str:
    key = str(h or "").strip().lower().lstrip("\ufeff")
    return ALIASES.get(key, key.replace(" ", "_"))


def _raw_rows(path: Path) -> tuple[list[str], list[tuple[int, list[Any]]]]:
    """Header and (row number as the user sees it, cells) of a CSV or XLSX plan."""
    try:
        header, rows = read_rows(path)
    except TabularError as exc:
        raise PlanError([str(exc)]) from None
    return [_norm_header(h) for h in header], rows


def parse_date(v: Any) -> date:
    if isinstance(v, datetime):
        return v.date()
    if isinstance(v, date):
        return v
    s = str(v).strip()
    for fmt in ("%d/%m/%Y", "%Y-%m-%d", "%d-%m-%Y", "%d.%m.%Y"):
        try:
            return datetime.strptime(s, fmt).date()
        except ValueError:
            continue
    raise ValueError(f"ngày không hợp lệ {s!r} (dd/mm/yyyy)")


def _parse_time(v: Any) -> time:
    if isinstance(v, time):
        return v
    if isinstance(v, datetime):
        return v.time()
    s = str(v).strip()
    m = re.fullmatch(r"(\d{1,2})[:h](\d{2})(?::\d{2})?", s)
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ValueError(f"giờ không hợp lệ {s!r} (HH:MM)")
    return time(int(m.group(1)), int(m.group(2)))


def _parse_count(v: Any) -> int:
    if isinstance(v, bool):
        raise ValueError(f"không phải số nguyên: {v!r}")
    if isinstance(v, int):
        n = v
    elif isinstance(v, float) and v.is_integer():
        n = int(v)
    else:
        s = str(v).strip().replace(".", "").replace(",", "").replace(" ", "")
        if not s.isdigit():
            raise ValueError(f"không phải số nguyên không âm: {v!r}")
        n = int(s)
    if n < 0:
        raise ValueError(f"số âm: {n}")
    return n


def read_plan(path: Path, defaults: CampaignConfig) -> list[PlanRow]:
    """Every row valid, or :class:`PlanError` listing every bad cell as 'dòng N, cột X: …'."""
    header, rows = _raw_rows(path)
    errors: list[str] = []
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise PlanError([f"thiếu cột (missing column): {', '.join(missing)}; có: "
                         f"{', '.join(h for h in header if h)}"])
    idx = {h: i for i, h in enumerate(header) if h}
    out: list[PlanRow] = []
    seen: dict[str, int] = {}
    for rowno, cells in rows:
        def cell(col: str, cells=cells) -> Any:
            i = idx.get(col)
            if i is None or i >= len(cells):
                return None
            v = cells[i]
            return v.strip() if isinstance(v, str) else v

        row_errors: list[str] = []

        def get(col: str, parse, required: bool = True, default=None,
                rowno=rowno, row_errors=row_errors, cell=cell):
            v = cell(col)
            if v is None or v == "":
                if required:
                    row_errors.append(f"dòng {rowno}, cột {col}: bắt buộc (required)")
                return default
            try:
                return parse(v)
            except (ValueError, TypeError) as exc:
                row_errors.append(f"dòng {rowno}, cột {col}: {exc}")
                return default

        site_id = get("site_id", str)
        if site_id is not None and not re.match(SITE_ID_RE, site_id):
            row_errors.append(f"dòng {rowno}, cột site_id: {site_id!r} không hợp lệ "
                              "(chữ thường a-z, số, '-' hoặc '_')")
        elif site_id in seen:
            row_errors.append(f"dòng {rowno}, cột site_id: {site_id!r} trùng với dòng "
                              f"{seen[site_id]}")
        unit = get("unit", str)
        contractor = get("contractor", str, required=False)
        target_pages = get("target_pages", _parse_count)
        target_files = get("target_files", _parse_count)
        deadline = get("deadline", parse_date)
        name = get("name", str, required=False)
        tz = get("timezone", str, required=False, default=defaults.timezone)
        try:
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            row_errors.append(f"dòng {rowno}, cột timezone: múi giờ không tồn tại {tz!r}")
        ws = get("work_start", _parse_time, required=False, default=defaults.work_start)
        we = get("work_end", _parse_time, required=False, default=defaults.work_end)
        if ws is not None and we is not None and ws >= we:
            row_errors.append(f"dòng {rowno}, cột work_end: {we:%H:%M} không sau "
                              f"work_start {ws:%H:%M}")
        if row_errors:
            errors.extend(row_errors)
            continue
        seen[site_id] = rowno
        out.append(PlanRow(rowno, site_id, unit, contractor or None, target_pages,
                           target_files, deadline, name, tz, ws, we))
    if errors:
        raise PlanError(errors)
    if not out:
        raise PlanError([f"{path.name}: không có dòng dữ liệu nào (no data rows)"])
    return out


_UPSERT_SITE = """
INSERT INTO sites (site_id, name, unit, contractor, campaign_id, target_pages, target_files,
                   deadline, timezone, work_start, work_end, workdays, auto_created, updated_at)
VALUES (%(site_id)s, %(name)s, %(unit)s, %(contractor)s, %(campaign_id)s, %(target_pages)s,
        %(target_files)s, %(deadline)s, %(timezone)s, %(work_start)s, %(work_end)s,
        %(workdays)s, false, now())
ON CONFLICT (site_id) DO UPDATE SET
    name = excluded.name, unit = excluded.unit, contractor = excluded.contractor,
    campaign_id = excluded.campaign_id, target_pages = excluded.target_pages,
    target_files = excluded.target_files, deadline = excluded.deadline,
    timezone = excluded.timezone, work_start = excluded.work_start, work_end = excluded.work_end,
    workdays = excluded.workdays, auto_created = false, updated_at = now()
"""


def import_plan(conn: psycopg.Connection, rows: list[PlanRow], *, name: str,
                source: str, start_date: date | None = None,
                workdays: list[int] | None = None) -> int:
    """Upsert the campaign and its sites in one transaction; pages already counted stay."""
    workdays = workdays if workdays is not None else [0, 1, 2, 3, 4]
    with conn.transaction():
        # Exclusive against every batch (they hold it shared): the batches in flight commit
        # first, so the re-dating below sees their pages, and later ones date by this plan.
        # Taken before any site row is written, so no batch waits for this import's rows
        # while it waits for that batch.
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", PLAN_LOCK)
        campaign_id = scalar(
            conn,
            "INSERT INTO campaigns (name, start_date, source) VALUES (%s, %s, %s) "
            "ON CONFLICT (name) DO UPDATE SET start_date = COALESCE(excluded.start_date, "
            "campaigns.start_date), source = excluded.source, imported_at = now() "
            "RETURNING campaign_id", (name, start_date, source))
        old_tz: dict[str, str] = dict(conn.execute(
            "SELECT site_id, timezone FROM sites WHERE site_id = ANY(%s)",
            ([r.site_id for r in rows],)).fetchall())
        for r in rows:
            conn.execute(_UPSERT_SITE, {
                "site_id": r.site_id, "name": r.name, "unit": r.unit,
                "contractor": r.contractor, "campaign_id": campaign_id,
                "target_pages": r.target_pages, "target_files": r.target_files,
                "deadline": r.deadline, "timezone": r.timezone, "work_start": r.work_start,
                "work_end": r.work_end, "workdays": workdays})
            conn.execute(
                "INSERT INTO audit_log (event_id, action, site_id, detail) "
                "VALUES (%s, 'plan_imported', %s, %s) ON CONFLICT DO NOTHING",
                (f"plan:{campaign_id}:{datetime.now().isoformat()}:{r.site_id}"[:200],
                 r.site_id, f"{source} row {r.row}"))
        # A site whose time zone changed re-dates its pages and days.
        moved = [r.site_id for r in rows
                 if r.site_id in old_tz and old_tz[r.site_id] != r.timezone]
        if moved:
            redate_sites(conn, moved)
    return len(rows)


def redate_sites(conn: psycopg.Connection, site_ids: list[str]) -> None:
    conn.execute(
        "UPDATE pages p SET scan_day = (p.first_scanned_at AT TIME ZONE s.timezone)::date "
        "FROM sites s WHERE s.site_id = p.site_id AND p.site_id = ANY(%s)", (site_ids,))
    conn.execute("DELETE FROM daily_progress WHERE site_id = ANY(%s)", (site_ids,))
    conn.execute("""
        INSERT INTO daily_progress (site_id, day, pages_scanned, pages_accepted, files_accepted)
        SELECT site_id, day, sum(ps), sum(pa), sum(fa) FROM (
            SELECT site_id, scan_day AS day, count(*) AS ps, 0 AS pa, 0 AS fa FROM pages
            WHERE site_id = ANY(%(s)s) AND NOT removed GROUP BY 1, 2
            UNION ALL
            SELECT f.site_id, (f.verdict_at AT TIME ZONE st.timezone)::date,
                   0, COALESCE(sum(f.pages_accepted), 0), count(*)
            FROM files f JOIN sites st USING (site_id)
            WHERE f.site_id = ANY(%(s)s) AND f.state = 'accepted' GROUP BY 1, 2
        ) x GROUP BY site_id, day""", {"s": site_ids})


def show_rows(conn: psycopg.Connection) -> list[dict[str, Any]]:
    return conn.cursor(row_factory=dict_row).execute(
        "SELECT c.name AS campaign, s.site_id, s.name, s.unit, s.contractor, s.target_pages, "
        "s.target_files, s.deadline, s.timezone, s.work_start, s.work_end, s.auto_created "
        "FROM sites s LEFT JOIN campaigns c USING (campaign_id) "
        "ORDER BY s.auto_created, s.unit NULLS LAST, s.site_id").fetchall()
