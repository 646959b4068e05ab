"""Assembly throughput of the real Faust worker on page events, QC and OCR switched off.

    python -m bench.bench_streams                 # throw-away Kafka on free ports
    python -m bench.bench_streams --files 100 --pages 48 --json out.json

The events (PageScanned, a FileManifest and a FileClosed per file) are produced first; then
`sohoa streams --role assembly` is started and its own counter
(`sohoa_stream_events_total{stage="assembly"}` on /metrics) is polled: the rate is taken from
the first processed event to the last, so the worker's start-up and rebalance do not count.
For scale, the same topic is also read by a plain kafka-python consumer (no parsing) in the
same run: the floor of reading those bytes from this broker on this machine.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from bench.common import emit, raw_consume
from infra.procs import free_port
from infra.stack import LocalStack, settings_for_stack
from infra.topics import apply_spec, load_spec
from sohoa.config import Settings, TopicsConfig
from sohoa.events import FileClosed, FileManifest, PageScanned
from sohoa.kafka_clients import make_producer

GOAL_EVENTS_PER_S = 3000.0


def events(n_files: int, pages: int, site: str = "bench-site") -> list[tuple[str, bytes]]:
    out = []
    for f in range(n_files):
        code = f"HS-{f:05d}"
        m = FileManifest(site_id=site, fonds="UBND", file_code=code, expected_pages=pages + 1)
        out.append((m.key(), m.to_json()))
        for p in range(1, pages + 1):
            sha = hashlib.sha256(f"{code}/{p}".encode()).hexdigest()
            ev = PageScanned.make(site_id=site, fonds="UBND", file_code=code,
                                  document=f"{p:04d}.tif", number=p,
                                  uri=f"file:///scans/UBND/{code}/{p:04d}.tif", sha256=sha,
                                  size_bytes=2_500_000, media_type="image/tiff",
                                  path=f"UBND/{code}/{p:04d}.tif")
            out.append((ev.key(), ev.to_json()))
        c = FileClosed(site_id=site, fonds="UBND", file_code=code)
        out.append((c.key(), c.to_json()))
    return out


def processed(port: int) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    total = 0.0
    for m in re.finditer(r'^sohoa_stream_events_total\{stage="assembly",type="[^"]+"\} (\S+)$',
                         text, re.M):
        total += float(m.group(1))
    return total


def raw_read(settings: Settings, topic: str, n: int) -> float:
    got, dt = raw_consume(settings.kafka, topic, n, timeout_ms=5000, max_poll_records=2000)
    return got / dt


def run(n_files: int, pages: int, bootstrap: str | None) -> dict:
    state = Path(tempfile.mkdtemp(prefix="sohoa-bench-streams-"))
    stack = None
    settings = Settings()
    if bootstrap:
        settings.kafka.bootstrap = bootstrap
    else:
        settings = settings_for_stack(Settings(), state, kafka_port=free_port(),
                                      kafka_controller_port=free_port(),
                                      postgres_port=free_port())
        stack = LocalStack(settings)
        print(f"starting a throw-away Kafka in {state} …", file=sys.stderr)
        stack.kafka.start(wait=True)
    try:
        suffix = uuid.uuid4().hex[:8]
        topics = TopicsConfig(site_events=f"bench.site-events.{suffix}",
                              file_events=f"bench.file-events.{suffix}",
                              dead_letters=f"bench.dead-letters.{suffix}")
        apply_spec(settings.kafka, load_spec(topics))
        evs = events(n_files, pages)
        producer = make_producer(settings.kafka, linger_ms=20, batch_size=256 * 1024)
        for key, value in evs:
            producer.send(topics.site_events, key=key, value=value)
        producer.flush(120)
        producer.close()
        raw_rate = raw_read(settings, topics.site_events, len(evs))
        port = free_port()
        env = {**os.environ,
               "SOHOA_KAFKA__BOOTSTRAP": settings.kafka.bootstrap,
               "SOHOA_TOPICS__SITE_EVENTS": topics.site_events,
               "SOHOA_TOPICS__FILE_EVENTS": topics.file_events,
               "SOHOA_TOPICS__DEAD_LETTERS": topics.dead_letters,
               "SOHOA_STREAMS__APP_ID": f"bench-assembly-{suffix}",
               "SOHOA_STREAMS__WEB_PORT": str(port),
               "SOHOA_STREAMS__DATA_DIR": str(state / "faust"),
               "SOHOA_STREAMS__QC_ENABLED": "false",
               "SOHOA_OCR__ENABLED": "false",
               "SOHOA_LOGGING__LEVEL": "WARNING"}
        log = (state / "assembly.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "sohoa.cli", "streams", "--role",
                                 "assembly"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            first_t: float | None = None
            first_n = 0.0
            first_cpu: float | None = None
            deadline = time.monotonic() + 600
            last = 0.0
            while time.monotonic() < deadline:
                n = processed(port)
                now = time.perf_counter()
                if n and first_t is None:
                    first_t, first_n, first_cpu = now, n, _cpu_seconds(proc.pid)
                if n is not None and n >= len(evs):
                    last = n
                    end_t = now
                    break
                if proc.poll() is not None:
                    raise RuntimeError(f"assembly worker exited {proc.returncode}")
                time.sleep(0.05)
            else:
                raise RuntimeError("assembly did not finish in 600 s")
            # The counter reached the total, so the first look that saw events was taken.
            assert first_t is not None
            if end_t <= first_t:
                raise RuntimeError(
                    f"all {len(evs)} events were done at the first look at the worker's "
                    "counter: too few to time; give more --files/--pages")
            rate = (last - first_n) / (end_t - first_t)
            cpu = _cpu_seconds(proc.pid)
            window_cpu = (cpu or 0.0) - (first_cpu or 0.0)
            per_cpu_s = (last - first_n) / window_cpu if window_cpu > 0 else None
            load = os.getloadavg()[0]
        finally:
            proc.terminate()
            proc.wait(60)
            log.close()
        return {
            "benchmark": "streams_assembly",
            "files": n_files, "pages_per_file": pages, "events": len(evs),
            "assembly_events_per_s": round(rate, 1),
            "raw_kafka_read_events_per_s": round(raw_rate, 1),
            "assembly_vs_raw_read": round(rate / raw_rate, 3),
            "worker_cpu_s": cpu,
            "assembly_events_per_cpu_s": round(per_cpu_s, 1) if per_cpu_s else None,
            "load_average_1m_at_end": round(load, 2),
            "cores": os.cpu_count(),
            "goal_events_per_s": GOAL_EVENTS_PER_S,
            "goal_met": rate >= GOAL_EVENTS_PER_S,
            "note": "QC and OCR off; rate from the first processed event to the last, read "
                    "from the worker's own counter; events per CPU-second = the same window "
                    "divided by the worker's CPU time in it (independent of other load on the "
                    "machine); raw read = kafka-python consumer, no parse",
        }
    finally:
        if stack is not None:
            stack.kafka.stop()
        shutil.rmtree(state, ignore_errors=True)


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return round((int(fields[11]) + int(fields[12])) / tick, 2)
    except (OSError, ValueError, IndexError):
        return None


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--files", type=int, default=600)
    ap.add_argument("--pages", type=int, default=48)
    ap.add_argument("--bootstrap", help="use this Kafka instead of a throw-away one")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args(argv)
    result = run(args.files, args.pages, args.bootstrap)
    return emit(result, args.json)


if __name__ == "__main__":
    main()
