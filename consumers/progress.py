"""Per-site progress read from PostgreSQL, with forecasts: shared by /metrics, status, reports."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from consumers.calendar_days import CalendarDays, load_calendar
from consumers.forecast import Forecast, forecast_site, required_rate
from sohoa.config import CampaignConfig
from sohoa.work_calendar import WorkCalendar


@dataclass
class SiteProgress:
    site_id: str
    name: str | None
    unit: str | None
    contractor: str | None
    target_pages: int | None
    target_files: int | None
    deadline: date | None
    timezone: str
    auto_created: bool
    pages_scanned: int
    documents_scanned: int
    checked_pages: int
    pages_accepted: int
    files_total: int
    files_accepted: int
    qc_failed_pages: int
    remaining_pages: int | None
    last_page_at: datetime | None
    last_heartbeat_at: datetime | None
    outbox_depth: int | None
    oldest_unsent_age_s: float | None
    working_now: bool
    throughput_per_day: float
    forecast_completion: date | None
    at_risk: bool
    working_days_left: int | None = None      # from today to the deadline, both counted
    required_per_day: float | None = None     # pages per working day the deadline now needs
    upload_pending_pages: int | None = None
    upload_pending_bytes: int | None = None
    oldest_unuploaded_age_s: float | None = None
    upload_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, datetime | date):
                out[k] = v.isoformat()
        return out


def calendar_for(row: dict[str, Any], campaign: CampaignConfig | None = None,
                 days: CalendarDays | None = None) -> WorkCalendar:
    """The site's own days and hours with the office's days off and make-up days; the lunch
    break is the campaign's."""
    lunch = {} if campaign is None else {"lunch_start": campaign.lunch_start,
                                         "lunch_end": campaign.lunch_end}
    off, extra = (frozenset(), frozenset()) if days is None else days.for_site(
        row["site_id"], row.get("unit"))
    return WorkCalendar(timezone=row["timezone"], workdays=tuple(row["workdays"]),
                        work_start=row["work_start"], work_end=row["work_end"],
                        days_off=off, extra_days=extra, **lunch)


_SITES = """
SELECT v.*, s.workdays, s.work_start, s.work_end, h.upload_pending_pages,
       h.upload_pending_bytes, h.oldest_unuploaded_age_s, h.upload_error
FROM v_site_progress v JOIN sites s USING (site_id)
LEFT JOIN site_heartbeats h USING (site_id)
WHERE (%(site)s::text IS NULL OR v.site_id = %(site)s::text)
ORDER BY v.unit NULLS LAST, v.site_id
"""

_DAILY = """
SELECT site_id, day, pages_scanned FROM daily_progress
WHERE day >= %(since)s AND (%(site)s::text IS NULL OR site_id = %(site)s::text)
"""


def load_sites(conn: psycopg.Connection, campaign: CampaignConfig, *,
               now: datetime | None = None, site: str | None = None,
               as_of: date | None = None) -> list[SiteProgress]:
    """Every site's progress now (or, for reports, the forecast as of ``as_of``)."""
    now = now or datetime.now(UTC)
    cur = conn.cursor(row_factory=dict_row)
    sites = cur.execute(_SITES, {"site": site}).fetchall()
    # Enough calendar days to hold the window's working days across Tết.
    since = (as_of or now.date()) - timedelta(days=campaign.forecast_window_days * 3 + 21)
    daily: dict[str, dict[date, int]] = {}
    for sid, day, n in conn.execute(_DAILY, {"since": since, "site": site}).fetchall():
        daily.setdefault(sid, {})[day] = n
    days = load_calendar(conn)
    out = []
    for row in sites:
        cal = calendar_for(row, campaign, days)
        today = as_of or cal.local_today(now)
        fc: Forecast = forecast_site(
            cal, daily.get(row["site_id"], {}), today=today, scanned=int(row["pages_scanned"]),
            target=row["target_pages"], deadline=row["deadline"],
            window_days=campaign.forecast_window_days)
        out.append(SiteProgress(
            site_id=row["site_id"], name=row["name"], unit=row["unit"],
            contractor=row["contractor"], target_pages=row["target_pages"],
            target_files=row["target_files"], deadline=row["deadline"],
            timezone=row["timezone"], auto_created=row["auto_created"],
            pages_scanned=int(row["pages_scanned"]),
            documents_scanned=int(row["documents_scanned"]),
            checked_pages=int(row["checked_pages"]), pages_accepted=int(row["pages_accepted"]),
            files_total=int(row["files_total"]), files_accepted=int(row["files_accepted"]),
            qc_failed_pages=int(row["qc_failed_pages"]),
            remaining_pages=row["remaining_pages"], last_page_at=row["last_page_at"],
            last_heartbeat_at=row["last_heartbeat_at"], outbox_depth=row["outbox_depth"],
            oldest_unsent_age_s=row["oldest_unsent_age_s"], working_now=cal.working_now(now),
            throughput_per_day=fc.throughput_per_day, forecast_completion=fc.completion,
            at_risk=fc.at_risk, upload_pending_pages=row["upload_pending_pages"],
            upload_pending_bytes=row["upload_pending_bytes"],
            oldest_unuploaded_age_s=row["oldest_unuploaded_age_s"],
            upload_error=row["upload_error"],
            **required_rate(cal, today, fc.remaining_pages, row["deadline"])))
    return out


def day_end_ts(day: date, tz: str) -> float:
    """Unix time of the end of a local day (deadlines are inclusive of their day)."""
    from zoneinfo import ZoneInfo

    return datetime.combine(day, time(23, 59, 59), tzinfo=ZoneInfo(tz)).timestamp()
