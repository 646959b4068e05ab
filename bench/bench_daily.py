"""The per-batch cost of the daily page count, this tree beside another commit's, as one day of
a few sites fills with pages: batches of new pages applied alternately, on one throw-away
PostgreSQL, to a database written by this tree's SQL and one written by the other commit's
`DAYS_BEFORE` and `DAILY` (the rest of the batch is the same code).

    python -m bench.bench_daily                   # against e6836c5~1, the last recount
    python -m bench.bench_daily --against REV --batches 60 --batch 8000 --sites 20

Prints each batch's apply time for both (stderr) and, as JSON, the medians of the first and
last five batches and their ratio; both databases must end with a daily sum equal to their
pages.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import types
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

import consumers.apply.sql_files as sql_files
import consumers.apply.writer as writer
from bench.bench_consumer import postgres
from bench.common import emit
from consumers.apply import BatchApplier, Record, statements
from consumers.db import migrate
from consumers.synth import sha
from sohoa.events import PageScanned

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 3, 3, 1, 0, tzinfo=UTC)  # 08:00 in Hà Nội: the whole run is one day
# The temp table the recount's DAYS_BEFORE fills (this tree's adds the day and removal).
OLD_KNOWN = ('CREATE TEMP TABLE IF NOT EXISTS known_pages (site_id text COLLATE "C" NOT NULL, '
             'fonds text COLLATE "C" NOT NULL, file_code text COLLATE "C" NOT NULL, '
             'document text COLLATE "C" NOT NULL, page_index integer NOT NULL) '
             'ON COMMIT DELETE ROWS')


def other_scripts(rev: str) -> dict[tuple[bool, bool], str]:
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:consumers/apply/sql_files.py"],
                         capture_output=True, text=True, check=True).stdout
    other = types.ModuleType("other_sql_files")
    exec(compile(src, f"{rev}:sql_files.py", "exec"), other.__dict__)
    out = {}
    for key, script in statements.MERGE_SCRIPTS.items():
        s = script.replace(sql_files.DAYS_BEFORE.strip(), other.DAYS_BEFORE.strip())
        out[key] = s.replace(sql_files.DAILY.strip(), other.DAILY.strip())
    return out


def batch(b: int, size: int, sites: int) -> list[Record]:
    out = []
    for i in range(size):
        n = b * size + i
        code, doc = f"HS-{n // 500:05d}", f"{n:07d}.tif"
        e = PageScanned.make(site_id=f"xa-{n % sites:04d}", fonds="", file_code=code,
                             document=doc, number=1, revision=1, uri=f"file:///hot/{code}/{doc}",
                             sha256=sha(n), size_bytes=10, media_type="image/tiff",
                             path=f"{code}/{doc}", occurred_at=T0 + timedelta(seconds=n / 3000))
        out.append(Record("bench", n % 12, n, e.to_json(), e.key().encode()))
    return out


def run(against: str, batches: int, size: int, sites: int, dsn: str | None) -> dict:
    scripts = {"other": other_scripts(against), "this": dict(statements.MERGE_SCRIPTS)}
    times: dict[str, list[float]] = {"other": [], "this": []}
    with postgres(dsn) as make:
        conns, appliers = {}, {}
        for v in times:
            db = make(f"daily_{v}")
            with psycopg.connect(db, autocommit=True) as c:
                migrate(c)
            conn = psycopg.connect(db)
            if v == "other":
                conn.execute(OLD_KNOWN)
                conn.commit()
            conns[v], appliers[v] = conn, BatchApplier(conn, "bench")
        for b in range(batches):
            recs = batch(b, size, sites)
            for v in ("other", "this") if b % 2 == 0 else ("this", "other"):
                writer.MERGE_SCRIPTS = scripts[v]
                t = time.perf_counter()
                with conns[v].transaction():
                    appliers[v].apply(recs)
                times[v].append(time.perf_counter() - t)
            print(f"batch {b + 1:3d}, {(b + 1) * size // sites:7,d} pages a site-day: "
                  f"{against} {times['other'][-1]:.2f} s, this tree {times['this'][-1]:.2f} s",
                  file=sys.stderr, flush=True)
        for v, conn in conns.items():
            row = conn.execute("SELECT (SELECT sum(pages_scanned) FROM daily_progress), "
                               "(SELECT count(*) FROM pages)").fetchone()
            assert row is not None and row[0] == row[1], f"{v}: daily sum {row} against pages"
            conn.close()
    k = min(5, batches)
    med = {v: (statistics.median(t[:k]), statistics.median(t[-k:])) for v, t in times.items()}
    figures = [
        {"name": f"batch of {size:,} new pages over {sites} sites, first {k} batches, {against}",
         "value": round(med["other"][0], 3), "unit": "s"},
        {"name": "  same, this tree", "value": round(med["this"][0], 3), "unit": "s"},
        {"name": f"last {k} batches ({batches * size // sites:,} pages a site-day), {against}",
         "value": round(med["other"][1], 3), "unit": "s"},
        {"name": "  same, this tree", "value": round(med["this"][1], 3), "unit": "s"},
        {"name": f"  last {k}: {against} / this tree",
         "value": round(med["other"][1] / med["this"][1], 2), "unit": "ratio"},
    ]
    return {"name": "daily", "figures": figures}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", default="e6836c5~1",
                    help="the commit whose daily count to compare (default: the last recount)")
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--batch", type=int, default=8000, help="pages per batch")
    ap.add_argument("--sites", type=int, default=20)
    ap.add_argument("--dsn", help="a PostgreSQL superuser DSN (default: a throw-away server)")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args(argv)
    return emit(run(args.against, args.batches, args.batch, args.sites, args.dsn), args.json)


if __name__ == "__main__":
    main()
