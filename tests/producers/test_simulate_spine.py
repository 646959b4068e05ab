"""`sohoa simulate --through-spine`: simulated sites served by the real centre.

The integration test runs the real assembly app, QC app (OCR off: Tesseract would make the
test minutes long), consumer and PostgreSQL on a simulation stack, and checks the centre's
figures against the simulator's own count and against two independent ones: the page files on
disk and the PageScanned records on Kafka.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image

from producers.simulate_spine import (
    Ledger,
    NotSimulationStack,
    SiteLedger,
    check_simulation_stack,
    unique_jpeg,
)
from sohoa.config import Settings
from sohoa.work_calendar import WorkCalendar

SITES = 30


def _settings(db: str = "sohoa_sim", topic: str = "sohoa.sim.site-events",
              roots: str = "/srv/sim/{site_id}", watcher: str = "/srv/hot") -> Settings:
    return Settings.model_validate({
        "postgres": {"dsn": f"postgresql://u@127.0.0.1:5432/{db}"},
        "topics": {"site_events": topic},
        "sources": {"default_roots": [roots]},
        "watcher": {"roots": [watcher]},
    })


def test_only_a_stack_named_as_a_simulation_is_fed() -> None:
    root = Path("/srv/sim")
    check_simulation_stack(_settings(), root, ["xa-tan-phu"])  # named so: accepted
    refused = {
        "postgres.dsn": _settings(db="sohoa"),
        "cơ sở dữ liệu": _settings(db="simple"),  # a word "sim", not letters
        "topics.site_events": _settings(topic="sohoa.site-events"),
        "watcher.roots": _settings(watcher="/srv/sim/xa-tan-phu"),
        "sources.default_roots": _settings(roots="/srv/other/{site_id}"),
    }
    for what, settings in refused.items():
        with pytest.raises(NotSimulationStack, match=what.replace(".", r"\.")):
            check_simulation_stack(settings, root, ["xa-tan-phu"])


def test_unique_pages_keep_their_pixels_and_resolution() -> None:
    from producers.simulate import render_page

    base = render_page("s", "f", 1, (1240, 1754), 200)
    a, b = unique_jpeg(base, "xa-a HS1 1"), unique_jpeg(base, "xa-a HS1 2")
    assert a != b
    for data in (a, b):
        with Image.open(io.BytesIO(data)) as im:
            assert im.size == (1240, 1754) and round(im.info["dpi"][0]) == 200
            assert im.tobytes() == Image.open(io.BytesIO(base)).tobytes()


def test_the_comparison_names_what_differs() -> None:
    from producers.simulate_check import differences, expected_figures

    ledger = Ledger()
    ledger.sites["xa-a"] = SiteLedger(pages=3, pages_by_day=Counter({"2026-11-02": 3}),
                                      files_closed=1, pages_in_closed_files=3, files_clean=1,
                                      pages_in_clean_files=3,
                                      last_heartbeat_at="2026-11-02T03:00:00+00:00")
    want = expected_figures(ledger)
    same = json.loads(json.dumps(want))
    same["xa-a"]["last_heartbeat_at"] = "2026-11-02T10:00:00+07:00"  # the same instant
    assert differences(want, same, ledger, {}) == []
    short = json.loads(json.dumps(want))
    short["xa-a"]["pages"] = 2
    assert differences(want, short, ledger, {}) == ["xa-a pages: simulator 3, PostgreSQL 2"]
    assert differences(want, same, ledger, {"streams": 1}) == [
        "dead_letters: simulator {}, PostgreSQL {'streams': 1}"]


def _report_ledger() -> Ledger:
    ledger = Ledger(sent_on="2026-12-07", plan={
        "xa-a": {"target_pages": 250_000, "deadline": "2027-01-06"},
        "xa-b": {"target_pages": 900, "deadline": "2027-01-06"}})
    ledger.sites["xa-a"] = SiteLedger(
        pages=1_534, pages_by_day=Counter({"2026-11-30": 700, "2026-12-01": 834}),
        pages_in_clean_files=1_200)
    ledger.sites["xa-b"] = SiteLedger(pages=12, pages_by_day=Counter({"2026-12-01": 12}),
                                      pages_in_clean_files=5)
    return ledger


def test_the_report_comparison_reads_the_monthly_csv(tmp_path: Path) -> None:
    """The CSV an officer opens, read back: thousands separators, percentages, the total."""
    from datetime import date

    from consumers.monthly import ON_TRACK, MonthlyReport, MonthlyRow
    from consumers.monthly_doc import write_monthly
    from producers.simulate_reports import (
        TOTAL,
        expected_report,
        read_report_csv,
        report_differences,
        report_months,
    )

    ledger, today = _report_ledger(), date(2026, 12, 7)
    assert report_months(ledger, today) == [(2026, 11), (2026, 12)]

    def report(month: tuple[int, int], figures: dict[str, tuple[int, int, int, int]]):
        rows = [MonthlyRow(unit="huyen-an-phu", site_id=site, name=site, contractor="",
                           target_pages=ledger.plan[site]["target_pages"], in_month=m,
                           cumulative=c, accepted_in_month=am, accepted_cumulative=ac,
                           deadline=date(2027, 1, 6), planned_to_date=None, forecast=None,
                           assessment=ON_TRACK) for site, (m, c, am, ac) in figures.items()]
        out = write_monthly(MonthlyReport(*month, today, today, rows), "csv",
                            tmp_path / f"{month}.csv")
        return read_report_csv(out)

    nov = report((2026, 11), {"xa-a": (700, 700, 0, 0), "xa-b": (0, 0, 0, 0)})
    assert nov["xa-a"]["cumulative"] == 700 and nov[TOTAL]["target_pages"] == 250_900
    assert report_differences(expected_report(ledger, (2026, 11), today), nov, (2026, 11)) == []
    dec = report((2026, 12), {"xa-a": (834, 1_534, 1_200, 1_200), "xa-b": (12, 12, 5, 5)})
    assert dec["xa-a"]["completion"] == "0,6 %" and dec[TOTAL]["cumulative"] == 1_546
    assert report_differences(expected_report(ledger, (2026, 12), today), dec, (2026, 12)) == []
    # One accepted page short, and a site the simulator never played.
    dec = report((2026, 12), {"xa-a": (834, 1_534, 1_199, 1_200), "xa-b": (12, 12, 5, 5)})
    ledger.plan["xa-c"] = {"target_pages": 10, "deadline": "2027-01-06"}
    assert report_differences(expected_report(ledger, (2026, 12), today), dec, (2026, 12)) == [
        "report 2026-12 TỔNG CỘNG target_pages: simulator 250910, report 250900",
        "report 2026-12 TỔNG CỘNG accepted_in_month: simulator 1205, report 1204",
        "report 2026-12 xa-a accepted_in_month: simulator 1200, report 1199",
        "report 2026-12 xa-c: simulated, missing from the report"]


def test_accepted_pages_of_a_send_across_a_month_end_are_not_split_by_the_ledger() -> None:
    from datetime import date

    from producers.simulate_reports import expected_report

    ledger = _report_ledger()
    ledger.sent_on = "2026-11-30"  # verdicts on either side of the month's end
    dec = expected_report(ledger, (2026, 12), date(2026, 12, 1))
    assert dec["xa-a"]["accepted_cumulative"] == 1_200 and "accepted_in_month" not in dec["xa-a"]
    nov = expected_report(ledger, (2026, 11), date(2026, 12, 1))
    assert "accepted_cumulative" not in nov["xa-a"]
    ledger.sent_on = "2026-12-07"
    assert expected_report(ledger, (2026, 11), date(2026, 12, 7))["xa-a"][
        "accepted_cumulative"] == 0


def test_the_alerts_expected_follow_the_ledger_and_the_rules_thresholds() -> None:
    from datetime import date

    from producers.simulate_alerts import expected_alerts

    today = date(2026, 12, 9)  # a Wednesday
    ledger = Ledger(plan={
        "xa-on-track": {"target_pages": 40, "deadline": "2027-01-06"},
        "xa-late": {"target_pages": 100_000, "deadline": "2027-01-06"},
        "xa-done": {"target_pages": 20, "deadline": "2027-01-06"},
        "xa-overdue": {"target_pages": 21, "deadline": "2026-12-08"},
        "xa-idle": {"target_pages": 30, "deadline": "2027-01-06"}})
    for site in ("xa-on-track", "xa-late", "xa-done", "xa-overdue"):
        ledger.sites[site] = SiteLedger(pages=20, pages_by_day=Counter({"2026-12-08": 20}))
    qc = {"xa-qc": (60, 12), "xa-qc-few": (40, 12), "xa-qc-near-floor": (47, 10),
          "xa-qc-at-share": (60, 9), "xa-qc-unseen": (60, 30), "xa-qc-ok": (60, 5)}
    for site, (pages, failed) in qc.items():
        ledger.sites[site] = SiteLedger(pages=pages, failed_pages=failed)
    settings = Settings.model_validate({"campaign": {"forecast_window_days": 1}})
    ledger.malformed, ledger.malformed_at = 1, 10_000.0
    baseline = set(ledger.sites) - {"xa-qc-unseen"}
    want, undecided = expected_alerts(settings, ledger, today, baseline, 10_000.0 + 60)
    # On track: 20 left at 20 a day; idle: nothing scanned in the window, pages left.
    assert want["SohoaSiteBehindSchedule"] == {"xa-late", "xa-overdue", "xa-idle"}
    assert want["SohoaQcFailureRateHigh"] == {"xa-qc"}
    assert undecided["SohoaQcFailureRateHigh"] == {"xa-qc-near-floor", "xa-qc-at-share",
                                                   "xa-qc-unseen"}
    assert want["SohoaDeadLetters"] == {"assembly", "consumer"}
    # 15 min after the malformed event its dead letters may have left the rule's window.
    want, undecided = expected_alerts(settings, ledger, today, baseline, 10_000.0 + 900)
    assert not want["SohoaDeadLetters"] and undecided["SohoaDeadLetters"] == {
        "assembly", "consumer"}


def test_the_alert_comparison_names_what_differs(monkeypatch) -> None:
    from producers import simulate_alerts as sa

    ledger = Ledger()
    monkeypatch.setattr(sa, "query", lambda base, expr, at=None: [])  # no baseline needed
    monkeypatch.setattr(sa, "expected_alerts", lambda *a: (
        {"SohoaSiteBehindSchedule": {"xa-a"}, "SohoaQcFailureRateHigh": {"xa-q"},
         "SohoaDeadLetters": {"assembly", "consumer"}},
        {"SohoaQcFailureRateHigh": {"xa-u"}}))
    monkeypatch.setattr(sa, "observed_alerts", lambda base, at: {
        "SohoaSiteBehindSchedule": {"xa-b"}, "SohoaQcFailureRateHigh": {"xa-q", "xa-u"},
        "SohoaDeadLetters": {"consumer"}})
    c = sa.compare_alerts(Settings(), ledger, "http://127.0.0.1:9")
    assert c.differences == [
        "SohoaSiteBehindSchedule xa-a: simulator expects it, Prometheus does not fire",
        "SohoaSiteBehindSchedule xa-b: Prometheus fires, simulator does not expect it",
        "SohoaDeadLetters assembly: simulator expects it, Prometheus does not fire"]


def test_sites_above_the_demo_cap_need_the_spine() -> None:
    from click.testing import CliRunner

    from sohoa.cli import main

    res = CliRunner().invoke(main, ["simulate", "--sites", "3321"])
    assert res.exit_code == 2 and "--through-spine" in res.output
    res = CliRunner().invoke(main, ["simulate", "--help"])
    assert "--through-spine" in res.output and "--scale" in res.output


# --- the real spine ---------------------------------------------------------------------------


def _sim_topics(stack):
    import uuid

    from infra.topics import apply_spec, load_spec
    from sohoa.config import TopicsConfig

    suffix = uuid.uuid4().hex[:10]
    topics = TopicsConfig(site_events=f"sohoa.sim.site-events.{suffix}",
                          file_events=f"sohoa.sim.file-events.{suffix}",
                          dead_letters=f"sohoa.sim.dead-letters.{suffix}")
    apply_spec(stack.settings.kafka, load_spec(topics))
    return topics


def _page_scanned(stack, topic: str) -> list:
    """The valid PageScanned records on ``topic`` (the scenario's malformed one is not)."""
    from sohoa.events import InvalidEvent, PageScanned, parse_event
    from sohoa.kafka_clients import make_consumer

    consumer = make_consumer(stack.settings.kafka, topic, group_id=None,
                             consumer_timeout_ms=5000)
    out = []
    try:
        for m in consumer:
            try:
                ev = parse_event(m.value)
            except InvalidEvent:
                continue
            if isinstance(ev, PageScanned):
                out.append(ev)
    finally:
        consumer.close()
    return out


@pytest.mark.integration
def test_simulated_sites_through_the_real_spine(stack, tmp_path: Path) -> None:
    import psycopg

    from infra.procs import free_port
    from infra.scratch_prometheus import ScratchPrometheus
    from producers.simulate_alerts import active_alerts
    from producers.simulate_check import compare
    from tests.support.procs import run_sohoa, wait_for
    from tests.support.spine import Spine

    topics = _sim_topics(stack)
    pages_root = tmp_path / "pages"
    ports = {}
    for name in ("CONSUMER__METRICS_PORT", "STREAMS__WEB_PORT", "STREAMS__OCR_WEB_PORT"):
        ports[name] = str(free_port())
    spine = Spine(stack, tmp_path, "xa-khong-dung", **{
        **{f"SOHOA_{k}": v for k, v in ports.items()},
        # Gauges fresh within a second, so Prometheus sees each change in a few seconds.
        "SOHOA_CONSUMER__GAUGE_CACHE_S": "1",
        # One working day of pace: the ordinary sites are on track, the late one is not.
        "SOHOA_CAMPAIGN__FORECAST_WINDOW_DAYS": "1",
        "SOHOA_TOPICS__SITE_EVENTS": topics.site_events,
        "SOHOA_TOPICS__FILE_EVENTS": topics.file_events,
        "SOHOA_TOPICS__DEAD_LETTERS": topics.dead_letters,
        "SOHOA_POSTGRES__DSN": stack.new_database("sim"),
        "SOHOA_SOURCES__DEFAULT_ROOTS": json.dumps([f"{pages_root}/{{site_id}}"]),
        "SOHOA_SIMULATE__FILE_PAGES_MIN": "2",
        "SOHOA_SIMULATE__FILE_PAGES_MAX": "5",
        "SOHOA_LOGGING__JSON": "false",
    })
    prom = ScratchPrometheus(tmp_path, [f"127.0.0.1:{p}" for p in ports.values()])
    try:
        spine.start("consume", "assembly", "ocr")
        res = run_sohoa(["simulate", "--through-spine", "--sources-root", str(pages_root),
                         "--prometheus", prom.url,
                         "--sites", str(SITES), "--days", "2", "--pages-per-day", "400",
                         "--scale", "0.01", "--scenario", "boards", "--seed", "5",
                         "--plan-out", str(tmp_path / "plan.csv"),
                         "--drain-timeout", "240", "--json"], spine.env, timeout=600)
        assert res.stdout, res.stderr[-3000:]
        summary = json.loads(res.stdout)
        led = Ledger.from_json(summary["ledger"])
        pages = sum(s.pages for s in led.sites.values())
        closed = sum(s.files_closed for s in led.sites.values())
        print({k: v for k, v in summary.items() if k not in ("sites", "ledger")})
        assert summary["check"]["equal"], summary["check"]["differences"]
        assert res.returncode == 0, res.stderr[-3000:]
        # The alerts were checked, and the check had something to tell apart.
        roles = {r["site_id"]: r["role"] for r in summary["sites"]}
        alerts = summary["check"]["alerts"]
        print(alerts)
        assert alerts["equal"] and alerts["baseline_seen"] is True, alerts
        behind = set(alerts["expected"]["SohoaSiteBehindSchedule"])
        assert behind == set(alerts["observed"]["SohoaSiteBehindSchedule"])
        assert {s for s, r in roles.items() if r == "late"} <= behind, alerts
        assert not {s for s, r in roles.items() if r == "finished"} & behind, alerts
        assert alerts["observed"]["SohoaDeadLetters"] == ["assembly", "consumer"], alerts
        # Prometheus's own rule evaluation holds the same: pending for the alerts with a
        # `for:`, firing for the dead letters (none).
        active = wait_for(lambda: (a if (a := active_alerts(prom.url))[
            "SohoaSiteBehindSchedule"].keys() == behind else None), 30, "the rule evaluation")
        assert active["SohoaSiteBehindSchedule"] == dict.fromkeys(behind, "pending"), active
        assert active["SohoaDeadLetters"] == {"assembly": "firing", "consumer": "firing"}

        # The plan went into the stack's (simulation) database: status has every target.
        with (tmp_path / "plan.csv").open(encoding="utf-8") as fh:
            plan = {r["site_id"]: int(r["target_pages"]) for r in csv.DictReader(fh)}
        assert len(plan) == SITES
        assert dict(spine.sql("SELECT site_id, target_pages FROM sites")) == plan

        # The simulator's count is itself what was written and sent.
        on_disk = Counter(p.relative_to(pages_root).parts[0]
                          for p in pages_root.rglob("*.jpg") if not p.name.startswith("."))
        assert on_disk == Counter({k: s.pages for k, s in led.sites.items() if s.pages})
        scanned = _page_scanned(stack, topics.site_events)
        assert len(scanned) == pages == led.events["PageScanned"]
        assert {e.uri for e in scanned} == {p.as_uri() for p in pages_root.rglob("*.jpg")}
        # Simulated time: every page inside the campaign's working hours, none in the future.
        cal = WorkCalendar.from_campaign(Settings().campaign)
        assert all(cal.working_now(e.occurred_at) and e.occurred_at < datetime.now(UTC)
                   for e in scanned)
        assert len({e.occurred_at.astimezone(cal.tz).date() for e in scanned}) == 2
        # The shape the test needs: many sites, closed files, failed pages, a clean file. The
        # history ends with the working day that has begun, so its pages depend on the hour
        # the test runs (137 at 09:35 in Hà Nội on a Monday): the floor leaves room for that.
        assert len(on_disk) >= SITES - 2 and closed >= SITES and pages >= 3 * SITES
        assert 0 < sum(s.failed_pages for s in led.sites.values()) < pages
        assert 0 < sum(s.files_clean for s in led.sites.values()) < closed
        assert led.malformed == 1

        # The same comparison, here: equal now, and it fails once a page is dropped.
        settings = Settings()
        with pytest.MonkeyPatch.context() as mp:
            for k, v in spine.env.items():
                if k.startswith("SOHOA_"):
                    mp.setenv(k, v)
            settings = Settings()
        dsn = spine.env["SOHOA_POSTGRES__DSN"]
        assert compare(settings, led, dsn).equal
        _reports_follow_the_ledger(settings, led, dsn)
        _alerts_follow_the_ledger(settings, led, dsn, prom.url, summary)
        # A page lost between Kafka and its row (a passed page: nothing else changes).
        site, file_code, day = spine.sql(
            "SELECT site_id, file_code, scan_day FROM pages WHERE check_passed "
            "ORDER BY site_id, file_code LIMIT 1")[0]
        with psycopg.connect(dsn, autocommit=True) as conn:
            dropped = conn.execute(
                "DELETE FROM pages WHERE ctid IN (SELECT ctid FROM pages WHERE site_id = %s "
                "AND file_code = %s AND check_passed LIMIT 1)", (site, file_code)).rowcount
        assert dropped == 1
        diff = compare(settings, led, dsn).differences
        n, by_day = led.sites[site].pages, dict(led.sites[site].pages_by_day)
        assert len(diff) == 2, diff
        assert diff[0] == f"{site} pages: simulator {n}, PostgreSQL {n - 1}", diff
        assert diff[1].startswith(f"{site} pages_by_day: simulator {by_day!r}"), diff
        assert f"'{day.isoformat()}': {by_day[day.isoformat()] - 1}" in diff[1], diff
    finally:
        spine.stop_all()
        prom.stop()
    assert os.path.isdir(pages_root)


def _reports_follow_the_ledger(settings, led: Ledger, dsn: str) -> None:
    """The monthly report agrees with the ledger, and a day's count one short shows in it."""
    import psycopg

    from producers.simulate_reports import TOTAL, compare_reports

    assert compare_reports(settings, led, dsn) == []
    site, day = next((k, d) for k, s in sorted(led.sites.items()) if k in led.plan
                     for d, n in sorted(s.pages_by_day.items()) if n >= 2)
    month = day[:7]
    n = sum(k for d, k in led.sites[site].pages_by_day.items() if d.startswith(month))
    sql = "UPDATE daily_progress SET pages_scanned = pages_scanned + %s WHERE site_id = %s " \
          "AND day = %s"
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute(sql, (-1, site, day)).rowcount == 1
        try:
            diff = compare_reports(settings, led, dsn)
        finally:
            conn.execute(sql, (1, site, day))
    assert f"report {month} {site} in_month: simulator {n}, report {n - 1}" in diff, diff
    assert any(d.startswith(f"report {month} {site} cumulative: ") for d in diff), diff
    assert any(d.startswith(f"report {month} {TOTAL} in_month: ") for d in diff), diff
    assert all(f" {site} " in d or f" {TOTAL} " in d for d in diff), diff
    assert compare_reports(settings, led, dsn) == []


def _alerts_follow_the_ledger(settings, led: Ledger, dsn: str, prom: str,
                              summary: dict) -> None:
    """Behind schedule fires for exactly the expected sites: a late site made to look done
    stops it (expected, not fired), an on-track site given a far larger plan starts it."""
    import psycopg

    from producers.simulate_alerts import compare_alerts
    from tests.support.procs import wait_for

    assert compare_alerts(settings, led, prom).equal
    behind = set(summary["check"]["alerts"]["expected"]["SohoaSiteBehindSchedule"])
    late = sorted(behind)[0]
    on_track = next(k for k, s in sorted(led.sites.items())
                    if k in led.plan and k not in behind and s.pages)
    name = "SohoaSiteBehindSchedule"
    want = [f"{name} {late}: simulator expects it, Prometheus does not fire",
            f"{name} {on_track}: Prometheus fires, simulator does not expect it"]
    sql = "UPDATE sites SET target_pages = %s WHERE site_id = %s"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql, (led.sites[late].pages, late))
        conn.execute(sql, (led.plan[on_track]["target_pages"] * 1000, on_track))
        try:
            got = wait_for(lambda: (d if sorted(d := compare_alerts(
                settings, led, prom).differences) == sorted(want) else None), 60,
                "the altered plan to show in the alerts", interval=1.0)
        finally:
            for site in (late, on_track):
                conn.execute(sql, (led.plan[site]["target_pages"], site))
    assert sorted(got) == sorted(want)
    wait_for(lambda: compare_alerts(settings, led, prom).equal, 60,
             "the alerts to follow the restored plan", interval=1.0)
