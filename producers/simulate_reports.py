"""After `sohoa simulate --through-spine`: does `sohoa report monthly` say what was sent?

For every month the simulated days touch, and the month of the check, the monthly progress
report is built and written as its CSV (the data an officer opens), exactly as
``sohoa report monthly --format csv`` writes it; its site rows and its total row are read back
and compared with the simulator's ledger: the plan's target, the pages scanned in the month and
to its end, the completion percentage as printed, and the accepted pages.

Accepted pages are dated by the day of their file's verdict, which the centre gives when it
judges the file (real time, not simulated time): every clean file's pages were accepted
between the start of the send and the check, so the month of the check holds them all
cumulatively, and a month before the send holds none. When the send began in an earlier month
than the check (a run across midnight at a month's end) the split between the two months is
the centre's, not the ledger's: that one figure is not compared.
"""

from __future__ import annotations

import csv
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg

from producers.simulate_spine import Ledger
from sohoa.config import Settings

Month = tuple[int, int]
# Columns of the report's table (consumers.monthly_doc.COLUMNS) the ledger can speak for.
FIGURES = {
    "Kế hoạch (trang)": "target_pages",
    "Số hóa trong tháng (trang)": "in_month",
    "Lũy kế (trang)": "cumulative",
    "Tỷ lệ hoàn thành": "completion",
    "Nghiệm thu trong tháng (trang)": "accepted_in_month",
    "Nghiệm thu lũy kế (trang)": "accepted_cumulative",
}
TOTAL = "TỔNG CỘNG"


def _month(d: date) -> Month:
    return d.year, d.month


def report_months(ledger: Ledger, today: date) -> list[Month]:
    """The months of the simulated days, and the month of the check (the verdicts')."""
    days = {date.fromisoformat(d) for s in ledger.sites.values()
            for d, n in s.pages_by_day.items() if n}
    return sorted({_month(d) for d in days} | {_month(today)})


def _number(text: str) -> int | str:
    """vi-VN integer text ("1.234") back to 1234; anything else stays text."""
    t = text.strip()
    digits = t.replace(".", "")
    return int(digits) if digits.isdigit() else t


def read_report_csv(path: Path) -> dict[str, dict[str, Any]]:
    """Site rows by site id, and the total row as ``TOTAL``: the compared figures."""
    with path.open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.reader(fh))
    header = next(i for i, r in enumerate(rows) if "Mã điểm" in r)
    cols = rows[header]
    out: dict[str, dict[str, Any]] = {}
    for r in rows[header + 1:]:
        cells = dict(zip(cols, r, strict=False))
        key = cells.get("Mã điểm", "").strip()
        if not key and cells.get("Đơn vị / Điểm số hóa", "").startswith(TOTAL):
            key = TOTAL
        if not key:
            continue
        out[key] = {name: (c if name == "completion" else _number(c))
                    for title, name in FIGURES.items() if (c := cells.get(title)) is not None}
    return out


def expected_report(ledger: Ledger, month: Month, today: date) -> dict[str, dict[str, Any]]:
    from consumers import vi
    from producers.simulate_spine import SiteLedger

    sent_month = _month(date.fromisoformat(ledger.sent_on)) if ledger.sent_on else _month(today)
    accepted: dict[str, bool] = {}  # accepted figure -> "the month holds every clean page"
    if month < sent_month:
        accepted = {"accepted_in_month": False, "accepted_cumulative": False}
    elif month == _month(today):
        accepted = {"accepted_cumulative": True}
        if sent_month == month:
            accepted["accepted_in_month"] = True
    out: dict[str, dict[str, Any]] = {}
    sums = {"target_pages": 0, "in_month": 0, "cumulative": 0, **dict.fromkeys(accepted, 0)}
    for site in sorted(set(ledger.sites) | set(ledger.plan)):
        s = ledger.sites.get(site) or SiteLedger()
        days = {date.fromisoformat(d): n for d, n in s.pages_by_day.items()}
        plan = ledger.plan.get(site)
        target = int(plan["target_pages"]) if plan else None
        row: dict[str, Any] = {
            "target_pages": target if target is not None else "",
            "in_month": sum(n for d, n in days.items() if _month(d) == month),
            "cumulative": sum(n for d, n in days.items() if _month(d) <= month),
            **{k: s.pages_in_clean_files if all_clean else 0
               for k, all_clean in accepted.items()}}
        row["completion"] = vi.pct(row["cumulative"] / target) if target else ""
        out[site] = row
        if target is not None:  # the total counts the plan's sites only
            for k in sums:
                sums[k] += row[k]
    if ledger.plan:
        out[TOTAL] = {**sums, "completion": vi.pct(sums["cumulative"] / sums["target_pages"])
                      if sums["target_pages"] else ""}
    return out


def report_differences(expected: dict[str, dict[str, Any]], observed: dict[str, dict[str, Any]],
                       month: Month) -> list[str]:
    """Each figure the ledger has that the report prints otherwise; a site the ledger has that
    the report lacks, and one the report has that the simulator never played."""
    tag = f"report {month[0]:04d}-{month[1]:02d}"
    out = []
    for key in sorted(set(expected) | set(observed)):
        want, got = expected.get(key), observed.get(key)
        if want is None:
            out.append(f"{tag} {key}: not simulated, in the report")
            continue
        if got is None:
            out.append(f"{tag} {key}: simulated, missing from the report")
            continue
        for name, w in want.items():
            g = got.get(name)
            if g != w:
                out.append(f"{tag} {key} {name}: simulator {w!r}, report {g!r}")
    return out


def compare_reports(settings: Settings, ledger: Ledger, dsn: str,
                    now: datetime | None = None) -> list[str]:
    """Build, write and read back the monthly report of each month the run touches."""
    from consumers.monthly import build_monthly
    from consumers.monthly_doc import write_monthly
    from sohoa.work_calendar import WorkCalendar

    now = now or datetime.now(UTC)
    today = WorkCalendar.from_campaign(settings.campaign).local_today(now)
    out: list[str] = []
    with tempfile.TemporaryDirectory(prefix="sohoa-sim-report-") as tmp, \
            psycopg.connect(dsn, connect_timeout=5) as conn:
        for year, mon in report_months(ledger, today):
            data = build_monthly(conn, settings.campaign, year, mon, today=today)
            path = write_monthly(data, "csv", Path(tmp) / f"{year:04d}-{mon:02d}.csv")
            out += report_differences(expected_report(ledger, (year, mon), today),
                                      read_report_csv(path), (year, mon))
    return out
