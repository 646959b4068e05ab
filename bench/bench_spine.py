"""Page events per second through the spine (Kafka → Faust assembly → consumer → PostgreSQL),
beside kafka-python's raw produce and consume rates measured in the same run.

    python -m bench.bench_spine --events 20000

Starts its own throw-away stack (Kafka + PostgreSQL on free ports, temp state dir), so it never
touches `sohoa up`'s data. QC and OCR are off: this measures the event path, not image work.
"""

from __future__ import annotations

import argparse
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import (
    emit,
    pages_in_postgres,
    raw_consume,
    spine_env,
    start_component,
    start_throwaway_stack,
    teardown,
)
from sohoa.events import FileClosed, PageScanned
from sohoa.kafka_clients import make_consumer, make_producer


def make_events(n: int, sites: int = 20, pages_per_file: int = 50) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for i in range(n):
        site = f"xa-{i % sites:03d}"
        per_site = i // sites
        file_code = f"HS-{per_site // pages_per_file:05d}"
        page_no = per_site % pages_per_file + 1
        sha = f"{i:064x}"
        ev = PageScanned.make(site_id=site, fonds="UBND", file_code=file_code,
                              document=f"{page_no:03d}.tif", number=page_no,
                              uri=f"file:///scan/{site}/{file_code}/{page_no:03d}.tif",
                              sha256=sha, size_bytes=100_000, media_type="image/tiff")
        out.append((ev.key(), ev.to_json()))
        if page_no == pages_per_file:
            closed = FileClosed(site_id=site, fonds="UBND", file_code=file_code,
                                expected_pages=pages_per_file, pages_seen=pages_per_file)
            out.append((closed.key(), closed.to_json()))
    return out


def produce(kafka, topic: str, events: list[tuple[str, bytes]]) -> float:
    producer = make_producer(kafka, linger_ms=20, batch_size=256 * 1024)
    t0 = time.perf_counter()
    for key, value in events:
        producer.send(topic, key=key, value=value)
    producer.flush()
    elapsed = time.perf_counter() - t0
    producer.close()
    return elapsed


def consume_all(kafka, topic: str, n: int) -> float:
    seen, elapsed = raw_consume(kafka, topic, n, max_poll_records=5000,
                                fetch_max_bytes=64 * 1024 * 1024)
    if seen < n:
        raise RuntimeError(f"raw consume saw {seen} of {n}")
    return elapsed


def _group_done(kafka, group: str, topic: str, end: dict[int, int]) -> bool:
    """Has ``group`` committed the end offset of every partition? (Reading committed offsets
    does not join the group, so Faust's assignment is not disturbed.)"""
    from kafka import TopicPartition

    c = make_consumer(kafka, group_id=group)
    try:
        # Faust may commit the offset of the last record processed rather than the next one
        # to read, so one short of the end counts as done (at most one event per partition).
        return all((c.committed(TopicPartition(topic, p)) or 0) >= off - 1
                   for p, off in end.items())
    finally:
        c.close()


def _end_offsets(kafka, topic: str) -> dict[int, int]:
    from kafka import TopicPartition

    c = make_consumer(kafka, group_id=None)
    try:
        parts = [TopicPartition(topic, p) for p in c.partitions_for_topic(topic)]
        return {tp.partition: off for tp, off in c.end_offsets(parts).items()}
    finally:
        c.close()


def run(n_events: int, keep: bool = False) -> dict:
    state, settings, stack = start_throwaway_stack("spine")
    procs: list[subprocess.Popen] = []
    try:
        kafka = settings.kafka
        events = make_events(n_events)
        pages = sum(1 for _, v in events if b'"PageScanned"' in v)

        raw_topic = f"bench.raw-{uuid.uuid4().hex[:6]}"
        stack.apply_topics(settings.topics.model_copy(update={
            "site_events": raw_topic, "file_events": raw_topic + "-f",
            "dead_letters": raw_topic + "-d"}))
        raw_produce_s = produce(kafka, raw_topic, events)
        raw_consume_s = consume_all(kafka, raw_topic, len(events))

        env = spine_env(settings, state, "spine", SOHOA_CONSUMER__GAUGE_CACHE_S="0.2")
        logs = state / "logs"
        for args in (["consume"], ["streams", "--role", "assembly"]):
            procs.append(start_component(args, env, logs))
        # Let both join their groups before the clock starts: we measure the event path,
        # not process start-up.
        # A page of its own (its own event_id: a copy of a real event would be deduplicated).
        w = PageScanned.make(site_id="warmup", fonds="UBND", file_code="HS-0", document="1.tif",
                             uri="file:///scan/warmup/1.tif", sha256="f" * 64,
                             size_bytes=1, media_type="image/tiff")
        produce(kafka, settings.topics.site_events, [(w.key(), w.to_json())])
        deadline = time.monotonic() + 180
        while pages_in_postgres(settings.postgres.url) < 1:
            if time.monotonic() > deadline:
                raise RuntimeError(f"consumer never counted the warm-up page; see {logs}")
            time.sleep(0.5)

        t0 = time.perf_counter()
        produce(kafka, settings.topics.site_events, events)
        end = _end_offsets(kafka, settings.topics.site_events)
        consumer_done = faust_done = None
        deadline = time.monotonic() + max(300, n_events / 50)
        while consumer_done is None or faust_done is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"spine did not finish (consumer done: {consumer_done}, "
                                   f"Faust done: {faust_done}); logs in {logs}")
            now = time.perf_counter() - t0
            if consumer_done is None and pages_in_postgres(settings.postgres.url) >= pages + 1:
                consumer_done = now
            if faust_done is None and _group_done(kafka, env["SOHOA_STREAMS__APP_ID"],
                                                  settings.topics.site_events, end):
                faust_done = now
            time.sleep(0.2)
        spine_s = max(consumer_done, faust_done)
        result: dict[str, Any] = {
            "name": "spine",
            "events": len(events),
            "pages": pages,
            "figures": [
                {"name": "spine events/s (Kafka → Faust + consumer → PostgreSQL)",
                 "value": round(len(events) / spine_s), "unit": "events/s"},
                {"name": "consumer to PostgreSQL done after", "value": round(consumer_done, 2),
                 "unit": "s"},
                {"name": "Faust assembly done after", "value": round(faust_done, 2), "unit": "s"},
                {"name": "raw kafka-python produce (acks=all, idempotent)",
                 "value": round(len(events) / raw_produce_s), "unit": "events/s"},
                {"name": "raw kafka-python consume",
                 "value": round(len(events) / raw_consume_s), "unit": "events/s"},
            ],
        }
        slowest_raw = min(len(events) / raw_produce_s, len(events) / raw_consume_s)
        result["figures"].append({"name": "spine / slower raw client rate",
                                  "value": round(len(events) / spine_s / slowest_raw, 3),
                                  "unit": "ratio"})
        return result
    finally:
        teardown(procs, stack, state, keep)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000, help="page events to send")
    ap.add_argument("--keep", action="store_true", help="keep the temp state dir (logs)")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args(argv)
    result = run(args.events, keep=args.keep)
    return emit(result, args.json)


if __name__ == "__main__":
    main()
