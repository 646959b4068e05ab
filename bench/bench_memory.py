"""Resident memory of each long-running component with a campaign of N pages behind it.

    python -m bench.bench_memory                     # 100,000 pages (4,000 files x 25)
    python -m bench.bench_memory --pages 1000000     # the issue's campaign: 40,000 files x 25

The default is 100,000 pages because the issue's 1,000,000 takes well over 20 minutes on a
2-core machine;
`make bench` runs the default, so run the full campaign on its own with the command above.

Real processes started with the `sohoa` CLI on a throw-away Kafka + PostgreSQL (free ports,
temp state dir): the Faust assembly worker (`sohoa streams --role assembly`), the QC/OCR/
verdict worker (`sohoa streams --role ocr`, QC and OCR off: the memory of bookkeeping 1M pages,
not of image work) and the consumer (`sohoa consume`). No image files are written for them:
the pages arrive as PageScanned events (with a FileManifest and a FileClosed per file, spread
over ``--sites`` sites) produced straight to Kafka, as fast as kafka-python sends them, so the
workers also carry a backlog. Each worker's RSS (VmRSS) is sampled every second; figures: idle
after start-up, peak (VmHWM), and steady once every file has its verdict in PostgreSQL and CPU
has settled.

With ``--stores memory,rocksdb`` only assembly workers run, one per table store
(`streams.store`), side by side on the same campaign (each with its own app id, data dir and
file-events topic); each is measured when its topic holds every file's FileAssembled. Then
each in turn is stopped (SIGTERM) and started again on the same data dir with a new file
waiting in site-events: "restart to first event" is from the new process's start to that
file's FileAssembled on its topic, read from where the topic ended before the restart
(bench/topic_tail.py; the memory store first replays its whole changelog; RocksDB reads only
the changelog written since its last persisted offset). The RocksDB worker is then started
once more on an empty data dir, as a worker the partitions moved to: it reads every changelog
record first.

    nice -n 10 python -m bench.bench_memory --pages 1000000 --stores memory,rocksdb

The site agent (`sohoa watch`) is measured by the agent bench's own path
(:meth:`bench.bench_agent.Bench.memory`): N pages on disk and known to its outbox as sent.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.bench_agent import Bench as AgentBench
from bench.bench_agent import cpu_seconds, hwm_mb, rss_mb
from bench.bench_streams import events as file_events
from bench.common import (
    emit,
    pages_in_postgres,
    spine_env,
    start_component,
    start_throwaway_stack,
    teardown,
)
from bench.topic_tail import TopicTail, assembled
from sohoa.events import PageScanned
from sohoa.kafka_clients import make_producer

COMPONENTS = {"assembly": ["streams", "--role", "assembly"],
              "ocr": ["streams", "--role", "ocr"],
              "consume": ["consume"]}
LABELS = {"assembly": "Faust assembly worker (sohoa streams --role assembly)",
          "ocr": "QC/OCR/verdict worker (sohoa streams --role ocr, OCR off)",
          "consume": "consumer (sohoa consume)"}
AGENT_GOAL_MB = 150


def verdict_files(dsn: str) -> int:
    import psycopg

    from consumers.db import scalar

    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            return scalar(
                conn, "SELECT count(*) FROM (SELECT DISTINCT site_id, file_code FROM verdicts) v")
    except psycopg.OperationalError:
        return 0


class Sampler(threading.Thread):
    """RSS of each pid every ``interval`` s; keeps the largest seen (VmHWM is read at the
    end too: it also catches peaks between samples)."""

    def __init__(self, pids: dict[str, int], interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.interval = interval
        self.max_seen = dict.fromkeys(pids, 0.0)
        self.stop_flag = threading.Event()

    def run(self) -> None:
        while not self.stop_flag.wait(self.interval):
            for name, pid in self.pids.items():
                with contextlib.suppress(OSError):
                    self.max_seen[name] = max(self.max_seen[name], rss_mb(pid))


def wait_cpu_settled(pids: list[int], timeout: float, quiet_s: int = 5) -> None:
    """Until none of ``pids`` used more than 5 % of a core for ``quiet_s`` seconds in a row."""
    last = [cpu_seconds(p) for p in pids]
    still = 0
    deadline = time.monotonic() + timeout
    while still < quiet_s and time.monotonic() < deadline:
        time.sleep(1)
        now = [cpu_seconds(p) for p in pids]
        still = still + 1 if all(b - a < 0.05 for a, b in zip(last, now, strict=True)) else 0
        last = now


def produce_campaign(kafka, topic: str, pages: int, per_file: int, sites: int) -> tuple[int, int]:
    """``pages`` pages in files of ``per_file`` over ``sites`` sites; one site's events are
    built and sent at a time, so the bench itself never holds the whole campaign."""
    files = max(1, pages // per_file)
    producer = make_producer(kafka, linger_ms=20, batch_size=256 * 1024)
    sent = 0
    for s in range(sites):
        n_files = files // sites + (1 if s < files % sites else 0)
        if not n_files:
            continue
        for key, value in file_events(n_files, per_file, site=f"xa-mem-{s:03d}"):
            producer.send(topic, key=key, value=value)
            sent += 1
    producer.flush(600)
    producer.close()
    return files, sent


def run(pages: int, per_file: int, sites: int, agent_pages: int, keep: bool) -> dict:
    state, settings, stack = start_throwaway_stack("memory")
    procs: dict[str, subprocess.Popen] = {}
    figures: list[dict] = []
    try:
        env = spine_env(settings, state, "mem")
        logs = state / "logs"
        logs.mkdir(exist_ok=True)
        for name, args in COMPONENTS.items():
            procs[name] = start_component(args, env, logs, name)
        # Every worker joined and idle before the campaign: that RSS is the baseline.
        w = PageScanned.make(site_id="warmup", fonds="UBND", file_code="HS-0", document="1.tif",
                             uri="file:///scan/warmup/1.tif", sha256="f" * 64, size_bytes=1,
                             media_type="image/tiff")
        producer = make_producer(settings.kafka)
        producer.send(settings.topics.site_events, key=w.key(), value=w.to_json())
        producer.flush(60)
        producer.close()
        deadline = time.monotonic() + 180
        while pages_in_postgres(settings.postgres.url) < 1:
            if time.monotonic() > deadline:
                raise RuntimeError(f"consumer never counted the warm-up page; see {logs}")
            for name, p in procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited {p.returncode}; see {logs}")
            time.sleep(0.5)
        pids = {n: p.pid for n, p in procs.items()}
        wait_cpu_settled(list(pids.values()), 120, quiet_s=3)
        idle = {n: rss_mb(pid) for n, pid in pids.items()}
        sampler = Sampler(pids)
        sampler.start()

        t0 = time.perf_counter()
        files, sent = produce_campaign(settings.kafka, settings.topics.site_events, pages,
                                       per_file, sites)
        produced_s = time.perf_counter() - t0
        print(f"{sent} events produced in {produced_s:.0f} s; waiting for {files} verdicts …",
              file=sys.stderr)
        deadline = time.monotonic() + max(600, pages / 100)
        while verdict_files(settings.postgres.url) < files or \
                pages_in_postgres(settings.postgres.url) < files * per_file + 1:
            if time.monotonic() > deadline:
                raise RuntimeError(f"campaign not through after {time.perf_counter() - t0:.0f}"
                                   f" s; logs in {logs}")
            for name, p in procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited {p.returncode}; see {logs}")
            time.sleep(2)
        through_s = time.perf_counter() - t0
        wait_cpu_settled(list(pids.values()), 300)
        sampler.stop_flag.set()
        sampler.join()
        load = os.getloadavg()
        for name, pid in pids.items():
            steady, peak = rss_mb(pid), max(hwm_mb(pid), sampler.max_seen[name])
            figures += [
                {"name": f"{LABELS[name]}: steady, {files * per_file} pages / {files} files "
                         "done", "value": round(steady, 1), "unit": "MB"},
                {"name": "  peak (VmHWM) while they streamed through", "value": round(peak, 1),
                 "unit": "MB"},
                {"name": "  idle after start-up, before the campaign",
                 "value": round(idle[name], 1), "unit": "MB"},
            ]
        figures += [
            {"name": f"campaign produced to Kafka ({sent} events)", "value": round(produced_s),
             "unit": "s"},
            {"name": "every page in PostgreSQL and every file with its verdict after",
             "value": round(through_s), "unit": "s"},
            {"name": "load average (1, 5, 15 min) at the end",
             "value": " / ".join(f"{x:.2f}" for x in load), "unit": ""},
        ]
        teardown(list(procs.values()), _NoStack(), state, keep=True)
        procs.clear()
        print(f"spine figures: {figures}", file=sys.stderr)
        if agent_pages:
            agent = AgentBench(state, settings)
            try:
                agent_figs = agent.memory(agent_pages)
            finally:
                for p in agent.procs:
                    agent.stop(p)
            for f in agent_figs:
                f["name"] = f"site agent (sohoa watch): {f['name'].strip()}"
            figures += agent_figs
            figures.append({"name": "load average (1, 5, 15 min) after the agent",
                            "value": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
                            "unit": ""})
        return {"name": "memory", "pages": pages, "files": files, "sites": sites,
                "agent_pages": agent_pages, "cores": os.cpu_count(), "figures": figures}
    finally:
        teardown(list(procs.values()), stack, state, keep)


def _topic_records(kafka, topic: str) -> int:
    """Records in ``topic`` (sum of its partitions' end offsets: nothing is deleted here)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**kafka.client_kwargs(), group_id=None)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        return sum(ends.values())
    finally:
        consumer.close()


def _probe(kafka, topic: str, code: str) -> None:
    """One file of one page, closed: it is assembled as soon as its events are read."""
    from sohoa.events import FileClosed

    ev = PageScanned.make(site_id="xa-probe", fonds="UBND", file_code=code, document="1.tif",
                          uri=f"file:///scan/probe/{code}/1.tif", sha256="e" * 64,
                          size_bytes=1, media_type="image/tiff")
    producer = make_producer(kafka)
    close = FileClosed.model_validate({"site_id": "xa-probe", "fonds": "UBND",
                                       "file_code": code})
    for e in (ev, close):
        producer.send(topic, key=e.key(), value=e.to_json())
    producer.flush(60)
    producer.close()


def _lags(kafka, app_id: str, source: str, data_dir: Path) -> tuple[int, int]:
    """After the worker stopped: (site-events records its group has not committed, changelog
    records a restart must read: past each RocksDB partition's persisted offset, or all of
    them for the memory store)."""
    from kafka import KafkaConsumer, TopicPartition

    changelog = f"{app_id}-files-changelog"
    consumer = KafkaConsumer(**kafka.client_kwargs(), group_id=None)
    try:
        src = [TopicPartition(source, p) for p in consumer.partitions_for_topic(source) or ()]
        log = [TopicPartition(changelog, p)
               for p in consumer.partitions_for_topic(changelog) or ()]
        src_end, log_end = consumer.end_offsets(src), consumer.end_offsets(log)
        log_start = consumer.beginning_offsets(log)
    finally:
        consumer.close()
    group = KafkaConsumer(**kafka.client_kwargs(), group_id=app_id, enable_auto_commit=False)
    try:  # the group's committed offsets, read without joining it
        source_lag = sum(end - (group.committed(tp) or 0) for tp, end in src_end.items())
    finally:
        group.close()
    persisted: dict[int, int] = {}
    for db_path in data_dir.rglob("files-*.db"):
        import rocksdict

        db = rocksdict.Rdict(str(db_path), options=rocksdict.Options(raw_mode=True),
                             access_type=rocksdict.AccessType.read_only())
        try:
            raw = db.get(b"__faust\0offset__")
        finally:
            db.close()
        if raw is not None:
            persisted[int(db_path.name.rsplit("-", 1)[1].split(".")[0])] = int(raw) + 1
    to_read = sum(end - persisted.get(tp.partition, log_start[tp])
                  for tp, end in log_end.items())
    return source_lag, to_read


@dataclass(frozen=True)
class _Start:
    seconds: float   # from the process's start to the probe's FileAssembled
    rss_mb: float    # resident then
    disk_mb: float   # its data dir then


def _timed_start(settings: Any, env: dict[str, str], topic: str, logs: Path, store: str,
                 what: str, data_dir: Path) -> _Start:
    """An assembly worker started with a new one-page file waiting in site-events: the time
    to that file's FileAssembled, read from where ``topic`` ended before it (see
    bench/topic_tail.py), then the worker is stopped."""
    code = f"HS-{what}-{store}"
    with TopicTail(settings.kafka, topic) as tail:
        _probe(settings.kafka, settings.topics.site_events, code)
        t_start = time.monotonic()
        p = start_component(COMPONENTS["assembly"], env, logs, f"assembly-{store}")
        try:
            seen = tail.wait_for(assembled(code), 1800)
            rss = rss_mb(p.pid)
        finally:
            _stop(p)
    return _Start(seen - t_start, rss, _du_mb(data_dir))


def _stop(p: subprocess.Popen) -> None:
    p.terminate()
    try:
        p.wait(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout=30)


def _du_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def run_stores(pages: int, per_file: int, sites: int, stores: list[str], keep: bool) -> dict:
    """Assembly workers only, one per table store, on the same campaign (see the module doc)."""
    from kafka.admin import NewTopic

    from sohoa.kafka_clients import make_admin

    state, settings, stack = start_throwaway_stack("memory-stores")
    procs: dict[str, subprocess.Popen] = {}
    figures: list[dict] = []
    try:
        logs = state / "logs"
        envs: dict[str, dict[str, str]] = {}
        topics = {s: f"{settings.topics.file_events}.{s}" for s in stores}
        admin = make_admin(settings.kafka)
        admin.create_topics([NewTopic(t, 12, 1) for t in topics.values()])
        admin.close()
        for s in stores:
            envs[s] = {**spine_env(settings, state, f"mem-{s}"), "SOHOA_STREAMS__STORE": s,
                       "SOHOA_TOPICS__FILE_EVENTS": topics[s]}
            procs[s] = start_component(COMPONENTS["assembly"], envs[s], logs, f"assembly-{s}")
        tails = {s: TopicTail(settings.kafka, topics[s]) for s in stores}
        _probe(settings.kafka, settings.topics.site_events, "HS-WARMUP")
        for s in stores:
            with tails[s]:
                tails[s].wait_for(assembled("HS-WARMUP"), 300)
        pids = {s: p.pid for s, p in procs.items()}
        wait_cpu_settled(list(pids.values()), 120, quiet_s=3)
        idle = {s: rss_mb(pid) for s, pid in pids.items()}
        sampler = Sampler(pids)
        sampler.start()
        t0 = time.perf_counter()
        files, sent = produce_campaign(settings.kafka, settings.topics.site_events, pages,
                                       per_file, sites)
        produced_s = time.perf_counter() - t0
        print(f"{sent} events produced in {produced_s:.0f} s; waiting for {files} files …",
              file=sys.stderr)
        through: dict[str, float] = {}
        deadline = time.monotonic() + max(600, pages / 50)
        while len(through) < len(stores):
            if time.monotonic() > deadline:
                raise RuntimeError(f"campaign not through; logs in {logs}")
            for s, p in procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"assembly-{s} exited {p.returncode}; see {logs}")
                if s not in through and _topic_records(settings.kafka, topics[s]) >= files + 1:
                    through[s] = time.perf_counter() - t0
                    print(f"{s}: every file assembled after {through[s]:.0f} s", file=sys.stderr)
            time.sleep(5)
        wait_cpu_settled(list(pids.values()), 300)
        sampler.stop_flag.set()
        sampler.join()
        load = os.getloadavg()
        steady = {s: rss_mb(pid) for s, pid in pids.items()}
        peak = {s: max(hwm_mb(pid), sampler.max_seen[s]) for s, pid in pids.items()}
        restart: dict[str, tuple[_Start, int, int]] = {}
        moved: dict[str, tuple[_Start, int]] = {}
        for s in stores:
            _stop(procs.pop(s))
            app_id = envs[s]["SOHOA_STREAMS__APP_ID"]
            data_dir = state / "faust" / app_id
            lag = _lags(settings.kafka, app_id, settings.topics.site_events, data_dir)
            restart[s] = (_timed_start(settings, envs[s], topics[s], logs, s, "RESTART",
                                       data_dir), *lag)
            print(f"{s}: restart to first event {restart[s][0].seconds:.1f} s", file=sys.stderr)
            if s == "rocksdb":  # the partitions moved to a worker with an empty disk
                new_dir = state / "faust-new"
                env = {**envs[s], "SOHOA_STREAMS__DATA_DIR": str(new_dir)}
                to_read = _lags(settings.kafka, app_id, settings.topics.site_events,
                                new_dir / app_id)[1]
                moved[s] = (_timed_start(settings, env, topics[s], logs, s, "MOVED",
                                         new_dir / app_id), to_read)
                print(f"{s}: new worker, empty data dir, to first event "
                      f"{moved[s][0].seconds:.1f} s", file=sys.stderr)
        n = files * per_file
        for s in stores:
            figures += [
                {"name": f"assembly worker, store {s}: steady, {n} pages / {files} files "
                         "assembled", "value": round(steady[s], 1), "unit": "MB"},
                {"name": "  peak (VmHWM) while they streamed through", "value": round(peak[s], 1),
                 "unit": "MB"},
                {"name": "  idle after start-up, before the campaign",
                 "value": round(idle[s], 1), "unit": "MB"},
                {"name": "  every file assembled after (both workers on the same 2 cores)",
                 "value": round(through[s]), "unit": "s"},
                {"name": "  restart (SIGTERM, same data dir) to the first new file assembled",
                 "value": round(restart[s][0].seconds, 1), "unit": "s"},
                {"name": "  RSS at that first event", "value": round(restart[s][0].rss_mb, 1),
                 "unit": "MB"},
                {"name": "  site-events records not committed when it stopped",
                 "value": restart[s][1], "unit": "records"},
                {"name": "  changelog offsets the restart had to read",
                 "value": restart[s][2], "unit": "records"},
                {"name": "  its data dir on disk", "value": round(restart[s][0].disk_mb, 1),
                 "unit": "MB"},
            ]
            if s in moved:
                figures += [
                    {"name": "  a new worker on an empty data dir (the partitions moved) to "
                             "the first new file assembled",
                     "value": round(moved[s][0].seconds, 1), "unit": "s"},
                    {"name": "  changelog offsets it had to read (all; fewer records after "
                             "compaction)", "value": moved[s][1], "unit": "records"},
                    {"name": "  RSS at that first event", "value": round(moved[s][0].rss_mb, 1),
                     "unit": "MB"},
                ]
        figures += [
            {"name": f"campaign produced to Kafka ({sent} events)", "value": round(produced_s),
             "unit": "s"},
            {"name": "load average (1, 5, 15 min) when every file was assembled",
             "value": " / ".join(f"{x:.2f}" for x in load), "unit": ""},
            {"name": "load average (1, 5, 15 min) after the restarts",
             "value": " / ".join(f"{x:.2f}" for x in os.getloadavg()), "unit": ""},
        ]
        return {"name": "memory-stores", "pages": pages, "files": files, "sites": sites,
                "stores": stores, "cores": os.cpu_count(), "figures": figures}
    finally:
        teardown(list(procs.values()), stack, state, keep)


class _NoStack:
    """Stop the workers with the shared teardown but leave the stack up for the agent."""

    def stop_services(self) -> None:
        pass


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pages", type=int, default=100_000,
                    help="pages in the campaign (the issue: 1000000)")
    ap.add_argument("--per-file", type=int, default=25, help="pages per file")
    ap.add_argument("--sites", type=int, default=20, help="sites the files are spread over")
    ap.add_argument("--agent-pages", type=int, default=None,
                    help="pages known to the agent's outbox (default: --pages; 0 skips it)")
    ap.add_argument("--stores", help="assembly workers only, one per table store, side by "
                    "side, with a restart each: e.g. memory,rocksdb")
    ap.add_argument("--keep", action="store_true", help="keep the temp state dir (logs)")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args(argv)
    if args.stores:
        return emit(run_stores(args.pages, args.per_file, args.sites,
                               [s.strip() for s in args.stores.split(",")], args.keep),
                    args.json)
    agent_pages = args.pages if args.agent_pages is None else args.agent_pages
    result = run(args.pages, args.per_file, args.sites, agent_pages, args.keep)
    return emit(result, args.json)


if __name__ == "__main__":
    main()
