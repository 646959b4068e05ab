"""Working calendars (Vietnamese public holidays from the `holidays` library) and forecasts."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

from consumers.forecast import forecast_site, planned_cumulative
from sohoa.work_calendar import WorkCalendar, is_holiday

CAL = WorkCalendar()


def test_vietnamese_public_holidays_are_days_off() -> None:
    assert is_holiday(date(2026, 9, 2))       # Quốc khánh
    assert is_holiday(date(2026, 4, 30))      # Ngày Giải phóng miền Nam
    assert is_holiday(date(2026, 5, 1))       # Quốc tế Lao động
    assert is_holiday(date(2026, 2, 17))      # Tết Nguyên đán 2026 (mùng 1)
    assert not CAL.is_working_day(date(2026, 2, 17))
    assert not CAL.is_working_day(date(2026, 3, 7))   # a Saturday
    assert CAL.is_working_day(date(2026, 3, 9))       # an ordinary Monday


def test_working_now_uses_the_site_time_zone_and_hours() -> None:
    # 02:00 UTC = 09:00 in Hà Nội on Monday 9/3/2026.
    assert CAL.working_now(datetime(2026, 3, 9, 2, 0, tzinfo=UTC))
    assert not CAL.working_now(datetime(2026, 3, 9, 12, 0, tzinfo=UTC))   # 19:00 local
    assert not CAL.working_now(datetime(2026, 9, 2, 2, 0, tzinfo=UTC))    # national day
    late = WorkCalendar(work_start=time(13, 0), work_end=time(22, 0))
    assert late.working_now(datetime(2026, 3, 9, 12, 0, tzinfo=UTC))


def test_forecast_from_recent_throughput() -> None:
    today = date(2026, 3, 16)  # Monday
    window = CAL.working_days_before(today, 5)
    assert window == [date(2026, 3, 13), date(2026, 3, 12), date(2026, 3, 11),
                      date(2026, 3, 10), date(2026, 3, 9)]
    daily = dict.fromkeys(window, 100)
    fc = forecast_site(CAL, daily, today=today, scanned=500, target=1500,
                       deadline=date(2026, 3, 31), window_days=5)
    assert fc.throughput_per_day == 100
    assert fc.remaining_pages == 1000
    # 10 working days counting today: 16–20 and 23–27 March.
    assert fc.completion == date(2026, 3, 27)
    assert not fc.at_risk
    late = forecast_site(CAL, daily, today=today, scanned=500, target=1500,
                         deadline=date(2026, 3, 20), window_days=5)
    assert late.at_risk


def test_forecast_skips_tet_and_flags_a_stalled_site() -> None:
    today = date(2026, 2, 13)  # Friday before Tết 2026
    daily = dict.fromkeys(CAL.working_days_before(today, 3), 50)
    fc = forecast_site(CAL, daily, today=today, scanned=0, target=150, deadline=None,
                       window_days=3)
    # Three working days from Friday 13/2: the Tết days off push the third one well past.
    assert fc.completion is not None and fc.completion > date(2026, 2, 20)
    assert all(CAL.is_working_day(d) for d in (today, fc.completion))
    stalled = forecast_site(CAL, {}, today=today, scanned=10, target=150,
                            deadline=date(2026, 12, 31), window_days=5)
    assert stalled.completion is None and stalled.at_risk
    no_plan = forecast_site(CAL, daily, today=today, scanned=10, target=None, deadline=None,
                            window_days=5)
    assert no_plan.completion is None and not no_plan.at_risk


def test_straight_line_counts_working_days() -> None:
    start, deadline = date(2026, 3, 2), date(2026, 3, 13)   # 10 working days
    assert planned_cumulative(CAL, start=start, deadline=deadline, target=1000,
                              day=date(2026, 3, 6)) == 500
    assert planned_cumulative(CAL, start=start, deadline=deadline, target=1000,
                              day=date(2026, 3, 8)) == 500       # weekend adds nothing
    assert planned_cumulative(CAL, start=start, deadline=deadline, target=1000,
                              day=date(2026, 3, 20)) == 1000
    assert planned_cumulative(CAL, start=start, deadline=deadline, target=1000,
                              day=date(2026, 3, 1)) == 0


def test_calendar_tables_agree_with_walking_day_by_day() -> None:
    import random
    from datetime import timedelta

    rnd = random.Random(1)
    for _ in range(60):
        a = date(2020, 1, 1) + timedelta(days=rnd.randint(0, 4000))
        b = a + timedelta(days=rnd.randint(-5, 1500))
        n = rnd.randint(1, 600)
        walked = sum(1 for i in range((b - a).days + 1)
                     if CAL.is_working_day(a + timedelta(days=i))) if b >= a else 0
        assert CAL.working_days_between(a, b) == walked
        d, count = a, 0
        while True:
            if CAL.is_working_day(d):
                count += 1
                if count >= n:
                    break
            d += timedelta(days=1)
        assert CAL.nth_working_day_from(a, n) == d


def test_lunch_break_is_not_working_time() -> None:
    # 12:00 in Hà Nội on a Monday: inside 7:30–17:00 but at lunch, so no stalled-site alert.
    assert not CAL.working_now(datetime(2026, 3, 9, 5, 0, tzinfo=UTC))
    assert CAL.working_now(datetime(2026, 3, 9, 6, 45, tzinfo=UTC))   # 13:45 local
    no_lunch = WorkCalendar(lunch_start=None, lunch_end=None)
    assert no_lunch.working_now(datetime(2026, 3, 9, 5, 0, tzinfo=UTC))


def test_site_calendar_takes_the_campaign_lunch_break() -> None:
    from consumers.progress import calendar_for
    from sohoa.config import CampaignConfig

    row = {"timezone": "Asia/Ho_Chi_Minh", "workdays": [0, 1, 2, 3, 4],
           "work_start": time(7, 0), "work_end": time(17, 0)}
    cal = calendar_for(row, CampaignConfig(lunch_start=time(12, 0), lunch_end=time(13, 0)))
    assert cal.working_now(datetime(2026, 3, 9, 4, 45, tzinfo=UTC))      # 11:45 local
    assert not cal.working_now(datetime(2026, 3, 9, 5, 15, tzinfo=UTC))  # 12:15 local
