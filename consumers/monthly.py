"""The figures of the monthly progress report (báo cáo tiến độ), per unit and site.

Figures come from ``daily_progress`` (pages by the local day they were first scanned,
accepted pages by the day of their file's verdict). Each site's calendar is its weekdays,
the public holidays and the office's days off and make-up days (:mod:`consumers.calendar_days`).
Totals and the chart count the sites of the plan only: a site that sends pages without a plan
is reported apart, never inside TỔNG CỘNG.
"""

from __future__ import annotations

import calendar as _calendar
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
from psycopg.rows import dict_row

from consumers import vi
from consumers.calendar_days import load_calendar
from consumers.deliverables import SiteDeliverable, by_site
from consumers.forecast import forecast_site, required_rate
from sohoa.config import CampaignConfig
from sohoa.work_calendar import WorkCalendar

ON_TRACK = "đúng tiến độ"
LATE = "chậm tiến độ"
NO_PLAN = "chưa có kế hoạch"
DONE = "đã hoàn thành"


def parse_month(text: str) -> tuple[int, int]:
    """"2026-03" or "03/2026" (also "3/2026") -> (2026, 3)."""
    s = text.strip()
    m = re.fullmatch(r"(\d{4})-(\d{1,2})", s) or re.fullmatch(r"(\d{1,2})/(\d{4})", s)
    if m:
        a, b = m.groups()
        year, month = (int(a), int(b)) if len(a) == 4 else (int(b), int(a))
        if 1 <= month <= 12:
            return year, month
    raise ValueError(f"tháng không hợp lệ {text!r}: dùng MM/YYYY hoặc YYYY-MM, ví dụ 03/2026")


@dataclass
class MonthlyRow:
    unit: str
    site_id: str
    name: str
    contractor: str
    target_pages: int | None
    in_month: int
    cumulative: int
    accepted_in_month: int
    accepted_cumulative: int
    deadline: date | None
    planned_to_date: float | None
    forecast: date | None
    assessment: str
    throughput_per_day: float = 0.0
    working_days_left: int | None = None
    required_per_day: float | None = None

    @property
    def planned(self) -> bool:
        return self.target_pages is not None

    @property
    def completion(self) -> float | None:
        if not self.target_pages:
            return None
        return self.cumulative / self.target_pages

    @property
    def remaining(self) -> int | None:
        return None if self.target_pages is None else max(0, self.target_pages - self.cumulative)

    @property
    def at_risk(self) -> bool:
        return self.planned and self.assessment == LATE


@dataclass
class MonthlyReport:
    year: int
    month: int
    generated: date
    as_of: date
    rows: list[MonthlyRow]
    chart_days: list[date] = field(default_factory=list)
    chart_actual: list[float | None] = field(default_factory=list)
    chart_planned: list[float] = field(default_factory=list)
    # The deliverable per site (packaged / handed over / verified), as of the report.
    deliverables: dict[str, SiteDeliverable] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        return f"Tiến độ số hóa tài liệu lưu trữ tháng {self.month:02d}/{self.year}"

    @property
    def title(self) -> str:
        return f"Báo cáo tiến độ số hóa tài liệu lưu trữ tháng {self.month:02d}/{self.year}"

    @property
    def planned_rows(self) -> list[MonthlyRow]:
        return [r for r in self.rows if r.planned]

    @property
    def unplanned_rows(self) -> list[MonthlyRow]:
        return [r for r in self.rows if not r.planned]

    def units(self) -> list[tuple[str, list[MonthlyRow]]]:
        """The plan's sites by unit, units in Vietnamese alphabetical order."""
        groups: dict[str, list[MonthlyRow]] = defaultdict(list)
        for r in self.planned_rows:
            groups[r.unit].append(r)
        return sorted(groups.items(), key=lambda kv: vi.sort_key(kv[0]))

    def at_risk(self) -> list[MonthlyRow]:
        """Planned sites the forecast puts past their deadline (or stalled with pages left),
        the largest gap between needed and current pace first."""
        def gap(r: MonthlyRow) -> float:
            need = r.required_per_day if r.required_per_day is not None else float("inf")
            return need - r.throughput_per_day

        return sorted((r for r in self.rows if r.at_risk), key=lambda r: (-gap(r), r.name))


def group_status(rows: list[MonthlyRow]) -> str:
    """A subtotal's status, from its planned sites only."""
    planned = [r for r in rows if r.planned]
    if not planned:
        return NO_PLAN
    late = sum(1 for r in planned if r.assessment == LATE)
    if late:
        return f"{late} điểm {LATE}"
    if all(r.assessment == DONE for r in planned):
        return DONE
    return ON_TRACK


class _WorkdayIndex:
    """Prefix counts of working days, so the straight line costs O(1) per site and day."""

    def __init__(self, cal: WorkCalendar, start: date, end: date) -> None:
        self.start = start
        n = (end - start).days + 1
        flags = np.fromiter((cal.is_working_day(start + timedelta(days=i)) for i in range(n)),
                            dtype=np.int32, count=n)
        self.prefix = np.concatenate([[0], np.cumsum(flags)])  # prefix[i] = workdays < start+i

    def upto(self, d: date) -> int:
        """Working days in [start, d]."""
        i = (d - self.start).days + 1
        return int(self.prefix[min(max(i, 0), len(self.prefix) - 1)])


_SITES_SQL = """
SELECT s.site_id, s.name, s.unit, s.contractor, s.target_pages, s.deadline, s.timezone,
       s.workdays, s.work_start, s.work_end, c.start_date
FROM sites s LEFT JOIN campaigns c USING (campaign_id)
ORDER BY s.unit NULLS LAST, s.site_id
"""


def build_monthly(conn: psycopg.Connection, campaign: CampaignConfig, year: int, month: int,
                  *, today: date | None = None) -> MonthlyReport:
    today = today or datetime.now(ZoneInfo(campaign.timezone)).date()
    first = date(year, month, 1)
    last = date(year, month, _calendar.monthrange(year, month)[1])
    # For the current month, figures and forecast are as of today; for a past one, month end.
    as_of = min(last, today) if first <= today else last
    # The forecast's "today": the day after a past month, else today (whose pages count).
    fc_today = as_of + timedelta(days=1) if as_of < today else today
    cur = conn.cursor(row_factory=dict_row)
    sites = cur.execute(_SITES_SQL).fetchall()
    before: dict[str, tuple[int, int]] = {
        sid: (int(p), int(a)) for sid, p, a in conn.execute(
            "SELECT site_id, sum(pages_scanned), sum(pages_accepted) FROM daily_progress "
            "WHERE day < %s GROUP BY site_id", (first,))}
    lookback = first - timedelta(days=campaign.forecast_window_days * 3 + 21)
    daily: dict[str, dict[date, tuple[int, int]]] = defaultdict(dict)
    with conn.cursor() as c2:
        c2.execute("SELECT site_id, day, pages_scanned, pages_accepted FROM daily_progress "
                   "WHERE day >= %s AND day <= %s", (lookback, last))
        for sid, day, ps, pa in c2:
            daily[sid][day] = (ps, pa)
    first_day: dict[str, date] = dict(conn.execute(
        "SELECT site_id, min(day) FROM daily_progress GROUP BY site_id").fetchall())
    planned_ids = [s["site_id"] for s in sites if s["target_pages"] is not None]
    totals_by_day: dict[date, int] = dict(conn.execute(
        "SELECT day, sum(pages_scanned) FROM daily_progress WHERE day <= %s "
        "AND site_id = ANY(%s) GROUP BY day", (last, planned_ids)).fetchall())
    exceptions = load_calendar(conn)

    # Campaign start (for the straight line): the plan's start date, else the first page.
    def start_of(s: dict[str, Any]) -> date:
        return s["start_date"] or first_day.get(s["site_id"]) or first

    chart_start = min([start_of(s) for s in sites if s["target_pages"]] + [first])
    chart_end = max([s["deadline"] for s in sites if s["deadline"]] + [last])
    indexes: dict[WorkCalendar, _WorkdayIndex] = {}

    def cal_of(s: dict[str, Any]) -> tuple[WorkCalendar, _WorkdayIndex]:
        off, extra = exceptions.for_site(s["site_id"], s["unit"])
        cal = WorkCalendar(s["timezone"], tuple(s["workdays"]), s["work_start"],
                           s["work_end"], days_off=off, extra_days=extra)
        if cal not in indexes:
            lo = min(chart_start, lookback) - timedelta(days=1)
            indexes[cal] = _WorkdayIndex(cal, lo, max(chart_end, today) + timedelta(1))
        return cal, indexes[cal]

    rows: list[MonthlyRow] = []
    span = (chart_end - chart_start).days + 1
    chart_days = [chart_start + timedelta(days=i) for i in range(span)]
    planned = np.zeros(len(chart_days))
    for s in sites:
        sid = s["site_id"]
        cal, idx = cal_of(s)
        d = daily.get(sid, {})
        p_before, a_before = before.get(sid, (0, 0))
        in_month = sum(v[0] for k, v in d.items() if first <= k <= as_of)
        acc_month = sum(v[1] for k, v in d.items() if first <= k <= as_of)
        cumulative = p_before + in_month
        target = s["target_pages"]
        deadline = s["deadline"]
        start = start_of(s)
        planned_to_date = None
        if target is not None and deadline is not None:
            total_wd = idx.upto(deadline) - idx.upto(start - timedelta(days=1))
            done_wd = idx.upto(as_of) - idx.upto(start - timedelta(days=1))
            planned_to_date = (float(target) if total_wd <= 0
                               else target * min(1.0, max(0.0, done_wd / total_wd)))
            # The site's straight line, added to the campaign's over every chart day.
            if total_wd > 0:
                base = idx.upto(start - timedelta(days=1))
                offs = (chart_days[0] - idx.start).days + 1
                pref = idx.prefix[offs:offs + len(chart_days)]
                frac = np.clip((pref - base) / total_wd, 0.0, 1.0)
                planned += target * frac
            else:
                planned += float(target)
        fc = forecast_site(cal, {k: v[0] for k, v in d.items() if k < as_of + timedelta(1)},
                           today=fc_today, scanned=cumulative, target=target,
                           deadline=deadline, window_days=campaign.forecast_window_days)
        if target is None:
            assessment = NO_PLAN
        elif cumulative >= target:
            assessment = DONE if not (deadline and fc.completion and fc.completion > deadline) \
                else LATE
        else:
            assessment = LATE if fc.at_risk else ON_TRACK
        rate = required_rate(cal, fc_today, fc.remaining_pages, deadline)
        rows.append(MonthlyRow(
            unit=s["unit"] or "", site_id=sid, name=s["name"] or sid,
            contractor=s["contractor"] or "", target_pages=target, in_month=in_month,
            cumulative=cumulative, accepted_in_month=acc_month,
            accepted_cumulative=a_before + acc_month, deadline=deadline,
            planned_to_date=planned_to_date, forecast=fc.completion, assessment=assessment,
            throughput_per_day=fc.throughput_per_day,
            working_days_left=rate["working_days_left"],
            required_per_day=rate["required_per_day"]))
    actual: list[float | None] = []
    running = 0.0
    for day in chart_days:
        running += float(totals_by_day.get(day, 0))
        actual.append(running if day <= as_of else None)
    return MonthlyReport(year, month, today, as_of, rows, chart_days, actual,
                         [float(x) for x in planned], by_site(conn))
