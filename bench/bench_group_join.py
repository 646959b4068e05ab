"""A group consumer that joins right after its topics were created, on a busy machine: how
often is it left with no partitions? The reproducer of the consumer's stall
(consumers/consumer.py ``ProgressConsumer._load_partitions``).

    python -m bench.bench_group_join                 # 30 joins each way, 4 busy processes
    python -m bench.bench_group_join --joins 60 --busy 6 --wait-s 45

Each join: three topics of 12 partitions created, a kafka-python group consumer made with the
consumer's settings (``sohoa.kafka_clients.make_consumer``, metadata refreshed every 30 s)
subscribes at once, and polls until it holds partitions or ``--wait-s`` has passed (longer
than a metadata refresh, so a consumer still empty then is stuck). Joins alternate between
subscribing straight away and reading the topics' partitions first, while ``--busy``
processes spin on the cores. Starts its own throw-away Kafka.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench.common import emit, start_throwaway_stack, teardown

SPIN = "import time\nend = time.monotonic() + {s}\nwhile time.monotonic() < end: pass\n"


def join_once(kafka, load_first: bool, wait_s: float) -> float | None:
    """Seconds until the consumer held partitions; None if it held none after ``wait_s``."""
    from kafka.admin import NewTopic

    from sohoa.kafka_clients import make_admin, make_consumer

    names = [f"join-{uuid.uuid4().hex[:8]}-{i}" for i in range(3)]
    admin = make_admin(kafka)
    try:
        admin.create_topics([NewTopic(n, 12, 1) for n in names])
    finally:
        admin.close()
    c = make_consumer(kafka, group_id=f"join-{uuid.uuid4().hex[:8]}",
                      metadata_max_age_ms=30_000, max_poll_interval_ms=60_000)
    try:
        if load_first:
            for n in names:
                c.partitions_for_topic(n)
        c.subscribe(names)
        t0 = time.monotonic()
        while not c.assignment():
            if time.monotonic() - t0 > wait_s:
                return None
            c.poll(200)
        return time.monotonic() - t0
    finally:
        c.close()


def run(joins: int, busy: int, wait_s: float, keep: bool) -> dict:
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    state, settings, stack = start_throwaway_stack("group-join")
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN.format(s=joins * 2 * wait_s)])
                for _ in range(busy)]
    try:
        stuck = {"subscribe at once": 0, "partitions read first": 0}
        times: dict[str, list[float]] = {k: [] for k in stuck}
        for i in range(joins):
            for name, first in (("subscribe at once", False), ("partitions read first", True)):
                took = join_once(settings.kafka, first, wait_s)
                if took is None:
                    stuck[name] += 1
                else:
                    times[name].append(took)
                print(f"join {i + 1} {name}: "
                      f"{'no partitions' if took is None else f'{took:.1f} s'}", file=sys.stderr)
        return {"name": "group_join", "joins_each": joins, "busy_processes": busy,
                "wait_s": wait_s, "left_without_partitions": stuck,
                "slowest_join_s": {k: round(max(v, default=0.0), 1) for k, v in times.items()}}
    finally:
        for p in spinners:
            p.kill()
        teardown([], stack, state, keep)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--joins", type=int, default=30, help="joins of each kind")
    ap.add_argument("--busy", type=int, default=4, help="processes spinning on the cores")
    ap.add_argument("--wait-s", type=float, default=45.0,
                    help="a consumer still without partitions after this is stuck")
    ap.add_argument("--keep", action="store_true", help="keep the temp state dir (logs)")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args(argv)
    return emit(run(args.joins, args.busy, args.wait_s, args.keep), args.json)


if __name__ == "__main__":
    main()
