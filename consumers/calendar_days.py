"""One-off days off and make-up working days (ngày nghỉ bù, làm bù), per province, unit or
site: read from the CSV/XLSX the office types, stored in ``calendar_days`` (migration 007),
applied to every site's :class:`~sohoa.work_calendar.WorkCalendar`.

File: a header row, then one day per row (any column order; Vietnamese headers accepted):

    ngày        dd/mm/yyyy or yyyy-mm-dd                                  (day, required)
    loại        nghỉ / nghỉ bù (day off), làm bù / làm việc (working day) (kind, required)
    mã điểm     one site of the plan                                      (site_id)
    đơn vị      every site of a unit of the plan                          (unit)
    ghi chú     why, shown to whoever reads the calendar                  (note)

Neither site nor unit: the whole province (every site). Every bad cell is reported as
``dòng N, cột X: …`` (X as the file spells it) and nothing is written unless all rows are
valid.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import psycopg

from consumers.campaign import parse_date
from consumers.db import scalar
from consumers.tabular import TabularError, read_rows
from sohoa.naming import fold

COLUMNS = {
    "day": ("day", "ngày", "ngay", "date"),
    "kind": ("kind", "loại", "loai", "loại ngày", "type"),
    "site_id": ("site_id", "mã điểm", "ma diem", "điểm", "site"),
    "unit": ("unit", "đơn vị", "don vi"),
    "note": ("note", "ghi chú", "ghi chu", "lý do", "ly do", "nội dung"),
}
KINDS = {"off": ("off", "nghỉ", "nghỉ bù", "ngày nghỉ", "nghỉ lễ", "day off"),
         "work": ("work", "làm bù", "làm việc", "đi làm", "ngày làm bù", "working day")}
KIND_VI = {"off": "ngày nghỉ", "work": "ngày làm bù"}


class CalendarError(ValueError):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class CalendarEntry:
    row: int
    day: date
    kind: str               # off | work
    scope_kind: str         # all | unit | site
    scope: str              # '' | unit as the plan names it | site_id
    note: str


def _canonical(header: list[str]) -> dict[str, int]:
    names = {fold(alias): col for col, aliases in COLUMNS.items() for alias in aliases}
    out: dict[str, int] = {}
    for i, h in enumerate(header):
        col = names.get(fold(h))
        if col and col not in out:
            out[col] = i
    return out


def _kind(value: str) -> str:
    folded = fold(value)
    for kind, words in KINDS.items():
        if folded in {fold(w) for w in words}:
            return kind
    raise ValueError(f"không rõ loại ngày {value!r}: dùng 'nghỉ' hoặc 'làm bù'")


def read_calendar(path: Path, sites: dict[str, str | None]) -> list[CalendarEntry]:
    """Every row valid against the plan's ``sites`` ({site_id: unit}), else
    :class:`CalendarError` listing every bad cell."""
    try:
        header, rows = read_rows(path)
    except TabularError as exc:
        raise CalendarError([str(exc)]) from None
    idx = _canonical(header)
    missing = [f"{c} ({COLUMNS[c][1]})" for c in ("day", "kind") if c not in idx]
    if missing:
        raise CalendarError([f"thiếu cột (missing column): {', '.join(missing)}; có: "
                             f"{', '.join(h for h in header if h)}"])
    units = {fold(u): u for u in sites.values() if u}
    errors: list[str] = []
    out: list[CalendarEntry] = []
    seen: dict[tuple[str, str, date], int] = {}
    for rowno, cells in rows:
        def cell(col: str, cells=cells) -> Any:
            i = idx.get(col)
            v = cells[i] if i is not None and i < len(cells) else None
            return v.strip() if isinstance(v, str) else v

        def bad(col: str, msg: str, rowno=rowno) -> None:
            errors.append(f"dòng {rowno}, cột {header[idx[col]]}: {msg}")

        n_before = len(errors)
        day = kind = None
        if cell("day") in (None, ""):
            bad("day", "bắt buộc (required)")
        else:
            try:
                day = parse_date(cell("day"))
            except ValueError as exc:
                bad("day", str(exc))
        if cell("kind") in (None, ""):
            bad("kind", "bắt buộc (required)")
        else:
            try:
                kind = _kind(str(cell("kind")))
            except ValueError as exc:
                bad("kind", str(exc))
        site, unit = str(cell("site_id") or ""), str(cell("unit") or "")
        scope_kind, scope = "all", ""
        if site and unit:
            bad("site_id", "chỉ ghi mã điểm hoặc đơn vị, không cả hai")
        elif site:
            if site not in sites:
                bad("site_id", f"điểm {site!r} không có trong kế hoạch")
            scope_kind, scope = "site", site
        elif unit:
            if fold(unit) not in units:
                bad("unit", f"đơn vị {unit!r} không có trong kế hoạch; có: "
                            f"{', '.join(sorted(units.values()))}")
            scope_kind, scope = "unit", units.get(fold(unit), unit)
        if len(errors) > n_before:
            continue
        assert day is not None and kind is not None
        key = (scope_kind, scope, day)
        if key in seen:
            bad("day", f"ngày {day:%d/%m/%Y} đã có ở dòng {seen[key]} cho cùng phạm vi")
            continue
        seen[key] = rowno
        out.append(CalendarEntry(rowno, day, kind, scope_kind, scope, str(cell("note") or "")))
    if errors:
        raise CalendarError(errors)
    if not out:
        raise CalendarError([f"{path.name}: không có dòng dữ liệu nào (no data rows)"])
    return out


def plan_sites(conn: psycopg.Connection) -> dict[str, str | None]:
    return dict(conn.execute("SELECT site_id, unit FROM sites").fetchall())


def import_calendar(conn: psycopg.Connection, entries: Iterable[CalendarEntry], *,
                    source: str, replace: bool = False) -> int:
    """Upsert the entries in one transaction (``replace``: the stored calendar is replaced)."""
    n = 0
    with conn.transaction():
        if replace:
            conn.execute("DELETE FROM calendar_days")
        for e in entries:
            conn.execute(
                "INSERT INTO calendar_days (scope_kind, scope, day, kind, note, source) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (scope_kind, scope, day) DO UPDATE "
                "SET kind = excluded.kind, note = excluded.note, source = excluded.source, "
                "imported_at = now()", (e.scope_kind, e.scope, e.day, e.kind, e.note, source))
            n += 1
    return n


@dataclass
class CalendarDays:
    """The stored exceptions, ready to apply to any site."""

    by_scope: dict[tuple[str, str], dict[date, str]] = field(default_factory=dict)

    def for_site(self, site_id: str, unit: str | None) -> tuple[frozenset[date],
                                                                 frozenset[date]]:
        """(days off, make-up days) of a site: its own entries over its unit's over the
        province's."""
        merged: dict[date, str] = {}
        for key in (("all", ""), ("unit", unit or ""), ("site", site_id)):
            if key[0] == "unit" and not unit:
                continue
            merged.update(self.by_scope.get(key, {}))
        return (frozenset(d for d, k in merged.items() if k == "off"),
                frozenset(d for d, k in merged.items() if k == "work"))


def load_calendar(conn: psycopg.Connection) -> CalendarDays:
    """Every stored exception; empty on a database from before migration 007."""
    if scalar(conn, "SELECT to_regclass('calendar_days')") is None:
        return CalendarDays()
    out = CalendarDays()
    for scope_kind, scope, day, kind in conn.execute(
            "SELECT scope_kind, scope, day, kind FROM calendar_days"):
        out.by_scope.setdefault((scope_kind, scope), {})[day] = kind
    return out


def show_rows(conn: psycopg.Connection) -> list[tuple[date, str, str, str, str]]:
    """(day, kind, scope kind, scope, note) ordered by day, for `calendar show`."""
    return conn.execute("SELECT day, kind, scope_kind, scope, note FROM calendar_days "
                        "ORDER BY day, scope_kind, scope").fetchall()
