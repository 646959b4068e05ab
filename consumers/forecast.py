"""Completion forecasts and required rates, counted in working days.

The days and hours are :class:`sohoa.work_calendar.WorkCalendar`'s, the one calendar the
simulator also writes pages by.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TypedDict

from sohoa.work_calendar import WorkCalendar

MAX_EXACT_WORKING_DAYS = 2000


@dataclass(frozen=True)
class Forecast:
    throughput_per_day: float      # pages per working day over the window
    remaining_pages: int | None
    completion: date | None        # None: no target, or no throughput to forecast from
    at_risk: bool                  # forecast after the deadline, or stalled with work left


def forecast_site(
    calendar: WorkCalendar, daily_pages: Mapping[date, int], *, today: date,
    scanned: int, target: int | None, deadline: date | None, window_days: int,
) -> Forecast:
    """Throughput over the last ``window_days`` working days before ``today`` → completion date.

    Today's partial count is left out of the rate (it would read low all morning) but counts
    toward what is done.
    """
    window = calendar.working_days_before(today, max(1, window_days))
    throughput = sum(daily_pages.get(d, 0) for d in window) / max(1, len(window))
    if target is None:
        return Forecast(throughput, None, None, False)
    remaining = max(0, target - scanned)
    if remaining == 0:
        done_day = max((d for d, n in daily_pages.items() if n > 0), default=today)
        return Forecast(throughput, 0, done_day, bool(deadline and done_day > deadline))
    if throughput <= 0:
        return Forecast(throughput, remaining, None, deadline is not None)
    days_needed = math.ceil(remaining / throughput)
    if days_needed > MAX_EXACT_WORKING_DAYS:
        # Years away: walking the calendar day by day buys no useful precision.
        per_week = max(1, len(calendar.workdays))
        completion = today + timedelta(days=math.ceil(days_needed * 7 / per_week))
    else:
        completion = calendar.nth_working_day_from(today, days_needed)
    return Forecast(throughput, remaining, completion,
                    bool(deadline is not None and completion > deadline))


class RequiredRate(TypedDict):
    """What :func:`required_rate` returns, as fields of SiteProgress and MonthlyRow."""

    working_days_left: int | None
    required_per_day: float | None


def required_rate(calendar: WorkCalendar, today: date, remaining: int | None,
                  deadline: date | None) -> RequiredRate:
    """Working days from ``today`` to the deadline (both counted) and the pages per working day
    the remaining pages then need: {"working_days_left", "required_per_day"}; the rate is None
    without a plan, and None with pages left but no working day left (the deadline has passed:
    no rate can make it)."""
    if remaining is None or deadline is None:
        return {"working_days_left": None, "required_per_day": None}
    left = calendar.working_days_between(today, deadline)
    if remaining == 0:
        return {"working_days_left": left, "required_per_day": 0.0}
    return {"working_days_left": left, "required_per_day": remaining / left if left else None}


def planned_cumulative(calendar: WorkCalendar, *, start: date, deadline: date, target: int,
                       day: date) -> float:
    """The straight line: pages that should be done by the end of ``day`` (working days)."""
    if day < start:
        return 0.0
    total = calendar.working_days_between(start, deadline)
    if total <= 0 or day >= deadline:
        return float(target)
    return target * calendar.working_days_between(start, day) / total


def daily_series(rows: Iterable[tuple[date, int]]) -> dict[date, int]:
    out: dict[date, int] = {}
    for d, n in rows:
        out[d] = out.get(d, 0) + int(n)
    return out
