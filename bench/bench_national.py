"""A national-shape campaign through the real spine: `sohoa simulate --through-spine`.

    nice -n 5 python -m bench.bench_national --sites 3321 --days 22 --scale 0.00001 \\
        --speed 6000

Starts its own throw-away stack (Kafka + PostgreSQL on free ports, temp state dir), with a
database and topics named as a simulation's, runs the assembly app, the QC app (OCR off:
Tesseract per page is the OCR bench's subject, not this one's) and the consumer, then the
simulator. While it runs it samples the load average, the pages in PostgreSQL and the records
each reader still has to read of the site-events topic (assembly app: its committed Kafka
offsets; consumer: its offsets in PostgreSQL). Every process inherits the bench's priority: run
it under ``nice``. The plan is imported and a throw-away Prometheus (the repository's rules)
scrapes the consumer and the apps, so the simulator's check covers status, the monthly reports
and the alerts. The result is that comparison (equal or the differences) and the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import (
    emit,
    pages_in_postgres,
    spine_env,
    start_component,
    start_throwaway_stack,
    teardown,
)


def _lags(kafka: Any, dsn: str, topic: str, assembly_group: str) -> tuple[int, int, int]:
    """(records on the topic, not yet read by the assembly app, not yet by the consumer)."""
    import psycopg
    from kafka import TopicPartition

    from sohoa.kafka_clients import make_consumer

    c = make_consumer(kafka, group_id=assembly_group)
    try:
        parts = [TopicPartition(topic, p) for p in c.partitions_for_topic(topic) or ()]
        end = c.end_offsets(parts)
        done = {tp: c.committed(tp) or 0 for tp in parts}
    finally:
        c.close()
    total = sum(end.values())
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        rows = conn.execute("SELECT part, next_offset FROM consumer_offsets WHERE topic = %s",
                            (topic,)).fetchall()
    consumed: dict[int, int] = dict(rows)
    return (total, sum(max(0, off - done[tp]) for tp, off in end.items()),
            sum(max(0, off - consumed.get(tp.partition, 0)) for tp, off in end.items()))


def _scrapes(url: str) -> dict[str, Any]:
    """Per target: up, and the last and longest scrape over the run (a /metrics slower than
    the scrape timeout leaves Prometheus without the gauges)."""
    from producers.simulate_alerts import query

    out: dict[str, Any] = {}
    for name, expr in (("up", "up"), ("last_s", "scrape_duration_seconds"),
                       ("max_s", "max_over_time(scrape_duration_seconds[1h])"),
                       ("failed", "count_over_time((up == 0)[1h:5s])")):
        for r in query(url, expr):
            out.setdefault(r["metric"]["instance"], {})[name] = round(float(r["value"][1]), 2)
    return out


def run(sites: int, days: int, pages_per_day: int, scale: float, speed: float,
        qc_workers: int, drain_timeout: float, keep: bool, prometheus: bool = True,
        scrape_s: int = 15) -> dict:
    state, settings, stack = start_throwaway_stack("national")
    procs: list[subprocess.Popen] = []
    prom = None
    pages_root = Path(tempfile.mkdtemp(prefix="sohoa-national-pages-"))
    try:
        suffix = uuid.uuid4().hex[:6]
        topics = settings.topics.model_copy(update={
            "site_events": f"sohoa.sim.site-events.{suffix}",
            "file_events": f"sohoa.sim.file-events.{suffix}",
            "dead_letters": f"sohoa.sim.dead-letters.{suffix}"})
        stack.apply_topics(topics)
        dsn = stack.pg.create_database(f"sim_national_{suffix}")
        extra = {
            "SOHOA_TOPICS__SITE_EVENTS": topics.site_events,
            "SOHOA_TOPICS__FILE_EVENTS": topics.file_events,
            "SOHOA_TOPICS__DEAD_LETTERS": topics.dead_letters,
            "SOHOA_POSTGRES__DSN": dsn, "SOHOA_POSTGRES__READER_DSN": dsn,
            "SOHOA_STREAMS__QC_ENABLED": "true",
            "SOHOA_QC__WORKERS": str(qc_workers),
            "SOHOA_SOURCES__DEFAULT_ROOTS": json.dumps([f"{pages_root}/{{site_id}}"]),
            "SOHOA_SIMULATE__FILE_PAGES_MIN": "1",
            "SOHOA_SIMULATE__FILE_PAGES_MAX": "3",
        }
        env = spine_env(settings, state, "national", **extra)
        subprocess.run([sys.executable, "-m", "sohoa.cli", "db", "migrate"],
                       env={**env, "SOHOA_POSTGRES__OWNER_DSN": dsn}, check=True,
                       capture_output=True)
        logs = state / "logs"
        # Every process inherits this one's priority: run the bench under `nice -n 5`.
        for args in (["consume"], ["streams", "--role", "assembly"],
                     ["streams", "--role", "ocr"]):
            procs.append(start_component(args, env, logs, name=args[-1]))
        time.sleep(20)  # the apps join their groups
        check_args = ["--plan-out", str(state / "plan.csv")]
        if prometheus:
            from infra.scratch_prometheus import ScratchPrometheus

            prom = ScratchPrometheus(state, [f"127.0.0.1:{env[k]}" for k in (
                "SOHOA_CONSUMER__METRICS_PORT", "SOHOA_STREAMS__WEB_PORT",
                "SOHOA_STREAMS__OCR_WEB_PORT")], interval_s=scrape_s)
            check_args += ["--prometheus", prom.url]

        samples: list[dict[str, Any]] = []
        stop = threading.Event()

        def sample() -> None:
            t0 = time.monotonic()
            while not stop.wait(5.0):
                try:
                    total, asm, cons = _lags(settings.kafka, dsn, topics.site_events,
                                             env["SOHOA_STREAMS__APP_ID"])
                except Exception as exc:  # a sample missed is not the run failed
                    print(f"sample failed: {exc}", file=sys.stderr)
                    continue
                samples.append({"t": round(time.monotonic() - t0), "records": total,
                                "lag_assembly": asm, "lag_consumer": cons,
                                "pages_pg": pages_in_postgres(dsn),
                                "load1": os.getloadavg()[0]})

        threading.Thread(target=sample, daemon=True).start()
        t0 = time.monotonic()
        sim = subprocess.run(
            [sys.executable, "-m", "sohoa.cli", "simulate", "--through-spine",
             "--sources-root", str(pages_root), "--sites", str(sites),
             "--days", str(days), "--pages-per-day", str(pages_per_day), "--scale", str(scale),
             "--speed", str(speed), "--scenario", "demo", "--seed", "24",
             "--drain-timeout", str(drain_timeout), *check_args, "--json"],
            env=env, capture_output=True, text=True)
        wall = time.monotonic() - t0
        stop.set()
        if not sim.stdout:
            raise RuntimeError(f"simulate failed: {sim.stderr[-3000:]}")
        out = json.loads(sim.stdout)
        ledger = out["ledger"]
        pages = sum(s["pages"] for s in ledger["sites"].values())
        events = sum(ledger["events"].values())
        check = out["check"]
        return {
            "name": "national", "sites": sites, "working_days": days,
            "simulated_from": out["start"], "simulated_to": out["end"],
            "pages_per_site_day": pages_per_day * scale, "speed": speed,
            "qc_workers": qc_workers,
            "pages": pages, "events": events, "events_by_type": ledger["events"],
            "files_closed": sum(s["files_closed"] for s in ledger["sites"].values()),
            "page_bytes_written": ledger["bytes_written"],
            "send_s": out["send_s"], "drain_after_send_s": check["waited_s"],
            "wall_s": round(wall, 1),
            "pages_per_s_end_to_end": round(pages / wall, 2),
            "events_per_s_sent": round(events / max(out["send_s"], 1e-9), 1),
            "max_lag_assembly": max((s["lag_assembly"] for s in samples), default=None),
            "max_lag_consumer": max((s["lag_consumer"] for s in samples), default=None),
            "max_load1": max((s["load1"] for s in samples), default=None),
            "equal": check["equal"], "differences": check["differences"][:20],
            "dead_letters": check["dead_letters"],
            "alerts": {k: v for k, v in check.get("alerts", {}).items()
                       if k in ("equal", "baseline_seen", "differences")} | {
                "expected": {a: len(v) for a, v in check.get("alerts", {})
                             .get("expected", {}).items()},
                "observed": {a: len(v) for a, v in check.get("alerts", {})
                             .get("observed", {}).items()},
                "scrapes": _scrapes(prom.url) if prom is not None else None,
                "undecided": check.get("alerts", {}).get("undecided", {})},
            "samples": samples,
        }
    finally:
        if prom is not None:
            prom.stop()
        teardown(procs, stack, state, keep)
        if not keep:
            shutil.rmtree(pages_root, ignore_errors=True)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sites", type=int, default=3321)
    ap.add_argument("--days", type=int, default=22, help="working days simulated")
    ap.add_argument("--pages-per-day", type=int, default=5000, help="the real pace per site")
    ap.add_argument("--scale", type=float, default=0.00001, help="fraction of that pace")
    ap.add_argument("--speed", type=float, default=6000.0,
                    help="simulated seconds per real second")
    ap.add_argument("--qc-workers", type=int, default=2)
    ap.add_argument("--drain-timeout", type=float, default=3600.0)
    ap.add_argument("--no-prometheus", dest="prometheus", action="store_false",
                    help="skip the alerts check (no throw-away Prometheus)")
    ap.add_argument("--scrape-s", type=int, default=15,
                    help="Prometheus scrape interval (and timeout)")
    ap.add_argument("--keep", action="store_true", help="keep the state dir and pages (logs)")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args(argv)
    return emit(run(args.sites, args.days, args.pages_per_day, args.scale, args.speed,
                    args.qc_workers, args.drain_timeout, args.keep, args.prometheus,
                    args.scrape_s), args.json)


if __name__ == "__main__":
    main()
