"""`sohoa simulate`: the campaign model (unit) and its traffic through a real broker."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from producers.simulate import (
    SITE_EVENT_TYPES,
    HotFolderSink,
    build_campaign,
    malformed_event,
    render_page,
    write_plan,
)
from sohoa.config import CampaignConfig, Settings
from sohoa.events import (
    FileVerdict,
    InvalidEvent,
    PageChecked,
    PageScanned,
    SiteHeartbeat,
    Verdict,
    parse_event,
)
from sohoa.work_calendar import WorkCalendar, is_holiday
from tests.support.progress_store import scalar

# Friday 20 Nov 2026, 15:00 in Hà Nội.
END = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def _camp(**kw):
    args = {"sites": 7, "days": 10, "scenario": "boards", "seed": 3, "pages_per_day": 200,
            "results": True, "end": END}
    args.update(kw)
    settings = args.pop("settings", Settings())
    return build_campaign(settings, **args)


def _by_role(camp):
    return {r.spec.role: r for r in camp.runs}


def test_pages_only_in_working_time_never_on_tet() -> None:
    # Ten working days before 27 Feb 2026 span Tết (16–20 Feb 2026) and two weekends.
    camp = _camp(end=datetime(2026, 2, 27, 9, 0, tzinfo=UTC), scenario="none")
    cal = camp.calendar
    days = set()
    for run in camp.runs:
        for _t, ev in run.events:
            if not isinstance(ev, PageScanned):
                continue
            local = ev.occurred_at.astimezone(cal.tz)
            days.add(local.date())
            assert local.weekday() < 5, local
            assert not is_holiday(local.date()), local
            assert time(7, 30) <= local.time() < time(17, 0), local
            assert not time(11, 30) <= local.time() < time(13, 30), local
    assert days, "no pages at all"
    assert not any(d.month == 2 and 16 <= d.day <= 20 for d in days)
    assert len(days) == 10


def test_calendar_follows_campaign_config() -> None:
    cal = WorkCalendar.from_campaign(CampaignConfig(workdays=[0, 1, 2, 3, 4, 5, 6],
                                                    work_start=time(0, 0),
                                                    work_end=time(23, 59, 59),
                                                    lunch_start=time(12), lunch_end=time(12)))
    saturday = datetime(2026, 11, 21).date()
    assert cal.day_intervals(saturday)[0][1] - cal.day_intervals(saturday)[0][0] == \
        timedelta(hours=23, minutes=59, seconds=59)
    default = WorkCalendar()
    assert default.day_intervals(saturday) == []
    assert len(default.day_intervals(saturday - timedelta(days=1))) == 2  # morning, afternoon
    assert default.working_seconds_per_day() == 7.5 * 3600


def test_deterministic_for_a_seed() -> None:
    a, b, c = _camp(), _camp(), _camp(seed=4)
    ids = [[ev.event_id for _t, ev in r.events] for r in a.runs]
    assert ids == [[ev.event_id for _t, ev in r.events] for r in b.runs]
    assert a.summary() == b.summary()
    assert ids != [[ev.event_id for _t, ev in r.events] for r in c.runs]


def test_every_event_honours_the_contract() -> None:
    camp = _camp(sites=6, days=2)
    counts: Counter[str] = Counter()
    for run in camp.runs:
        for _t, ev in run.events:
            again = parse_event(ev.to_json())
            assert again == ev
            counts[ev.NAME] += 1
            if ev.NAME != "SiteHeartbeat":
                assert ev.key() == f"{ev.site_id}/{ev.fonds}/{ev.file_code}"
    for name in ("PageScanned", "FileClosed", "SiteHeartbeat", "FileAssembled", "PageChecked",
                 "OcrCompleted", "FileVerdict"):
        assert counts[name] > 0, name
    with pytest.raises(InvalidEvent):
        parse_event(malformed_event("xa-tan-phu"))


def test_scenario_roles() -> None:
    camp = _camp()
    roles = _by_role(camp)
    assert set(roles) == {"normal", "stalled", "offline", "late", "qc", "finished"}
    cfg = Settings().simulate

    # Stalled: no page for the last stall_hours of wall time; its agent still reports.
    stalled = roles["stalled"]
    assert stalled.last_page_at <= END - timedelta(hours=cfg.stall_hours)
    hb = [ev for _t, ev in stalled.events if isinstance(ev, SiteHeartbeat)]
    assert hb[-1].occurred_at == END and hb[-1].oldest_unsent_age_s < 1800

    # Offline: pages stay in the outbox; the last heartbeat says how many and how old.
    offline = roles["offline"]
    hb = [ev for _t, ev in offline.events if isinstance(ev, SiteHeartbeat)]
    assert offline.pages_unsent > 0
    assert hb[-1].outbox_depth == offline.pages_unsent
    assert hb[-1].oldest_unsent_age_s > 1800
    sent = [ev for _t, ev in offline.events if isinstance(ev, PageScanned)]
    assert max(ev.occurred_at for ev in sent) < END - timedelta(hours=cfg.outage_hours)

    # Late: the plan needs far more than its pace; ordinary sites need less than theirs.
    days_left = camp.calendar.working_days_between(END.date() + timedelta(days=1), camp.deadline)
    late = roles["late"]
    assert late.target_pages - late.pages_sent > 2 * late.spec.pages_per_day * days_left
    normal = roles["normal"]
    assert normal.target_pages - normal.pages_sent < 0.5 * normal.spec.pages_per_day * days_left

    # Finished: planned exactly what it scanned, and stopped two days ago.
    fin = roles["finished"]
    assert fin.target_pages == fin.pages_sent and fin.pages_unsent == 0
    assert fin.last_page_at <= END - timedelta(days=2)

    # High QC failure rate, visible in the page checks and the verdicts.
    for run, low, high in ((roles["qc"], 0.2, 0.5), (normal, 0.0, 0.06)):
        checks = [ev for _t, ev in run.events if isinstance(ev, PageChecked)]
        share = sum(not c.passed for c in checks) / len(checks)
        assert low < share < high, (run.spec.role, share)
    verdicts = Counter(ev.verdict for _t, ev in roles["qc"].events
                       if isinstance(ev, FileVerdict))
    assert verdicts[Verdict.NEEDS_RESCAN] + verdicts[Verdict.REJECTED] > verdicts[Verdict.ACCEPTED]


def test_recent_files_wait_for_ocr() -> None:
    """Files closed within ocr_lag_s of the end have no verdict yet: the OCR backlog."""
    camp = _camp(scenario="none", sites=4, days=2)
    waiting = 0
    for run in camp.runs:
        closed = {ev.file_code: t for t, ev in run.events if ev.NAME == "FileClosed"}
        judged = {ev.file_code for _t, ev in run.events if ev.NAME == "FileVerdict"}
        lag = timedelta(seconds=Settings().simulate.ocr_lag_s)
        assert {c for c, t in closed.items() if t + lag <= END} == judged
        waiting += len(set(closed) - judged)
    assert waiting > 0, "no backlog at all"


def test_live_part_is_paced_and_stamped_now() -> None:
    """--live: simulated time is compressed by --speed and events carry the real send time."""
    from producers.simulate import merged, send_live

    all_day = CampaignConfig(workdays=list(range(7)), work_start=time(0),
                             work_end=time(23, 59, 59), lunch_start=time(12),
                             lunch_end=time(12))
    settings = Settings(campaign=all_day)
    now = datetime.now(UTC)
    camp = build_campaign(settings, sites=2, days=0, scenario="none", seed=1,
                          pages_per_day=2000, results=False, end=now, live_s=1.5,
                          speed=3600)
    live = merged(camp.runs, after=camp.end)
    assert sum(isinstance(ev, PageScanned) for _t, ev in live) > 20

    class ListSink:
        def __init__(self) -> None:
            self.events: list = []

        def send(self, ev) -> None:
            self.events.append(ev)

    sink = ListSink()
    began = datetime.now(UTC)
    send_live(sink, live, camp.end, 3600, lambda n: None)
    ended = datetime.now(UTC)
    assert len(sink.events) == len(live)
    stamps = [ev.occurred_at for ev in sink.events]
    assert stamps == sorted(stamps)
    assert began <= stamps[0] and stamps[-1] <= ended
    assert (ended - began).total_seconds() >= 1.0  # 1.5 h of site time took ~1.5 s
    beats = [ev.event_id for ev in sink.events if isinstance(ev, SiteHeartbeat)]
    assert len(beats) == len(set(beats))
    # Pages keep the id of their fact: a re-run would not count them twice.
    assert [ev.event_id for ev in sink.events if isinstance(ev, PageScanned)] == \
        [ev.event_id for _t, ev in live if isinstance(ev, PageScanned)]


def test_plan_csv(tmp_path: Path) -> None:
    camp = _camp()
    path = tmp_path / "plan.csv"
    write_plan(path, camp.plan_rows())
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    assert list(rows[0]) == ["site_id", "unit", "contractor", "target_pages", "target_files",
                             "deadline"]
    assert [r["site_id"] for r in rows] == [r.spec.site_id for r in camp.runs]
    assert all(int(r["target_pages"]) >= 0 and r["deadline"] == camp.deadline.isoformat()
               for r in rows)


def test_hot_folder_pages_are_real_unique_images(tmp_path: Path) -> None:
    settings = Settings()
    camp = _camp(sites=6, days=1, results=False)
    sink = HotFolderSink(tmp_path, settings)
    sink.fail_share = {camp.runs[-2].spec.site_id: 1.0}  # the qc site: every page 150 dpi
    events = [ev for _t, ev in camp.runs[0].events + camp.runs[-2].events][:400]
    for ev in events:
        sink.send(ev)
    pages = sorted(tmp_path.rglob("*.jpg"))
    assert len(pages) == sum(isinstance(ev, PageScanned) for ev in events) == sink.written
    assert not list(tmp_path.rglob(".*.part"))
    assert list(tmp_path.rglob(settings.watcher.close_marker))
    digests = set()
    for p in pages[:30] + pages[-30:]:
        data = p.read_bytes()
        digests.add(hash(data))
        with Image.open(io.BytesIO(data)) as im:
            assert im.mode == "RGB" and im.format == "JPEG"
            dpi = round(im.info["dpi"][0])
            site = p.relative_to(tmp_path).parts[0]
            assert dpi == (150 if site == camp.runs[-2].spec.site_id else 200)
    assert len(digests) == len(pages[:30] + pages[-30:])
    # An existing scan is never rewritten.
    before = pages[0].read_bytes()
    first = next(ev for ev in events if isinstance(ev, PageScanned))
    pages[0].write_bytes(before + b"x")
    sink.send(first)
    assert pages[0].read_bytes() == before + b"x"


def test_render_page_size_and_resolution() -> None:
    data = render_page("xa-a", "HS00001", 1, (1240, 1754), 200)
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == (1240, 1754)
        # 1240 px at 200 dpi = 157 mm: inside the TT 02 page-size window of the QC config.
        assert 140 <= 1240 / 200 * 25.4 <= 440


def test_cli_help_and_bad_option() -> None:
    from sohoa.cli import main

    runner = CliRunner()
    res = runner.invoke(main, ["simulate", "--help"])
    assert res.exit_code == 0 and "--hot-folder" in res.output and "Mô phỏng" in res.output
    res = runner.invoke(main, ["simulate", "--sites", "0"])
    assert res.exit_code == 2 and "--sites" in res.output


def test_cli_hot_folder_run(tmp_path: Path) -> None:
    env = {**os.environ, "SOHOA_LOGGING__JSON": "false"}
    res = subprocess.run(
        [sys.executable, "-m", "sohoa.cli", "simulate", "--sites", "2", "--days", "1",
         "--pages-per-day", "20", "--scenario", "none", "--hot-folder", str(tmp_path / "hf"),
         "--plan-out", str(tmp_path / "plan.csv"), "--json"],
        capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert len(list((tmp_path / "hf").rglob("*.jpg"))) == sum(
        s["pages_sent"] for s in summary["sites"])
    assert (tmp_path / "plan.csv").exists()


# --- against the real broker ----------------------------------------------------------------


@pytest.mark.integration
def test_simulate_sends_everything_to_kafka(stack, tmp_path: Path) -> None:
    from sohoa.kafka_clients import make_consumer

    topics = stack.new_topics()
    env = {**os.environ, **stack.env, **sim_topics_env(topics), "SOHOA_LOGGING__JSON": "false"}
    res = subprocess.run(
        [sys.executable, "-m", "sohoa.cli", "simulate", "--sites", "6", "--days", "2",
         "--pages-per-day", "60", "--scenario", "boards", "--seed", "7", "--json"],
        capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    expected = sum(s["events"] for s in summary["sites"])

    consumer = make_consumer(stack.settings.kafka, topics.site_events, topics.file_events,
                             group_id=f"t-sim-{topics.site_events[-10:]}",
                             consumer_timeout_ms=10_000)
    seen: Counter[str] = Counter()
    invalid = 0
    try:
        for rec in consumer:
            try:
                ev = parse_event(rec.value)
            except InvalidEvent:
                invalid += 1
                continue
            want = topics.site_events if ev.NAME in SITE_EVENT_TYPES else topics.file_events
            assert rec.topic == want
            assert rec.key.decode() == ev.key()
            seen[ev.NAME] += 1
    finally:
        consumer.close()
    assert sum(seen.values()) == expected
    assert invalid == 1  # the scenario's one malformed vendor event
    assert seen["PageScanned"] == sum(s["pages_sent"] for s in summary["sites"])


@pytest.mark.integration
def test_hot_folder_pages_go_through_the_real_agent(stack, tmp_path: Path) -> None:
    """Images written by `sohoa simulate --hot-folder` are accepted by `sohoa watch`."""
    from tests.support.procs import run_sohoa
    from tests.support.watch_helpers import agent_env, hot, of_type, read_topic

    env = agent_env(stack, tmp_path, site="xa-tan-phu")
    root = hot(env).parent / "sim"
    res = run_sohoa(["simulate", "--sites", "1", "--days", "1", "--pages-per-day", "12",
                     "--scenario", "none", "--seed", "2", "--hot-folder", str(root),
                     "--json"], env, timeout=300)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    site = summary["sites"][0]
    assert site["site_id"] == "xa-tan-phu" and site["pages_sent"] > 0
    res = run_sohoa(["watch", "--once", "--root", str(root / "xa-tan-phu")], env, timeout=300)
    assert res.returncode == 0, res.stderr
    events = read_topic(stack, env["SOHOA_TOPICS__SITE_EVENTS"])
    pages = of_type(events, "PageScanned")
    assert len(pages) == site["pages_sent"]
    assert {p.site_id for p in pages} == {"xa-tan-phu"}
    assert len({p.sha256 for p in pages}) == len(pages)
    assert not any(e.NAME == "DeadLetter" for e in events)
    closed = of_type(events, "FileClosed")
    assert len(closed) == site["files_closed"]


def sim_topics_env(topics, prefix: str = "SOHOA_SIMULATE__TOPICS__") -> dict[str, str]:
    return {f"{prefix}SITE_EVENTS": topics.site_events,
            f"{prefix}FILE_EVENTS": topics.file_events,
            f"{prefix}DEAD_LETTERS": topics.dead_letters}


def records_on(stack, topics) -> int:
    from kafka import TopicPartition

    from sohoa.kafka_clients import make_consumer

    c = make_consumer(stack.settings.kafka, group_id=None)
    try:
        total = 0
        for name in (topics.site_events, topics.file_events, topics.dead_letters):
            parts = [TopicPartition(name, p) for p in c.partitions_for_topic(name) or ()]
            total += sum(c.end_offsets(parts).values()) if parts else 0
        return total
    finally:
        c.close()


@pytest.mark.integration
def test_simulation_never_reaches_the_real_topics_or_database(stack, tmp_path: Path) -> None:
    """Simulated pages go to the simulation's topics and database only; a configuration that
    would send them where the real workers read, or import the plan into the real database, or
    write pages into a real agent's hot folder, is refused before anything is sent."""
    import psycopg

    from tests.support.procs import run_sohoa

    real, sim = stack.new_topics(), stack.new_topics()
    real_db, sim_db = stack.new_database("real"), stack.new_database("sim")
    hot = tmp_path / "hot"
    env = {**stack.env, **sim_topics_env(real, "SOHOA_TOPICS__"), **sim_topics_env(sim),
           "SOHOA_POSTGRES__DSN": real_db, "SOHOA_SIMULATE__POSTGRES_DSN": sim_db,
           "SOHOA_WATCHER__ROOTS": json.dumps([str(hot)]), "SOHOA_LOGGING__JSON": "false"}
    for dsn in (real_db, sim_db):
        assert run_sohoa(["db", "migrate"], {**env, "SOHOA_POSTGRES__DSN": dsn}).returncode == 0
    args = ["simulate", "--sites", "3", "--days", "1", "--pages-per-day", "30", "--seed", "4",
            "--plan-out", str(tmp_path / "plan.csv"), "--json"]
    res = run_sohoa(args, env, timeout=300)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)

    def sites(dsn: str) -> int:
        with psycopg.connect(dsn) as conn:
            return scalar(conn, "SELECT count(*) FROM sites")

    assert records_on(stack, real) == 0
    assert records_on(stack, sim) >= sum(s["events"] for s in summary["sites"]) > 0
    assert sites(real_db) == 0 and sites(sim_db) == len(summary["sites"])

    refused = {
        "simulate.topics": {"SOHOA_SIMULATE__TOPICS__SITE_EVENTS": real.site_events},
        "simulate.topics ": {"SOHOA_SIMULATE__TOPICS__FILE_EVENTS": "sohoa.file-events"},
        "simulate.postgres_dsn": {"SOHOA_SIMULATE__POSTGRES_DSN": real_db},
    }
    for what, override in refused.items():
        res = run_sohoa(args, {**env, **override}, timeout=300)
        assert res.returncode != 0 and what.strip() in res.stderr, (what, res.stderr)
    res = run_sohoa(["simulate", "--sites", "1", "--days", "1", "--hot-folder",
                     str(hot / "sim")], env, timeout=300)
    assert res.returncode != 0 and "watcher.roots" in res.stderr, res.stderr
    assert not (hot / "sim").exists()
    assert records_on(stack, real) == 0 and sites(real_db) == 0


def test_a_slow_site_keeps_its_pace_across_nights() -> None:
    # 0.1 page a working day: the time to the next page is longer than any working interval,
    # so it must carry over nights and breaks (a national run scaled down to minutes).
    camp = _camp(sites=40, days=22, scenario="none", pages_per_day=0.1)
    pages = sum(r.pages_sent for r in camp.runs)
    assert 40 * 22 * 0.1 * 0.7 < pages < 40 * 22 * 0.1 * 1.3, pages


@pytest.mark.parametrize("end", [
    datetime(2026, 12, 6, 17, 33, tzinfo=UTC),  # Monday 00:33 in Hà Nội, before the office opens
    datetime(2026, 12, 5, 10, 0, tzinfo=UTC),  # Saturday
])
def test_history_ends_with_the_last_working_day_that_has_begun(end: datetime) -> None:
    camp = _camp(sites=1, days=1, scenario="none", pages_per_day=50, end=end)
    cal = camp.calendar
    days = {t.astimezone(cal.tz).date() for r in camp.runs for t, e in r.events
            if isinstance(e, PageScanned)}
    assert days == {date(2026, 12, 4)}  # Friday
    two = _camp(sites=1, days=2, scenario="none", pages_per_day=50, end=end)
    assert {t.astimezone(cal.tz).date() for r in two.runs for t, e in r.events
            if isinstance(e, PageScanned)} == {date(2026, 12, 3), date(2026, 12, 4)}
