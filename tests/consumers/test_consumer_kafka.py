"""`sohoa consume` as a real process between a real Kafka broker and a real PostgreSQL:
crashes, database restarts, duplicates and reordering all end in the tables of an orderly run."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path

import psycopg
import pytest

from consumers.synth import SynthConfig, generate
from sohoa.events import DeadLetter, Event, PageScanned, parse_event
from sohoa.kafka_clients import make_consumer, make_producer
from tests.support.procs import SohoaProcess, run_sohoa, wait_for
from tests.support.progress_store import (
    apply_events,
    assert_same_tables,
    dump,
    fresh_db,
    scalar,
    shuffle_within_keys,
)
from tests.support.typed_events import each

pytestmark = pytest.mark.integration

SITE_EVENT_TYPES = {"PageScanned", "PageRemoved", "FileManifest", "FileClosed", "SiteHeartbeat"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def consumer_env(stack, **extra: str) -> dict[str, str]:
    topics = stack.new_topics()
    env = {
        **stack.env,
        "SOHOA_TOPICS__SITE_EVENTS": topics.site_events,
        "SOHOA_TOPICS__FILE_EVENTS": topics.file_events,
        "SOHOA_TOPICS__DEAD_LETTERS": topics.dead_letters,
        # Migrated by the owner, consumed by the writer, gauges read by the reader.
        **stack.database_env("consume"),
        "SOHOA_CONSUMER__GROUP_ID": f"progress-{uuid.uuid4().hex[:8]}",
        "SOHOA_CONSUMER__METRICS_PORT": str(_free_port()),
        "SOHOA_CONSUMER__GAUGE_CACHE_S": "0",
        "SOHOA_LOGGING__JSON": "true",
    }
    env.update(extra)
    return env


def produce(stack, env: dict[str, str], events: Sequence[Event]) -> None:
    producer = make_producer(stack.settings.kafka)
    try:
        for e in events:
            topic = (env["SOHOA_TOPICS__SITE_EVENTS"] if e.NAME in SITE_EVENT_TYPES
                     else env["SOHOA_TOPICS__FILE_EVENTS"])
            producer.send(topic, key=e.key(), value=e.to_json())
        producer.flush(timeout=60)
    finally:
        producer.close()


def end_offsets(stack, topics: Sequence[str]) -> dict[tuple[str, int], int]:
    from kafka import TopicPartition

    c = make_consumer(stack.settings.kafka, group_id=None)
    try:
        tps = [TopicPartition(t, p) for t in topics for p in c.partitions_for_topic(t) or ()]
        return {(tp.topic, tp.partition): o for tp, o in c.end_offsets(tps).items() if o}
    finally:
        c.close()


def caught_up(env: dict[str, str], target: dict[tuple[str, int], int]) -> bool:
    try:
        with psycopg.connect(env["SOHOA_POSTGRES__DSN"], connect_timeout=3) as conn:
            got = {(t, p): o for t, p, o in conn.execute(
                "SELECT topic, part, next_offset FROM consumer_offsets WHERE group_id = %s",
                (env["SOHOA_CONSUMER__GROUP_ID"],))}
    except psycopg.Error:
        return False
    return all(got.get(k, 0) >= v for k, v in target.items())


def applied_count(env: dict[str, str]) -> int:
    try:
        with psycopg.connect(env["SOHOA_POSTGRES__DSN"], connect_timeout=3) as conn:
            return scalar(conn, "SELECT count(*) FROM audit_log")
    except psycopg.Error:
        return -1


def reference(stack, events: Sequence[Event]) -> dict:
    dsn = fresh_db(stack, "ref")
    with psycopg.connect(dsn) as conn:
        apply_events(conn, events, batch=1000)
    return dump(dsn)


def history(seed: int, sites: int = 4) -> list[Event]:
    return generate(SynthConfig(sites=sites, files_per_site=10, pages_per_file=20, seed=seed))


def start(env: dict[str, str], tmp_path: Path, name: str) -> SohoaProcess:
    return SohoaProcess(["consume"], env, tmp_path / "logs" / f"{name}.log")


def run_in_thread(pc) -> tuple[threading.Thread, list[BaseException]]:
    """``pc.run()`` in a thread; the list gets what it raised, if anything."""
    crashed: list[BaseException] = []

    def run() -> None:
        try:
            pc.run()
        except BaseException as exc:
            crashed.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, crashed


def test_kill_9_mid_batch_then_restart_ends_exact(stack, tmp_path: Path) -> None:
    events = history(seed=21)
    expected = reference(stack, events)
    env = consumer_env(stack, SOHOA_CONSUMER__BATCH_MAX_EVENTS="40",
                       SOHOA_CONSUMER__BATCH_MAX_MS="50")
    assert run_sohoa(["db", "migrate"], env).returncode == 0
    produce(stack, env, events)
    target = end_offsets(stack, [env["SOHOA_TOPICS__SITE_EVENTS"],
                                 env["SOHOA_TOPICS__FILE_EVENTS"]])
    kills_mid_stream = 0
    for round_ in range(3):
        proc = start(env, tmp_path, f"consume-{round_}")
        floor = applied_count(env)
        # Kill while it is busy: after it has applied more, before it has applied all.
        def busy(f: int = floor) -> bool:
            return applied_count(env) > f + 100

        wait_for(busy, 120, "the consumer applying events", (proc,), interval=0.05)
        done = caught_up(env, target)
        proc.kill9()
        if done:
            break
        kills_mid_stream += 1
    assert kills_mid_stream >= 1, "the consumer finished before it could be killed"
    proc = start(env, tmp_path, "consume-final")
    try:
        wait_for(lambda: caught_up(env, target), 180, "the consumer to catch up", (proc,))
    finally:
        proc.stop()
    assert_same_tables(expected, dump(env["SOHOA_POSTGRES__DSN"]))


def test_postgres_restart_during_load_waits_and_ends_exact(stack, tmp_path: Path) -> None:
    events = history(seed=22)
    expected = reference(stack, events)
    env = consumer_env(stack, SOHOA_CONSUMER__BATCH_MAX_EVENTS="50",
                       SOHOA_CONSUMER__BATCH_MAX_MS="50")
    assert run_sohoa(["db", "migrate"], env).returncode == 0
    half = len(events) // 2
    proc = start(env, tmp_path, "consume")
    try:
        produce(stack, env, events[:half])
        wait_for(lambda: applied_count(env) > 50, 120, "the consumer applying events", (proc,),
                 interval=0.05)
        stack.stop_postgres()
        try:
            produce(stack, env, events[half:])  # the load goes on while the database is down
            time.sleep(3)
            assert proc.alive(), proc.tail()
        finally:
            stack.start_postgres()
        target = end_offsets(stack, [env["SOHOA_TOPICS__SITE_EVENTS"],
                                     env["SOHOA_TOPICS__FILE_EVENTS"]])
        wait_for(lambda: caught_up(env, target), 180, "the consumer to reconnect and catch up",
                 (proc,))
    finally:
        proc.stop()
    assert_same_tables(expected, dump(env["SOHOA_POSTGRES__DSN"]))
    assert "postgres" in proc.tail(400)  # it said why it waited


def test_every_event_twice_and_shuffled_within_keys_ends_exact(stack, tmp_path: Path) -> None:
    events = history(seed=23, sites=3)
    expected = reference(stack, events)
    env = consumer_env(stack, SOHOA_CONSUMER__BATCH_MAX_EVENTS="300")
    assert run_sohoa(["db", "migrate"], env).returncode == 0
    produce(stack, env, shuffle_within_keys(list(events) * 2, seed=9))
    target = end_offsets(stack, [env["SOHOA_TOPICS__SITE_EVENTS"],
                                 env["SOHOA_TOPICS__FILE_EVENTS"]])
    proc = start(env, tmp_path, "consume")
    try:
        wait_for(lambda: caught_up(env, target), 180, "the consumer to catch up", (proc,))
        metrics = _metrics(env)
    finally:
        proc.stop()
    assert_same_tables(expected, dump(env["SOHOA_POSTGRES__DSN"]))
    dup = [ln for ln in metrics.splitlines() if ln.startswith("sohoa_consumer_duplicates_total")]
    assert dup and float(dup[0].split()[-1]) == len(events)


def _metrics(env: dict[str, str]) -> str:
    url = f"http://127.0.0.1:{env['SOHOA_CONSUMER__METRICS_PORT']}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.read().decode()
    except OSError:
        return ""


def test_bad_input_is_dead_lettered_and_metrics_and_status_show_progress(
        stack, tmp_path: Path) -> None:
    env = consumer_env(stack)
    assert run_sohoa(["db", "migrate"], env).returncode == 0
    proc = start(env, tmp_path, "consume")
    good = PageScanned.make(site_id="xa-tan-phu", file_code="HS-1", document="001.tif",
                            number=1, uri="file:///hot/HS-1/001.tif", sha256="c" * 64,
                            size_bytes=9, media_type="image/tiff")
    producer = make_producer(stack.settings.kafka)
    try:
        producer.send(env["SOHOA_TOPICS__SITE_EVENTS"], key="xa-tan-phu//HS-1",
                      value=b'{"schema": {"name": "PageScanned", "version": 1}}')
        producer.send(env["SOHOA_TOPICS__SITE_EVENTS"], key=good.key(), value=good.to_json())
        # A dead letter from another component (streams) is stored for the boards too.
        other = DeadLetter(site_id="xa-tan-phu", source="streams", reason="ocr gave up")
        producer.send(env["SOHOA_TOPICS__DEAD_LETTERS"], key="xa-tan-phu",
                      value=other.to_json())
        producer.flush(timeout=30)
    finally:
        producer.close()
    try:
        line = 'sohoa_site_pages_scanned{site="xa-tan-phu"} 1.0'
        wait_for(lambda: line in _metrics(env), 120, line, (proc,))
        wait_for(lambda: "sohoa_consumer_dead_letters_total{" in _metrics(env),
                 60, "the dead letter counted", (proc,))
        consumer = make_consumer(stack.settings.kafka, env["SOHOA_TOPICS__DEAD_LETTERS"],
                                 group_id=None, consumer_timeout_ms=3000)
        try:
            dls = each((parse_event(m.value) for m in consumer), DeadLetter)
        finally:
            consumer.close()
        mine = [d for d in dls if d.source == "consumer"]
        assert len(mine) == 1 and "PageScanned" in mine[0].reason
        assert mine[0].site_id == "unknown" and mine[0].offset == 0

        def stored() -> bool:
            with psycopg.connect(env["SOHOA_POSTGRES__DSN"]) as conn:
                return scalar(conn, "SELECT count(*) FROM dead_letters") == 2
        wait_for(stored, 60, "both dead letters stored", (proc,))
        out = run_sohoa(["status", "--json"], env)
        assert out.returncode == 0, out.stderr
        st = json.loads(out.stdout)
        site = next(s for s in st["sites"] if s["site_id"] == "xa-tan-phu")
        assert (site["pages"], site["files"]) == (1, 1)
        assert st["files"][0]["state"] == "scanning"
        assert {"site_id", "file_code", "state", "pages"} <= set(st["files"][0])
    finally:
        proc.stop()


def test_a_connection_error_out_of_poll_does_not_stop_the_consumer(
        stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """kafka-python 3.0 lets a KafkaConnectionError out of KafkaConsumer.poll() when the broker
    dies while the group coordinator is being looked up (its wait for a metadata refresh does
    not catch the refresh's connection error): the fault suite's broker kill saw `sohoa
    consume` exit 1 on it, at random. Here the real client's poll raises that error on cue,
    twice, against the real broker and database; the consumer waits, polls again, and every
    event lands exactly once."""

    from kafka.errors import KafkaConnectionError

    from consumers.consumer import ProgressConsumer
    from tests.support.client_timeouts import settings_of

    events = history(seed=24, sites=2)
    expected = reference(stack, events)
    env = consumer_env(stack)
    assert run_sohoa(["db", "migrate"], env).returncode == 0
    pc = ProgressConsumer(settings_of(env))
    fault = {"armed": 0, "raised": 0}
    build = pc._make_consumer

    def make_consumer():
        consumer = build()
        poll = consumer.poll

        def failing_poll(*args, **kw):
            if fault["armed"]:
                fault["armed"] -= 1
                fault["raised"] += 1
                raise KafkaConnectionError("111 ECONNREFUSED")
            return poll(*args, **kw)

        monkeypatch.setattr(consumer, "poll", failing_poll)
        return consumer

    monkeypatch.setattr(pc, "_make_consumer", make_consumer)
    thread, crashed = run_in_thread(pc)
    half = len(events) // 2
    try:
        produce(stack, env, events[:half])
        wait_for(lambda: crashed or applied_count(env) > 0, 120, "the first events applied")
        fault["armed"] = 2  # the next two polls raise, the rest of the load still to come
        produce(stack, env, events[half:])
        target = end_offsets(stack, [env["SOHOA_TOPICS__SITE_EVENTS"],
                                     env["SOHOA_TOPICS__FILE_EVENTS"]])
        wait_for(lambda: crashed or caught_up(env, target), 120, "the consumer catching up")
    finally:
        pc.stop_event.set()
        thread.join(60)
    assert not crashed, f"the consumer stopped on a retriable error: {crashed!r}"
    assert fault["raised"] == 2
    assert_same_tables(expected, dump(env["SOHOA_POSTGRES__DSN"]))


def test_a_consumer_that_stops_reading_starts_a_new_client(
        stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """kafka-python 3.0.12 was seen in CI to leave the consumer reading nothing while records
    waited: joined with no partitions, or polling partitions it never fetched again (the
    library's issues #3106 and #3131 were two such). Both states are made here with the real
    client's own calls, pausing every partition it holds, then leaving its subscription:
    when two checks ``consumer.stall_s`` apart find records waiting and none read, the
    consumer starts a new client, and every event counts once."""

    from consumers.consumer import ProgressConsumer
    from tests.support.client_timeouts import settings_of

    events = history(seed=26, sites=3)
    expected = reference(stack, events)
    env = consumer_env(stack, SOHOA_CONSUMER__STALL_S="3")
    assert run_sohoa(["db", "migrate"], env).returncode == 0
    topics = [env["SOHOA_TOPICS__SITE_EVENTS"], env["SOHOA_TOPICS__FILE_EVENTS"]]
    pc = ProgressConsumer(settings_of(env))

    def stalls() -> float:
        return pc.metrics.registry.get_sample_value("sohoa_consumer_stalls_total") or 0

    thread, crashed = run_in_thread(pc)
    third = len(events) // 3
    try:
        produce(stack, env, events[:third])
        wait_for(lambda: crashed or caught_up(env, end_offsets(stack, topics)), 120,
                 "the first third applied")
        first = pc.consumer
        held = first.assignment()
        assert held, "the consumer holds no partitions"
        first.pause(*held)  # holds its partitions, fetches none of them
        produce(stack, env, events[third:2 * third])
        produced = time.monotonic()
        wait_for(lambda: crashed or stalls() >= 1, 60, "a new client after the stall",
                 interval=0.1)
        # Not on the first check that saw records waiting: on the next, stall_s after it.
        assert time.monotonic() - produced >= 3.0
        assert pc.consumer is not first
        assert applied_count(env) < len(events)  # the stall was real: records waited
        wait_for(lambda: crashed or caught_up(env, end_offsets(stack, topics)), 120,
                 "the second third applied")
        pc.consumer.unsubscribe()  # holds no partitions at all
        produce(stack, env, events[2 * third:])
        wait_for(lambda: crashed or stalls() >= 2, 60, "a new client with nothing assigned")
        wait_for(lambda: crashed or caught_up(env, end_offsets(stack, topics)), 120,
                 "every event applied")
    finally:
        pc.stop_event.set()
        thread.join(60)
    assert not crashed, crashed
    assert stalls() == 2
    assert_same_tables(expected, dump(env["SOHOA_POSTGRES__DSN"]))


def _assigned(proc: SohoaProcess) -> list[list[str]]:
    """Every partition set the process was handed, in order, from its JSON log."""
    sets = []
    for line in proc.log.read_text(encoding="utf-8", errors="replace").splitlines():
        if '"partitions positioned from postgres"' in line:
            sets.append(json.loads(line)["partitions"])
    return sets


def _lock_waiters(owner_dsn: str) -> int:
    """Sessions waiting for a lock on audit_log (pg_locks: pg_stat_activity hides other
    roles' wait events from a role that is not a superuser)."""
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        return scalar(conn, "SELECT count(*) FROM pg_locks "
                            "WHERE relation = 'audit_log'::regclass AND NOT granted")


def test_a_member_stuck_in_its_write_does_not_hold_the_group(stack, tmp_path: Path) -> None:
    """A member whose batch write hangs (here: a lock on audit_log held by another session)
    keeps heartbeating from kafka-python's thread, so the broker holds every rejoin of the
    group open for it up to the rebalance timeout; with kafka-python's default of 300 s a
    second consumer got nothing for five minutes. ``consumer.max_poll_interval_s`` bounds
    that: the stuck member leaves, the other takes every partition while the lock is still
    held, and once it is released every event counts once."""
    events = history(seed=25, sites=3)
    expected = reference(stack, events)
    env = consumer_env(stack, SOHOA_CONSUMER__BATCH_MAX_EVENTS="50",
                       SOHOA_CONSUMER__BATCH_MAX_MS="50",
                       SOHOA_CONSUMER__MAX_POLL_INTERVAL_S="10")
    assert run_sohoa(["db", "migrate"], env).returncode == 0
    topics = [env["SOHOA_TOPICS__SITE_EVENTS"], env["SOHOA_TOPICS__FILE_EVENTS"],
              env["SOHOA_TOPICS__DEAD_LETTERS"]]
    half = len(events) // 2
    a = start(env, tmp_path, "consume-a")
    b = None
    locker = psycopg.connect(env["SOHOA_POSTGRES__OWNER_DSN"])
    try:
        produce(stack, env, events[:half])
        wait_for(lambda: applied_count(env) > 50, 120, "the first consumer applying events",
                 (a,), interval=0.05)
        total = sum(len(p) for p in end_offsets_partitions(stack, topics).values())
        locker.execute("LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE")
        produce(stack, env, events[half:])
        wait_for(lambda: _lock_waiters(env["SOHOA_POSTGRES__OWNER_DSN"]) >= 1, 60,
                 "the first consumer's write waiting on the lock", (a,))
        stuck_since = time.monotonic()
        b = start({**env, "SOHOA_CONSUMER__METRICS_PORT": str(_free_port())}, tmp_path,
                  "consume-b")
        wait_for(lambda: any(len(s) == total for s in _assigned(b)), 90,
                 "the second consumer taking every partition", (a, b))
        took = time.monotonic() - stuck_since
        # The fault was real and still is: the first consumer's write is waiting on the lock.
        # (Who ends its membership first, its own heartbeat thread or the broker's rebalance
        # timeout, is a race; either way it is the bound that ends it.)
        assert _lock_waiters(env["SOHOA_POSTGRES__OWNER_DSN"]) >= 1
        assert any(_assigned(a)), "the stuck consumer held partitions before"
        assert took < 60, took
        locker.rollback()
        target = end_offsets(stack, topics[:2])
        wait_for(lambda: caught_up(env, target), 180, "both consumers catching up", (a, b))
    finally:
        locker.close()
        a.stop()
        if b is not None:
            b.stop()
    assert_same_tables(expected, dump(env["SOHOA_POSTGRES__DSN"]))


def end_offsets_partitions(stack, topics: Sequence[str]) -> dict[str, set[int]]:
    c = make_consumer(stack.settings.kafka, group_id=None)
    try:
        return {t: set(c.partitions_for_topic(t) or ()) for t in topics}
    finally:
        c.close()
