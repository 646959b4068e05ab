"""Working calendars and completion forecasts.

A site works on its configured weekdays, inside its working hours, except Vietnamese public
holidays, which come from the maintained ``holidays`` library (country VN: Tết, Giỗ Tổ Hùng
Vương, 30/4, 1/5, Quốc khánh…), never from a hand-kept list. One-off days off (ngày nghỉ bù,
a province's own day off) and make-up working days (làm bù, usually a Saturday) come from the
calendar the office imports (:mod:`consumers.calendar_days`) and override both.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import TypedDict
from zoneinfo import ZoneInfo

import holidays


@lru_cache(maxsize=64)
def _vn_holidays(year: int) -> frozenset[date]:
    return frozenset(holidays.country_holidays("VN", years=year).keys())


def is_holiday(day: date) -> bool:
    return day in _vn_holidays(day.year)


@lru_cache(maxsize=32)
def _working_ordinals(workdays: tuple[int, ...], first_year: int, last_year: int) -> list[int]:
    """Sorted ordinals of every working day in [first_year, last_year]: bisect, don't walk."""
    d = date(first_year, 1, 1)
    end = date(last_year, 12, 31)
    out = []
    while d <= end:
        if d.weekday() in workdays and not is_holiday(d):
            out.append(d.toordinal())
        d += timedelta(days=1)
    return out


@lru_cache(maxsize=256)
def _adjusted_ordinals(workdays: tuple[int, ...], window: tuple[int, int],
                       off: frozenset[date], extra: frozenset[date]) -> list[int]:
    """The weekday table with one calendar's exceptions applied (make-up days win)."""
    base = _working_ordinals(workdays, *window)
    lo, hi = date(window[0], 1, 1), date(window[1], 12, 31)
    drop = {d.toordinal() for d in off if lo <= d <= hi and d not in extra}
    add = {d.toordinal() for d in extra if lo <= d <= hi}
    return sorted((set(base) - drop) | add)


def holiday_name(day: date) -> str | None:
    return holidays.country_holidays("VN", years=day.year).get(day)


@dataclass(frozen=True)
class WorkCalendar:
    timezone: str = "Asia/Ho_Chi_Minh"
    workdays: tuple[int, ...] = (0, 1, 2, 3, 4)  # Monday = 0
    work_start: time = time(7, 30)
    work_end: time = time(17, 0)
    # Offices stop for lunch; a quiet scanner then is not a stalled site.
    lunch_start: time | None = time(11, 30)
    lunch_end: time | None = time(13, 30)
    days_off: frozenset[date] = frozenset()    # one-off days off (nghỉ bù, …)
    extra_days: frozenset[date] = frozenset()  # make-up working days (làm bù)

    def is_working_day(self, day: date) -> bool:
        if day in self.extra_days:
            return True
        if day in self.days_off:
            return False
        return day.weekday() in self.workdays and not is_holiday(day)

    def working_now(self, now: datetime) -> bool:
        local = now.astimezone(ZoneInfo(self.timezone))
        t = local.time().replace(tzinfo=None)
        if not (self.is_working_day(local.date()) and self.work_start <= t < self.work_end):
            return False
        at_lunch = (self.lunch_start is not None and self.lunch_end is not None
                    and self.lunch_start <= t < self.lunch_end)
        return not at_lunch

    def local_today(self, now: datetime) -> date:
        return now.astimezone(ZoneInfo(self.timezone)).date()

    @staticmethod
    def _window(around: date) -> tuple[int, int]:
        # 24-year tables aligned on 8 years: nearby dates share one cached table, and any date
        # has at least 8 years of it on each side.
        base = around.year - (around.year % 8) - 8
        return base, base + 23

    def _ordinals(self, around: date) -> list[int]:
        window = self._window(around)
        workdays = tuple(sorted(self.workdays))
        if not self.days_off and not self.extra_days:
            return _working_ordinals(workdays, *window)
        return _adjusted_ordinals(workdays, window, self.days_off, self.extra_days)

    def working_days_before(self, day: date, n: int) -> list[date]:
        """The ``n`` working days strictly before ``day``, newest first."""
        ords = self._ordinals(day)
        i = bisect_left(ords, day.toordinal())
        return [date.fromordinal(o) for o in reversed(ords[max(0, i - n):i])]

    def nth_working_day_from(self, start: date, n: int) -> date:
        """The ``n``-th working day counting ``start`` itself when it is one (n >= 1)."""
        ords = self._ordinals(start)
        i = bisect_left(ords, start.toordinal()) + n - 1
        if i < len(ords):
            return date.fromordinal(ords[i])
        # Past the table (a decade away): continue day by day from its end.
        d, count = date.fromordinal(ords[-1]), len(ords) - 1
        while count < i:
            d += timedelta(days=1)
            if self.is_working_day(d):
                count += 1
        return d

    def working_days_between(self, start: date, end: date) -> int:
        """Working days in [start, end]."""
        if end < start:
            return 0
        _first_year, last_year = self._window(start)
        if end.year <= last_year:
            ords = self._ordinals(start)
            return bisect_right(ords, end.toordinal()) - bisect_left(ords, start.toordinal())
        return sum(1 for i in range((end - start).days + 1)
                   if self.is_working_day(start + timedelta(days=i)))


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
