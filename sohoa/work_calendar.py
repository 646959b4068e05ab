"""The working calendar: which days and hours a site works, for forecasts and the simulator.

A site works on its configured weekdays, inside its working hours less the lunch break, except
Vietnamese public holidays, which come from the maintained ``holidays`` library (country VN:
Tết, Giỗ Tổ Hùng Vương, 30/4, 1/5, Quốc khánh…), never from a hand-kept list. One-off days off
(ngày nghỉ bù, a province's own day off) and make-up working days (làm bù, usually a Saturday)
come from the calendar the office imports (:mod:`consumers.calendar_days`) and override both.

One calendar for the whole system, so the simulator writes pages on exactly the days and hours
the progress store counts as working. ``holidays`` is imported lazily: the kernel must not need
it, and the site install (which does not ship it) then sees no holidays; the centre has it.
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from sohoa.config import CampaignConfig


@lru_cache(maxsize=64)
def _vn_holidays(year: int) -> frozenset[date]:
    try:
        import holidays
    except ImportError:  # the site extra does not ship it; the centre has it
        return frozenset()
    return frozenset(holidays.country_holidays("VN", years=year).keys())


def is_holiday(day: date) -> bool:
    return day in _vn_holidays(day.year)


def holiday_name(day: date) -> str | None:
    """The holiday's name (Vietnamese), or None; None everywhere without ``holidays``."""
    try:
        import holidays
    except ImportError:
        return None
    return holidays.country_holidays("VN", years=day.year).get(day)


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

    @classmethod
    def from_campaign(cls, c: CampaignConfig) -> WorkCalendar:
        """The campaign's default days and hours (no site's own, no imported exceptions)."""
        return cls(c.timezone, tuple(c.workdays), c.work_start, c.work_end,
                   c.lunch_start, c.lunch_end)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    # --- days --------------------------------------------------------------------------------

    def is_working_day(self, day: date) -> bool:
        if day in self.extra_days:
            return True
        if day in self.days_off:
            return False
        return day.weekday() in self.workdays and not is_holiday(day)

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

    def working_days_back(self, today: date, n: int) -> date:
        """The first of the last ``n`` working days up to and including ``today``."""
        d, count = today, 0
        for _ in range(n * 7 + 400):
            if self.is_working_day(d):
                count += 1
                if count >= n:
                    return d
            d -= timedelta(days=1)
        return d

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

    # --- hours -------------------------------------------------------------------------------

    def working_now(self, now: datetime) -> bool:
        local = now.astimezone(ZoneInfo(self.timezone))
        t = local.time().replace(tzinfo=None)
        if not (self.is_working_day(local.date()) and self.work_start <= t < self.work_end):
            return False
        at_lunch = (self.lunch_start is not None and self.lunch_end is not None
                    and self.lunch_start <= t < self.lunch_end)
        return not at_lunch

    def day_intervals(self, day: date) -> list[tuple[datetime, datetime]]:
        """Working intervals of one local day (morning, afternoon), as aware datetimes."""
        if not self.is_working_day(day):
            return []
        tz = self.tz
        start = datetime.combine(day, self.work_start, tz)
        end = datetime.combine(day, self.work_end, tz)
        if end <= start:
            return []
        if self.lunch_start is None or self.lunch_end is None:
            return [(start, end)]
        ls = datetime.combine(day, self.lunch_start, tz)
        le = datetime.combine(day, self.lunch_end, tz)
        if self.lunch_start >= self.lunch_end or le <= start or ls >= end:
            return [(start, end)]
        return [(s, e) for s, e in ((start, max(start, ls)), (min(end, le), end)) if e > s]

    def working_seconds_per_day(self) -> float:
        """Working seconds of an ordinary working day (the hours less the lunch break)."""
        monday = date(2026, 3, 2)  # any ordinary working day
        probe = dataclasses.replace(self, workdays=(0,), days_off=frozenset(),
                                    extra_days=frozenset())
        return sum((e - s).total_seconds() for s, e in probe.day_intervals(monday)) or 1.0

    def intervals(self, start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Working intervals clipped to [start, end)."""
        day = start.astimezone(self.tz).date()
        last = end.astimezone(self.tz).date()
        while day <= last:
            for s, e in self.day_intervals(day):
                s, e = max(s, start), min(e, end)
                if e > s:
                    yield s, e
            day += timedelta(days=1)
