"""Restart and takeover of the assembly worker on its RocksDB state (issue 24).

    python -m bench.bench_restart --pages 200000
    nice -n 5 python -m bench.bench_restart --pages 1000000

One campaign (the memory bench's events: files of 25 pages over 20 sites) is built through a
RocksDB assembly worker on a throw-away Kafka; that worker's resident memory is sampled while
the campaign streams through it and once it has settled (issue 24's memory figure, from the
same build), with its data dir's size. Then, on that state:
- **restart**: the worker stopped (SIGTERM) and started again on its data dir;
- **restart after kill -9**: the same, the old process killed while a member of its group;
- **moved**: a worker on an empty data dir (the partitions moved to a new machine), which
  reads every changelog record first;
- **takeover**: two workers (A on the built data dir, B on an empty one) with
  ``streams.standby_replicas`` 0 then 1; once both settled, A is stopped and B must serve A's
  partitions.

Each time is from the new process's start (or A's stop) to the FileAssembled of a one-page file
put in site-events beforehand (or after the stop: one per partition for the takeover), read from
the end offsets file-events had before (:mod:`bench.topic_tail`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.bench_agent import hwm_mb, rss_mb
from bench.bench_memory import (
    COMPONENTS,
    Sampler,
    _du_mb,
    _lags,
    _probe,
    _stop,
    _topic_records,
    produce_campaign,
    wait_cpu_settled,
)
from bench.common import emit, spine_env, start_component, start_throwaway_stack, teardown
from bench.topic_tail import TopicTail, assembled
from sohoa.events import FileClosed, PageScanned
from sohoa.kafka_clients import make_producer

ASSEMBLY = COMPONENTS["assembly"]


@dataclass
class Campaign:
    state: Path
    settings: Any
    env: dict[str, str]
    topic: str   # the workers' file-events topic
    logs: Path
    built: dict[str, float] = field(default_factory=dict)  # the build worker's figures

    @property
    def data_dir(self) -> Path:
        return self.state / "faust" / self.env["SOHOA_STREAMS__APP_ID"]

    def worker(self, name: str, **extra: str) -> subprocess.Popen:
        return start_component(ASSEMBLY, {**self.env, **extra}, self.logs, name)


def build(settings: Any, state: Path, pages: int, per_file: int, sites: int) -> Campaign:
    from kafka.admin import NewTopic

    from sohoa.kafka_clients import make_admin

    topic = f"{settings.topics.file_events}.restart"
    admin = make_admin(settings.kafka)
    admin.create_topics([NewTopic(topic, 12, 1)])
    admin.close()
    env = {**spine_env(settings, state, "restart"), "SOHOA_STREAMS__STORE": "rocksdb",
           "SOHOA_TOPICS__FILE_EVENTS": topic}
    c = Campaign(state, settings, env, topic, state / "logs")
    p = c.worker("assembly-build")
    # The build worker's resident memory is the campaign-size figure of issue 24: sampled
    # every second while the whole campaign streams through it, then once it settled.
    sampler = Sampler({"build": p.pid})
    sampler.start()
    try:
        t0 = time.perf_counter()
        files, _ = produce_campaign(settings.kafka, settings.topics.site_events, pages,
                                    per_file, sites)
        c.built["produced_s"] = time.perf_counter() - t0
        deadline = time.monotonic() + max(600, pages / 50)
        while _topic_records(settings.kafka, topic) < files:
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"campaign not assembled; see {c.logs}")
            time.sleep(5)
        c.built["assembled_s"] = time.perf_counter() - t0
        c.built["load_assembled"] = os.getloadavg()[0]
        wait_cpu_settled([p.pid], 300)
        sampler.stop_flag.set()
        sampler.join()
        c.built["steady_mb"] = rss_mb(p.pid)
        c.built["peak_mb"] = max(hwm_mb(p.pid), sampler.max_seen["build"])
    finally:
        sampler.stop_flag.set()
        _stop(p)
    c.built["disk_mb"] = _du_mb(c.data_dir)
    return c


def timed_start(c: Campaign, tag: str, **extra: str) -> tuple[float, float]:
    """(seconds from the start to the probe's FileAssembled, RSS then in MB)."""
    code = f"HS-{tag}"
    with TopicTail(c.settings.kafka, c.topic) as tail:
        _probe(c.settings.kafka, c.settings.topics.site_events, code)
        t0 = time.monotonic()
        p = c.worker(f"assembly-{tag}", **extra)
        try:
            seen = tail.wait_for(assembled(code), 900)
            return seen - t0, rss_mb(p.pid)
        finally:
            _stop(p)


def restart_after_kill(c: Campaign) -> float:
    old = c.worker("assembly-killed")
    with TopicTail(c.settings.kafka, c.topic) as tail:   # a member of its group when killed
        _probe(c.settings.kafka, c.settings.topics.site_events, "HS-BEFORE-KILL")
        tail.wait_for(assembled("HS-BEFORE-KILL"), 300)
    old.kill()
    old.wait()
    return timed_start(c, "AFTER-KILL")[0]


def _probe_every_partition(c: Campaign, tag: str) -> set[str]:
    producer = make_producer(c.settings.kafka)
    codes = set()
    for q in range(12):
        code = f"HS-{tag}-p{q}"
        page = PageScanned.make(site_id="xa-probe", fonds="UBND", file_code=code,
                                document="1.tif", uri=f"file:///scan/probe/{code}/1.tif",
                                sha256="e" * 64, size_bytes=1, media_type="image/tiff")
        close = FileClosed(site_id="xa-probe", fonds="UBND", file_code=code)
        for ev in (page, close):
            producer.send(c.settings.topics.site_events, key=ev.key(), value=ev.to_json(),
                          partition=q)
        codes.add(code)
    producer.flush(60)
    producer.close()
    return codes


def _wait_all(tail: TopicTail, codes: set[str], t0: float) -> tuple[float, float]:
    """(first, last) seconds after ``t0`` at which the files ``codes`` were assembled."""
    times = []
    while codes:
        tail.wait_for(lambda m: (m.key or b"").decode().rsplit("/", 1)[-1] in codes, 600)
        codes.discard(tail.matched.key.decode().rsplit("/", 1)[-1])
        times.append(time.monotonic() - t0)
    return times[0], times[-1]


def takeover(c: Campaign, standby: int, how: str) -> dict[str, float]:
    tag = f"TAKEOVER-{standby}-{how}"
    empty = c.state / f"faust-{tag.lower()}"
    from infra.procs import free_port

    sb = {"SOHOA_STREAMS__STANDBY_REPLICAS": str(standby)}
    a = c.worker(f"assembly-{tag}-a", **sb)
    b: subprocess.Popen | None = None
    try:
        time.sleep(10)
        b = c.worker(f"assembly-{tag}-b", **sb, SOHOA_STREAMS__DATA_DIR=str(empty),
                     SOHOA_STREAMS__WEB_PORT=str(free_port()))
        with TopicTail(c.settings.kafka, c.topic) as tail:  # the group serves every partition
            _wait_all(tail, _probe_every_partition(c, tag + "-W"), time.monotonic())
        wait_cpu_settled([a.pid, b.pid], 300, quiet_s=5)
        b_rss = rss_mb(b.pid)
        with TopicTail(c.settings.kafka, c.topic) as tail:
            t0 = time.monotonic()
            if how == "kill":
                a.kill()
            else:
                a.terminate()
            a.wait(120)
            first, last = _wait_all(tail, _probe_every_partition(c, tag), t0)
        return {"first": first, "last": last, "b_rss": b_rss}
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                _stop(p)
        shutil.rmtree(empty, ignore_errors=True)


def run(pages: int, per_file: int, sites: int, keep: bool) -> dict:
    state, settings, stack = start_throwaway_stack("restart")
    try:
        t = time.perf_counter()
        c = build(settings, state, pages, per_file, sites)
        print(f"{pages} pages assembled in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        load0 = os.getloadavg()
        figures: list[dict] = []

        def fig(name: str, value: float, unit: str = "s") -> None:
            figures.append({"name": name, "value": round(value, 1), "unit": unit})
            print(f"{name}: {value:.1f} {unit}", file=sys.stderr)

        b = c.built
        fig("campaign produced to site-events", b["produced_s"])
        fig("every file assembled after (from the start of the production)", b["assembled_s"])
        fig("  load average (1 min) then", b["load_assembled"], "")
        fig("assembly worker resident, steady once every file is assembled", b["steady_mb"],
            "MB")
        fig("  peak (VmHWM) while the campaign streamed through", b["peak_mb"], "MB")
        fig("  its data dir on disk", b["disk_mb"], "MB")
        app_id = c.env["SOHOA_STREAMS__APP_ID"]
        fig("  changelog records a restart on the same disk must read",
            _lags(c.settings.kafka, app_id, c.settings.topics.site_events, c.data_dir)[1], "")
        fig("  changelog records a worker on an empty disk must read",
            _lags(c.settings.kafka, app_id, c.settings.topics.site_events,
                  state / "faust-moved" / app_id)[1], "")
        secs, rss = timed_start(c, "RESTART")
        fig("restart (SIGTERM, same data dir) to the first new file assembled", secs)
        fig("  resident then", rss, "MB")
        fig("restart after kill -9, same data dir, to the first new file assembled",
            restart_after_kill(c))
        secs, rss = timed_start(c, "MOVED", SOHOA_STREAMS__DATA_DIR=str(state / "faust-moved"))
        fig("new worker on an empty data dir (every changelog record read first)", secs)
        fig("  resident then", rss, "MB")
        for standby in (0, 1):
            for how in ("term", "kill"):
                r = takeover(c, standby, how)
                what = "SIGTERM" if how == "term" else "kill -9"
                fig(f"two workers, standby replicas {standby}, one stopped by {what}: the last "
                    "of 12 partitions served by the other", r["last"])
                fig("  the first of the 12", r["first"])
                fig("  the survivor's RSS, both running and settled", r["b_rss"], "MB")
        figures.append({"name": "load average (1, 5, 15 min) before / after the restarts",
                        "value": " / ".join(f"{x:.2f}" for x in (*load0, *os.getloadavg())),
                        "unit": ""})
        return {"name": "restart", "pages": pages, "cores": os.cpu_count(), "figures": figures}
    finally:
        teardown([], stack, state, keep)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pages", type=int, default=200_000, help="pages in the campaign")
    ap.add_argument("--per-file", type=int, default=25, help="pages per file")
    ap.add_argument("--sites", type=int, default=20, help="sites the files are spread over")
    ap.add_argument("--keep", action="store_true", help="keep the temp state dir (logs)")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args(argv)
    return emit(run(args.pages, args.per_file, args.sites, args.keep), args.json)


if __name__ == "__main__":
    main()
