"""The monthly report over 3,000 sites × 31 days: query + forecast, then each output format.

    python -m bench.bench_report                       # throw-away PostgreSQL on a free port
    python -m bench.bench_report --dsn postgresql://postgres@127.0.0.1:5432/postgres

The database is filled straight with COPY (sites and `daily_progress`, which is all the report
reads), for the reported month and the two months before it, so forecasts have history.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from datetime import date, timedelta
from datetime import time as dtime
from pathlib import Path

import psycopg

from bench.bench_consumer import postgres
from bench.common import emit
from consumers.db import migrate, scalar
from consumers.monthly import build_monthly
from consumers.monthly_doc import write_monthly
from sohoa.config import CampaignConfig
from sohoa.work_calendar import WorkCalendar


def fill(dsn: str, sites: int, month_first: date, days_before: int, days: int) -> int:
    rnd = random.Random(3)
    cal = WorkCalendar()
    start = month_first - timedelta(days=days_before)
    rows = 0
    with psycopg.connect(dsn) as conn:
        cid = scalar(conn, "INSERT INTO campaigns (name, start_date) VALUES ('bench', %s) "
                           "RETURNING campaign_id", (start,))
        with conn.cursor().copy(
                "COPY sites (site_id, name, unit, contractor, campaign_id, target_pages, "
                "target_files, deadline, timezone, work_start, work_end, workdays) "
                "FROM STDIN") as cp:
            for i in range(sites):
                cp.write_row((f"xa-{i:05d}", f"Xã số {i}", f"Huyện {i % 40:02d}",
                              f"Công ty {i % 12}", cid, rnd.randint(50_000, 400_000),
                              rnd.randint(500, 4000),
                              month_first + timedelta(days=rnd.randint(30, 300)),
                              "Asia/Ho_Chi_Minh", dtime(7, 30), dtime(17, 0), [0, 1, 2, 3, 4]))
        with conn.cursor().copy("COPY daily_progress (site_id, day, pages_scanned, "
                                "pages_accepted, files_accepted) FROM STDIN") as cp:
            for i in range(sites):
                rate = rnd.randint(100, 1500)
                for d in range(days_before + days):
                    day = start + timedelta(days=d)
                    if not cal.is_working_day(day):
                        continue
                    n = max(0, int(rnd.gauss(rate, rate / 4)))
                    cp.write_row((f"xa-{i:05d}", day, n, int(n * 0.9), n // 120))
                    rows += 1
        conn.commit()
    return rows


def run(dsn: str | None, sites: int, month: str) -> dict:
    year, mon = (int(x) for x in month.split("-"))
    first = date(year, mon, 1)
    out_dir = Path(tempfile.mkdtemp(prefix="sohoa-bench-report-"))
    with postgres(dsn) as new_db:
        db = new_db("bench_report")
        with psycopg.connect(db, autocommit=True) as conn:
            migrate(conn)
        t = time.perf_counter()
        rows = fill(db, sites, first, 61, 31)
        fill_s = time.perf_counter() - t
        figures: dict[str, float] = {}
        with psycopg.connect(db, autocommit=True) as conn:
            t = time.perf_counter()
            rep = build_monthly(conn, CampaignConfig(), year, mon,
                                today=first + timedelta(days=45))
            figures["query_and_forecast_s"] = time.perf_counter() - t
        for fmt in ("csv", "xlsx", "pdf", "docx"):
            t = time.perf_counter()
            path = write_monthly(rep, fmt, out_dir / f"report.{fmt}")
            figures[f"write_{fmt}_s"] = time.perf_counter() - t
            figures[f"{fmt}_bytes"] = path.stat().st_size
    q = figures["query_and_forecast_s"]
    return {
        "benchmark": "report",
        "sites": sites,
        "daily_rows": rows,
        "month": month,
        "fill_seconds": round(fill_s, 2),
        **{k: round(v, 3) if k.endswith("_s") else int(v) for k, v in figures.items()},
        "monthly_xlsx_total_s": round(q + figures["write_xlsx_s"], 3),
        "monthly_csv_total_s": round(q + figures["write_csv_s"], 3),
        "monthly_pdf_total_s": round(q + figures["write_pdf_s"], 3),
        "monthly_docx_total_s": round(q + figures["write_docx_s"], 3),
        "goal": "monthly report (3,000 sites × 31 days) under 5 s",
        "goal_met_xlsx": q + figures["write_xlsx_s"] < 5,
        "goal_met_pdf": q + figures["write_pdf_s"] < 5,
        "goal_met_docx": q + figures["write_docx_s"] < 5,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", help="superuser DSN of an existing server (default: throw-away)")
    ap.add_argument("--sites", type=int, default=3000)
    ap.add_argument("--month", default="2026-03")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    res = run(args.dsn, args.sites, args.month)
    emit(res, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
