"""Latency from a page's event time to its row in PostgreSQL, at offered rates, and the highest
rate the progress store keeps up with; then the campaign's 5x peak (580 pages/s) held.

    python -m bench.bench_latency                      # 100, 1,000, 3,000 pages/s; 580 for 60 s
    python -m bench.bench_latency --rates 100 1000 --agent-rates 100 --step-s 20 --json OUT
    python -m bench.bench_latency --prefill-pages 5000000 --rates 3000 --agent-rates \
        --step-s 1800 --hold-s 0          # issue 24: the peak for 30 min on a 5 M-page state

Two paths, each at the offered rates:
- hot folder (the issue's event path): page files written at the rate into the hot folder of a
  real `sohoa watch`, then Kafka → `sohoa consume` → PostgreSQL. "page stable→row" starts at
  the agent's PageScanned occurred_at, stamped once the file is stable (2 s window) and hashed;
  "written→visible" starts at the write, so it includes the stability window. One agent is one
  site's scanners: its own ceiling is bench_agent's figure, so the higher rates show that
  ceiling, not the spine's.
- Kafka: PageScanned produced by a paced kafka-python producer (acks=all, idempotent — the
  agent's settings), occurred_at stamped just before the send: the spine alone, beyond what one
  agent can offer.
The Faust assembly worker reads the same topic beside the consumer (as deployed). QC and OCR
are off.

Latency per page = audit_log.applied_at − the event's occurred_at. applied_at is PostgreSQL's
now(), the start of the consumer's transaction, so the figure leaves out that transaction's own
write time; the poll-based "visible" figure (count(*) of pages polled every 0.1 s against the
send/write times) includes it, and both are reported.

Starts its own throw-away stack (Kafka + PostgreSQL on free ports, temp state dir).
"""

from __future__ import annotations

import argparse
import bisect
import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bench.common import (
    emit,
    pages_in_postgres,
    spine_env,
    start_component,
    start_throwaway_stack,
    teardown,
)
from consumers.db import scalar
from sohoa.events import FileClosed, PageScanned
from sohoa.kafka_clients import make_producer

AGENT_SITE = "agent-lat"
PEAK = 580  # pages/s: 5x the campaign's average of 3,321 communes x 5,000 pages / 8 h


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def _measure(dsn: str, n: int, rate: int, seconds: float, where: str, params: tuple,
             send: Callable[[list[float]], None], grace_s: float = 0.0,
             count_sql: str | None = None) -> dict:
    """Run ``send`` (which appends the monotonic time of each page it offers to the list it is
    given), poll PostgreSQL until the ``n`` pages matching ``where`` are rows, and measure.
    ``grace_s``: a fixed delay the path adds by design (the agent's stability window), left
    out of the drain allowance. ``count_sql``: a cheaper count of those rows for the poll (a
    count(*) of millions of page rows ten times a second would load the machine it measures)."""
    sent_at: list[float] = []       # monotonic times the i-th page was offered
    polls: list[tuple[float, int]] = []
    stop = threading.Event()

    def poll() -> None:
        with psycopg.connect(dsn, autocommit=True) as c:
            while not stop.is_set():
                got = scalar(c, count_sql or f"SELECT count(*) FROM pages WHERE {where}",
                             params)
                polls.append((time.monotonic(), got))
                if got >= n:
                    return
                time.sleep(0.1)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    t0 = time.monotonic()
    send(sent_at)
    send_s = time.monotonic() - t0
    poller.join(timeout=max(120.0, seconds * 4))
    stop.set()
    done_at = next((t for t, c in polls if c >= n), None)
    with psycopg.connect(dsn) as c:
        lat = [float(r[0]) for r in c.execute(
            "SELECT extract(epoch FROM applied_at - occurred_at) FROM audit_log "
            f"WHERE action = 'PageScanned' AND {where}", params)]
        # "Throughout" a long step: the p99 of each minute of event time.
        by_minute = [float(r[1]) for r in c.execute(
            "SELECT date_trunc('minute', occurred_at), percentile_disc(0.99) WITHIN GROUP "
            "(ORDER BY extract(epoch FROM applied_at - occurred_at)) FROM audit_log "
            f"WHERE action = 'PageScanned' AND {where} GROUP BY 1 ORDER BY 1", params)]
    # Visible latency: the i-th page is visible once the polled count passed i (rows arrive
    # roughly in offer order across partitions; an estimate, polled every 0.1 s).
    times = [t for t, _ in polls]
    counts = [c for _, c in polls]
    visible: list[float] = []
    for idx in range(0, n, max(1, n // 2000)):
        j = bisect.bisect_left(counts, idx + 1)
        if j < len(times) and idx < len(sent_at):
            visible.append(times[j] - sent_at[idx])
    # From the first row to the last: a steady latency shifts both ends alike, so this is the
    # rate rows arrived at, not the rate diluted by one latency over a short step.
    first_at = next((t for t, c in polls if c > 0), None)
    achieved = (n - 1) / max(1e-9, done_at - first_at) if done_at and first_at else 0.0
    tail_s = (done_at - (t0 + send_s) - grace_s) if done_at else float("inf")
    return {"rate": rate, "seconds": seconds, "events": n, "rows": len(lat),
            "send_rate": n / send_s, "achieved": achieved, "drain_after_send_s": tail_s,
            "grace_s": grace_s,
            "p50": _pct(lat, 0.50), "p95": _pct(lat, 0.95), "p99": _pct(lat, 0.99),
            "vis_p50": _pct(visible, 0.50), "vis_p95": _pct(visible, 0.95),
            "vis_p99": _pct(visible, 0.99),
            "p99_by_minute": [round(v, 3) for v in by_minute],
            "p99_worst_minute": max(by_minute, default=float("nan")),
            # Kept up: the sender held the pace, every row was in within 5 s of the last send
            # and the rows' rate over the whole step was at least 90 % of the offered one.
            "kept_up": (bool(done_at) and tail_s <= 5.0 and n / send_s >= 0.95 * rate
                        and achieved >= 0.9 * rate)}


def _paced(n: int, rate: int, one: Callable[[int], None], sent_at: list[float]) -> None:
    """Call ``one(i)`` for i in 0..n-1 at ``rate`` per second, in 10 ms ticks."""
    t0 = time.monotonic()
    i = 0
    while i < n:
        due = min(n, int((time.monotonic() - t0) * rate) + 1)
        while i < due:
            one(i)
            sent_at.append(time.monotonic())
            i += 1
        time.sleep(0.01)


def offer(kafka, topic: str, dsn: str, rate: int, seconds: float, tag: str,
          sites: int = 50, pages_per_file: int = 50) -> dict:
    """Send ``rate`` PageScanned/s for ``seconds`` (and each full file's FileClosed); wait
    until all pages are rows; measure."""
    n = int(rate * seconds)
    prefix = f"{tag}-"
    # Events rendered before the clock starts, with a marker where occurred_at goes: the
    # paced loop then only stamps the time and sends (a pydantic model per send would make
    # this producer, not the spine, the limit on a busy two-core machine).
    marker = datetime(2000, 1, 1, tzinfo=UTC)
    marker_text = PageScanned.make(
        site_id="x", fonds="UBND", file_code="HS-0", document="1.tif", uri="file:///x",
        sha256="0" * 64,
        size_bytes=1, media_type="image/tiff", occurred_at=marker).to_dict()["occurred_at"]
    rendered: list[tuple[str, bytes]] = []
    # A file's FileClosed follows its last page, as a site's closing marker does: a campaign's
    # files close, so the assembly state holds the compacted form of most of them.
    closes: dict[int, tuple[str, bytes]] = {}
    for i in range(n):
        site = f"{prefix}{i % sites:03d}"
        k = i // sites
        code = f"HS-{k // pages_per_file:05d}"
        ev = PageScanned.make(
            site_id=site, fonds="UBND", file_code=code,
            document=f"{k % pages_per_file + 1:04d}.tif", number=k % pages_per_file + 1,
            uri=f"file:///scan/{site}/{i}.tif",
            sha256=f"{i:064x}", size_bytes=100_000, media_type="image/tiff",
            occurred_at=marker)
        rendered.append((ev.key(), ev.to_json()))
        if k % pages_per_file == pages_per_file - 1:
            c = FileClosed(site_id=site, fonds="UBND", file_code=code,
                           expected_pages=pages_per_file, occurred_at=marker)
            closes[i] = (c.key(), c.to_json())
    mark = marker_text.encode()
    assert all(mark in v for _, v in rendered[:1])
    producer = make_producer(kafka, linger_ms=5)

    def one(i: int) -> None:
        now_text = datetime.now(UTC).isoformat()
        if marker_text.endswith("Z"):
            now_text = now_text.replace("+00:00", "Z")
        key, value = rendered[i]
        producer.send(topic, key=key, value=value.replace(mark, now_text.encode(), 1))
        if i in closes:
            key, value = closes[i]
            producer.send(topic, key=key, value=value.replace(mark, now_text.encode(), 1))

    def send(sent_at: list[float]) -> None:
        _paced(n, rate, one, sent_at)
        producer.flush(60)

    try:
        result = _measure(dsn, n, rate, seconds, "site_id LIKE %s", (prefix + "%",), send,
                          count_sql="SELECT coalesce(sum(pages_scanned), 0) FROM daily_progress "
                                    "WHERE site_id LIKE %s")
    finally:
        producer.close()
    with psycopg.connect(dsn) as conn:
        result["files_closed"] = len(closes)
        result["files_by_state"] = dict(conn.execute(
            "SELECT state, count(*) FROM files WHERE site_id LIKE %s GROUP BY 1",
            (prefix + "%",)).fetchall())
    return result


def offer_via_agent(hot: Path, site: str, dsn: str, rate: int, seconds: float, tag: str,
                    stability_s: float, pages_per_file: int = 50) -> dict:
    """Write ``rate`` page files/s into the hot folder a running `sohoa watch` is watching;
    wait until all are rows; measure. event→row here starts at the agent's PageScanned
    occurred_at, stamped once the file is stable and hashed ("page stable in the hot
    folder"); the visible figure starts at the write, so it includes the stability window."""
    from PIL import Image

    n = int(rate * seconds)
    # Distinct tiny PNGs rendered before the clock starts: writing, not encoding, is paced.
    blobs = []
    for i in range(n):
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (i % 256, (i >> 8) % 256, (i >> 16) % 256)).save(
            buf, "PNG", dpi=(300, 300))
        blobs.append(buf.getvalue())

    def one(i: int) -> None:
        path = hot / "UBND" / f"{tag}-HS-{i // pages_per_file:05d}" / \
            f"{i % pages_per_file + 1:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blobs[i])

    return _measure(dsn, n, rate, seconds, "site_id = %s AND file_code LIKE %s",
                    (site, f"{tag}-%"), lambda sent_at: _paced(n, rate, one, sent_at),
                    grace_s=stability_s)


class RssSampler(threading.Thread):
    """Resident memory of the named components every few seconds (is it flat over a step?)."""

    def __init__(self, pids: dict[str, int], every_s: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.pids, self.every_s = pids, every_s
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.every_s):
            self.samples.append((time.monotonic(), {
                name: _rss_mb(pid) for name, pid in self.pids.items()}))

    def between(self, t0: float, t1: float) -> dict[str, dict[str, Any]]:
        """Each component's first, last and highest sample in [t0, t1], in MB, and the
        highest of each minute (flat or growing over a long step)."""
        window = [(t, v) for t, v in self.samples if t0 <= t <= t1]
        if not window:
            return {}
        out: dict[str, dict[str, Any]] = {}
        for name in self.pids:
            minutes: dict[int, float] = {}
            for t, v in window:
                m = int((t - t0) // 60)
                minutes[m] = max(minutes.get(m, 0.0), v[name])
            out[name] = {"first": round(window[0][1][name], 1),
                         "last": round(window[-1][1][name], 1),
                         "max": round(max(v[name] for _, v in window), 1),
                         "max_by_minute": [round(minutes[m], 1) for m in sorted(minutes)]}
        return out


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            kb = next((int(line.split()[1]) for line in fh if line.startswith("VmRSS:")), 0)
    except OSError:
        kb = 0
    return kb / 1024


def prefill_campaign(settings: Any, pages: int, logs: Path) -> dict:
    """A campaign of ``pages`` (files of 25 pages over 20 sites, closed) through the running
    assembly worker and consumer before the steps: the state months of scanning leave behind
    (issue 24 asks the national peak held on 5 M pages). Returns when every file is assembled
    and every page counted."""
    from bench.bench_memory import _topic_records, produce_campaign

    t0 = time.monotonic()
    files, _ = produce_campaign(settings.kafka, settings.topics.site_events, pages, 25, 20)
    produced = time.monotonic() - t0
    deadline = time.monotonic() + max(900.0, pages / 50)
    while (_topic_records(settings.kafka, settings.topics.file_events) < files
           or pages_in_postgres(settings.postgres.url) < pages):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the prefill campaign was not assembled and counted; see {logs}")
        time.sleep(5)
    return {"pages": pages, "files": files, "produced_s": round(produced, 1),
            "assembled_and_counted_s": round(time.monotonic() - t0, 1)}


def run(rates: list[int], step_s: float, hold_s: float, keep: bool = False,
        agent_rates: list[int] | None = None, prefill: int = 0) -> dict:
    state, settings, stack = start_throwaway_stack("latency")
    procs: list[subprocess.Popen] = []
    try:
        kafka = settings.kafka
        dsn = settings.postgres.dsn.get_secret_value()
        env = spine_env(settings, state, "lat")
        logs = state / "logs"
        hot = state / "hot"
        hot.mkdir()
        agent_env = {**env, "SOHOA_WATCHER__SITE_ID": AGENT_SITE,
                     "SOHOA_WATCHER__ROOTS": json.dumps([str(hot)]),
                     "SOHOA_WATCHER__OUTBOX_PATH": str(state / "outbox.sqlite3")}
        for args, penv in ((["consume"], env), (["streams", "--role", "assembly"], env),
                           (["watch"], agent_env)):
            procs.append(start_component(args, penv, logs))
        warm = offer(kafka, settings.topics.site_events, dsn, 10, 1, "warmup")
        deadline = time.monotonic() + 180
        while pages_in_postgres(settings.postgres.url) < warm["events"]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"consumer never counted the warm-up pages; see {logs}")
            time.sleep(0.5)
        prefilled = None
        if prefill:
            print(f"prefilling {prefill} pages …", file=sys.stderr)
            prefilled = prefill_campaign(settings, prefill, logs)
            prefilled["rss_mb"] = {"consumer": _rss_mb(procs[0].pid),
                                   "assembly": _rss_mb(procs[1].pid)}
            print(json.dumps(prefilled), file=sys.stderr)
        rss = RssSampler({"consumer": procs[0].pid, "assembly": procs[1].pid})
        rss.start()
        steps = []
        for r in rates:
            print(f"offering {r} pages/s for {step_s:.0f} s …", file=sys.stderr)
            t0 = time.monotonic()
            steps.append(offer(kafka, settings.topics.site_events, dsn, r, step_s, f"r{r}"))
            steps[-1]["rss_mb"] = rss.between(t0, time.monotonic())
            print(json.dumps(steps[-1]), file=sys.stderr)
        agent_steps = []
        for r in agent_rates or []:
            print(f"writing {r} page files/s into the hot folder for {step_s:.0f} s …",
                  file=sys.stderr)
            agent_steps.append(offer_via_agent(hot, AGENT_SITE, dsn, r, step_s, f"a{r}",
                                               settings.watcher.stability_window_s))
            print(json.dumps(agent_steps[-1]), file=sys.stderr)
        print(f"holding {PEAK} pages/s for {hold_s:.0f} s …", file=sys.stderr)
        hold = offer(kafka, settings.topics.site_events, dsn, PEAK, hold_s, "hold")
        print(json.dumps(hold), file=sys.stderr)
        with psycopg.connect(dsn) as c:
            tables = ("pages", "page_revisions", "files", "audit_log", "daily_progress",
                      "consumer_offsets", "sites")
            size = sum(scalar(c, "SELECT pg_total_relation_size(%s)", (t,)) for t in tables)
            pages_total = scalar(c, "SELECT count(*) FROM pages")
        figures = []
        for s in steps:
            r = s["rate"]
            figures += [
                {"name": f"{r} pages/s offered: p50 event→row", "value": round(s["p50"], 3),
                 "unit": "s"},
                {"name": f"{r} pages/s offered: p95 event→row", "value": round(s["p95"], 3),
                 "unit": "s"},
                {"name": f"{r} pages/s offered: p99 event→row", "value": round(s["p99"], 3),
                 "unit": "s"},
                {"name": f"{r} pages/s offered: p99 visible (polled count)",
                 "value": round(s["vis_p99"], 3), "unit": "s"},
                {"name": f"{r} pages/s offered: p99 event→row, worst minute",
                 "value": round(s["p99_worst_minute"], 3), "unit": "s"},
                {"name": f"{r} pages/s offered: achieved", "value": round(s["achieved"]),
                 "unit": "pages/s"},
                {"name": f"{r} pages/s offered: kept up", "value": s["kept_up"], "unit": "bool"},
            ]
        for s in agent_steps:
            r = s["rate"]
            figures += [
                {"name": f"hot folder, {r} pages/s written: p{q} page stable→row",
                 "value": round(s[f"p{q}"], 3), "unit": "s"} for q in (50, 95, 99)]
            figures += [
                {"name": f"hot folder, {r} pages/s written: p99 written→visible "
                         "(stability window included)", "value": round(s["vis_p99"], 3),
                 "unit": "s"},
                {"name": f"hot folder, {r} pages/s written: achieved",
                 "value": round(s["achieved"]), "unit": "pages/s"},
                {"name": f"hot folder, {r} pages/s written: kept up", "value": s["kept_up"],
                 "unit": "bool"},
            ]
        if agent_steps:
            figures.append({"name": "hot folder: highest written rate kept up with",
                            "value": max((s["rate"] for s in agent_steps if s["kept_up"]),
                                         default=0), "unit": "pages/s"})
        kept = [s["rate"] for s in [*steps, hold] if s["kept_up"]]
        best_achieved = max((s["achieved"] for s in steps), default=0)
        figures += [
            {"name": "highest offered rate kept up with", "value": max(kept, default=0),
             "unit": "pages/s"},
            {"name": "highest achieved rate (any step)", "value": round(best_achieved),
             "unit": "pages/s"},
            {"name": f"{PEAK} pages/s held for {hold_s:.0f} s: achieved",
             "value": round(hold["achieved"]), "unit": "pages/s", "goal": PEAK,
             "met": hold["kept_up"]},
            {"name": f"{PEAK} pages/s held: p99 event→row", "value": round(hold["p99"], 3),
             "unit": "s"},
            {"name": f"{PEAK} pages/s held: p99 visible (polled count)",
             "value": round(hold["vis_p99"], 3), "unit": "s"},
            {"name": "PostgreSQL bytes per page (tables+indexes / pages)",
             "value": round(size / max(1, pages_total)), "unit": "bytes"},
        ]
        return {"name": "latency", "path": "Kafka → consume → PostgreSQL (+ Faust assembly); "
                "hot folder → sohoa watch → Kafka → consume → PostgreSQL",
                "prefill": prefilled, "steps": steps, "agent_steps": agent_steps,
                "hold": hold, "figures": figures}
    finally:
        teardown(procs, stack, state, keep)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rates", type=int, nargs="+", default=[100, 1000, 3000])
    ap.add_argument("--agent-rates", type=int, nargs="*", default=[100, 1000, 3000],
                    help="page files/s written into the hot folder of a real `sohoa watch` "
                         "(the issue's event path); none to skip")
    ap.add_argument("--step-s", type=float, default=20.0, help="seconds per offered rate")
    ap.add_argument("--hold-s", type=float, default=60.0, help=f"seconds at {PEAK} pages/s")
    ap.add_argument("--prefill-pages", type=int, default=0,
                    help="a closed campaign of this many pages assembled and counted before "
                         "the steps (issue 24: 5000000)")
    ap.add_argument("--keep", action="store_true", help="keep the temp state dir (logs)")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args(argv)
    result = run(args.rates, args.step_s, args.hold_s, keep=args.keep,
                 agent_rates=args.agent_rates, prefill=args.prefill_pages)
    return emit(result, args.json)


if __name__ == "__main__":
    main()
