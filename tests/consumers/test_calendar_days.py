"""Days off and make-up working days (ngày nghỉ bù, làm bù): the calendar arithmetic, the
import file's checks, and on the real PostgreSQL the forecast, the monthly report and the
alerts' gauges following an imported calendar."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
from openpyxl import Workbook

from consumers.calendar_days import CalendarError, read_calendar
from sohoa.work_calendar import WorkCalendar

SAT = date(2026, 3, 14)            # a Saturday
MONDAY = date(2026, 3, 16)
OFF = frozenset({MONDAY, date(2026, 3, 17)})
CAL = WorkCalendar(days_off=OFF, extra_days=frozenset({SAT}))


def test_days_off_and_make_up_days_override_the_week() -> None:
    assert CAL.is_working_day(SAT)
    assert not CAL.is_working_day(MONDAY)
    assert CAL.is_working_day(date(2026, 3, 18))
    plain = WorkCalendar()
    # 9–20 March: ten weekdays; two off, one Saturday worked.
    assert plain.working_days_between(date(2026, 3, 9), date(2026, 3, 20)) == 10
    assert CAL.working_days_between(date(2026, 3, 9), date(2026, 3, 20)) == 9
    assert CAL.nth_working_day_from(date(2026, 3, 13), 2) == SAT
    assert CAL.nth_working_day_from(date(2026, 3, 13), 3) == date(2026, 3, 18)
    assert CAL.working_days_before(date(2026, 3, 18), 2) == [SAT, date(2026, 3, 13)]
    # A make-up day on a public holiday still works (the office decided it).
    holiday = date(2026, 9, 2)
    assert WorkCalendar(extra_days=frozenset({holiday})).is_working_day(holiday)


def test_the_tables_agree_with_walking_day_by_day() -> None:
    rnd = random.Random(5)
    base = date(2026, 1, 1)
    off = frozenset(base + timedelta(days=rnd.randint(0, 800)) for _ in range(40))
    extra = frozenset(base + timedelta(days=rnd.randint(0, 800)) for _ in range(40))
    cal = WorkCalendar(days_off=off, extra_days=extra)
    for _ in range(40):
        a = base + timedelta(days=rnd.randint(-30, 700))
        b = a + timedelta(days=rnd.randint(-3, 400))
        walked = sum(1 for i in range((b - a).days + 1)
                     if cal.is_working_day(a + timedelta(days=i))) if b >= a else 0
        assert cal.working_days_between(a, b) == walked
        n = rnd.randint(1, 200)
        d, count = a, 0
        while True:
            if cal.is_working_day(d):
                count += 1
                if count >= n:
                    break
            d += timedelta(days=1)
        assert cal.nth_working_day_from(a, n) == d


PLAN_SITES: dict[str, str | None] = {"xa-phu-lam": "Huyện Tân Phú", "xa-la-nga": "Huyện Định Quán"}


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lich.csv"
    path.write_text(text, encoding="utf-8-sig")
    return path


def test_a_calendar_with_vietnamese_headers_and_every_scope(tmp_path: Path) -> None:
    path = _csv(tmp_path, "Ngày;Loại;Mã điểm;Đơn vị;Ghi chú\n"
                          "02/01/2026;nghỉ bù;;;Nghỉ bù Tết Dương lịch\n"
                          "10/01/2026;Làm bù;;huyện tân phú;Làm bù cho 02/01\n"
                          "2026-01-12;NGHI;xa-la-nga;;Mất điện\n")
    entries = read_calendar(path, PLAN_SITES)
    assert [(e.day, e.kind, e.scope_kind, e.scope) for e in entries] == [
        (date(2026, 1, 2), "off", "all", ""),
        (date(2026, 1, 10), "work", "unit", "Huyện Tân Phú"),  # the plan's spelling
        (date(2026, 1, 12), "off", "site", "xa-la-nga")]
    assert entries[0].note == "Nghỉ bù Tết Dương lịch"


def test_every_bad_cell_is_named_by_row_and_column(tmp_path: Path) -> None:
    path = _csv(tmp_path, "ngày,loại,mã điểm,đơn vị\n"
                          "31/02/2026,nghỉ,,\n"
                          "03/03/2026,đi chơi,,\n"
                          "04/03/2026,nghỉ,xa-khong-co,\n"
                          "05/03/2026,nghỉ,,Huyện Không Có\n"
                          "06/03/2026,nghỉ,xa-la-nga,Huyện Định Quán\n"
                          ",làm bù,,\n"
                          "07/03/2026,nghỉ,,\n"
                          "07/03/2026,làm bù,,\n")
    with pytest.raises(CalendarError) as err:
        read_calendar(path, PLAN_SITES)
    assert err.value.errors == [
        "dòng 2, cột ngày: ngày không hợp lệ '31/02/2026' (dd/mm/yyyy)",
        "dòng 3, cột loại: không rõ loại ngày 'đi chơi': dùng 'nghỉ' hoặc 'làm bù'",
        "dòng 4, cột mã điểm: điểm 'xa-khong-co' không có trong kế hoạch",
        "dòng 5, cột đơn vị: đơn vị 'Huyện Không Có' không có trong kế hoạch; có: "
        "Huyện Tân Phú, Huyện Định Quán",
        "dòng 6, cột mã điểm: chỉ ghi mã điểm hoặc đơn vị, không cả hai",
        "dòng 7, cột ngày: bắt buộc (required)",
        "dòng 9, cột ngày: ngày 07/03/2026 đã có ở dòng 8 cho cùng phạm vi",
    ]


def test_an_xlsx_calendar_and_a_missing_column(tmp_path: Path) -> None:
    wb = Workbook()
    ws = wb.active
    ws.append(["Ngày", "Loại", "Ghi chú"])
    ws.append([datetime(2026, 4, 27), "nghỉ bù", "Giỗ Tổ rơi vào Chủ nhật"])
    wb.save(tmp_path / "lich.xlsx")
    [entry] = read_calendar(tmp_path / "lich.xlsx", PLAN_SITES)
    assert (entry.day, entry.kind, entry.scope_kind) == (date(2026, 4, 27), "off", "all")
    with pytest.raises(CalendarError) as err:
        read_calendar(_csv(tmp_path, "ngày,ghi chú\n01/01/2026,x\n"), PLAN_SITES)
    assert err.value.errors[0].startswith("thiếu cột (missing column): kind (loại)")


def _gauge(collector, name: str, site: str) -> float | None:
    for family in collector.collect():
        if family.name == name:
            return next((x.value for x in family.samples if x.labels.get("site") == site),
                        None)
    return None


@pytest.mark.integration
def test_an_imported_calendar_moves_forecasts_reports_and_gauges(stack, tmp_path: Path) -> None:
    """Two sites scanning up to today; the unit of one stops for its next five working days
    and the province works the coming Saturday: the forecasts, the monthly report's working
    days and the /metrics gauges the alerts read all follow."""
    from consumers.metrics import ProgressCollector
    from consumers.monthly import build_monthly
    from consumers.progress import load_sites
    from consumers.synth import SynthConfig, generate
    from sohoa.config import CampaignConfig, PostgresConfig, Settings
    from tests.support.procs import run_sohoa
    from tests.support.progress_store import apply_events, as_role, fresh_db

    plain = WorkCalendar()
    today = datetime.now(UTC).astimezone(ZoneInfo("Asia/Ho_Chi_Minh")).date()
    events = generate(SynthConfig(sites=2, files_per_site=6, pages_per_file=10,
                                  start=today - timedelta(days=28), days=28, seed=3))
    dsn = fresh_db(stack, "calendar")
    with psycopg.connect(dsn) as conn:
        apply_events(conn, events, batch=400)
    deadline = today + timedelta(days=120)
    plan = tmp_path / "plan.csv"
    plan.write_text("site_id,unit,contractor,target_pages,target_files,deadline,name\n"
                    f"xa-0000,Huyện Tân Phú,Cty A,5000,50,{deadline:%d/%m/%Y},Xã Phú Lâm\n"
                    f"xa-0001,Huyện Định Quán,Cty A,5000,50,{deadline:%d/%m/%Y},Xã La Ngà\n",
                    encoding="utf-8")
    env = {**stack.env, "SOHOA_POSTGRES__DSN": dsn}
    assert run_sohoa(["campaign", "import", str(plan), "--start",
                      f"{today - timedelta(days=28):%d/%m/%Y}"], env).returncode == 0
    campaign = CampaignConfig()
    reader = as_role(dsn, "sohoa_reader")
    settings = Settings(postgres=PostgresConfig(dsn=reader), campaign=campaign)

    def sites() -> dict:
        with psycopg.connect(reader, autocommit=True) as conn:
            return {s.site_id: s for s in load_sites(conn, campaign)}

    before = sites()
    gauges_before = ProgressCollector(settings)
    forecast_before = _gauge(gauges_before, "sohoa_site_forecast_completion_timestamp_seconds",
                             "xa-0000")
    days_off = [plain.nth_working_day_from(today + timedelta(days=1), n) for n in range(1, 6)]
    saturday = today + timedelta(days=1)
    while saturday.weekday() != 5:
        saturday += timedelta(days=1)
    cal = tmp_path / "lich.csv"
    cal.write_text("ngày,loại,đơn vị,ghi chú\n"
                   + "".join(f"{d:%d/%m/%Y},nghỉ,Huyện Tân Phú,Kiểm kê kho\n" for d in days_off)
                   + f"{saturday:%d/%m/%Y},làm bù,,Làm bù\n", encoding="utf-8")
    bad = tmp_path / "sai.csv"
    bad.write_text("ngày,loại,mã điểm\n01/04/2026,nghỉ,xa-9999\n", encoding="utf-8")
    res = run_sohoa(["campaign", "calendar", "import", str(bad)], env)
    assert res.returncode == 2
    assert "dòng 2, cột mã điểm: điểm 'xa-9999' không có trong kế hoạch" in res.stderr
    res = run_sohoa(["campaign", "calendar", "import", str(cal)], env)
    assert res.returncode == 0, res.stderr
    shown = [" ".join(line.split()) for line in
             run_sohoa(["campaign", "calendar", "show"], env).stdout.splitlines()]
    assert f"{days_off[0]:%d/%m/%Y} ngày nghỉ đơn vị Huyện Tân Phú — Kiểm kê kho" in shown
    assert f"{saturday:%d/%m/%Y} ngày làm bù toàn tỉnh — Làm bù" in shown
    assert len(shown) == 6
    after = sites()
    a0, b0 = before["xa-0000"], after["xa-0000"]
    a1, b1 = before["xa-0001"], after["xa-0001"]
    assert a0.throughput_per_day > 0 and a0.remaining_pages > 0
    # Tân Phú: five working days fewer, one more (the Saturday).
    assert b0.working_days_left == a0.working_days_left - 4
    assert b0.required_per_day == pytest.approx(b0.remaining_pages / b0.working_days_left)
    assert b0.forecast_completion > a0.forecast_completion
    # Định Quán works the Saturday too: one more day, a forecast no later.
    assert b1.working_days_left == a1.working_days_left + 1
    assert b1.forecast_completion is not None and a1.forecast_completion is not None
    assert b1.forecast_completion <= a1.forecast_completion
    # The alerts' inputs: the consumer's gauges read the same calendar.
    gauges = ProgressCollector(settings)
    forecast_after = _gauge(gauges, "sohoa_site_forecast_completion_timestamp_seconds",
                            "xa-0000")
    assert forecast_after is not None and forecast_before is not None
    assert forecast_after > forecast_before
    assert _gauge(gauges, "sohoa_site_working_days_left", "xa-0000") == b0.working_days_left
    assert _gauge(gauges, "sohoa_site_required_pages_per_day", "xa-0000") == pytest.approx(
        b0.required_per_day)
    # The monthly report too.
    with psycopg.connect(reader, autocommit=True) as conn:
        rep = build_monthly(conn, campaign, today.year, today.month, today=today)
    row = next(r for r in rep.rows if r.site_id == "xa-0000")
    assert row.working_days_left == b0.working_days_left
    assert row.forecast == b0.forecast_completion
