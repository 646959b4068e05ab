"""Formula injection: a folder, site, unit or contractor named like a formula never becomes a
live formula in a report the project writes (XLSX read back with openpyxl, CSV as text)."""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from openpyxl import load_workbook

from consumers.acceptance import AcceptanceReport, AcceptanceRow, AcceptedFile
from consumers.acceptance_doc import write_acceptance
from consumers.cells import FORMULA_TRIGGERS, neutralise
from consumers.monthly import MonthlyReport, MonthlyRow
from consumers.monthly_doc import write_monthly
from consumers.page_sizes import SizeTally
from sohoa.events import Event, FileVerdict, PageScanned
from tests.support.procs import run_sohoa
from tests.support.progress_store import apply_events, fresh_db

# A folder name can hold no "/": the formula a contractor's folder can carry.
LINK = '=HYPERLINK("127.0.0.1:8080","Bấm vào đây")'
HOSTILE = [LINK, "+1+1", "-2+3", "@SUM(1,1)", "\t=1+1", "\r=1+1", " =1+1",
           "=cmd|' /C calc'!A0"]


def _xlsx_cells(path: Path) -> list:
    wb = load_workbook(path)
    return [c for ws in wb.worksheets for row in ws.iter_rows() for c in row
            if c.value is not None]


def _csv_fields(path: Path) -> list[str]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return [f for row in csv.reader(fh) for f in row]


def _assert_inert(xlsx: Path, csv_path: Path, expected: list[str],
                  csv_expected: list[str] | None = None) -> None:
    cells = _xlsx_cells(xlsx)
    assert [c.coordinate for c in cells if c.data_type == "f"] == []
    strings = {c.value for c in cells if c.data_type == "s"}
    fields = _csv_fields(csv_path)
    for value in expected:
        assert "'" + value in strings, value
    for value in expected if csv_expected is None else csv_expected:
        assert "'" + value in fields, value
    for text in [*strings, *fields]:
        assert not text.lstrip(" ").startswith(FORMULA_TRIGGERS), text


def test_neutralise_only_touches_text_that_would_run() -> None:
    assert neutralise(LINK) == "'" + LINK
    assert neutralise("HS-2024-001") == "HS-2024-001"
    assert neutralise("Hồ sơ = 3 trang") == "Hồ sơ = 3 trang"
    assert neutralise(-5) == -5 and neutralise(None) is None and neutralise(2.5) == 2.5
    assert all(neutralise(v).startswith("'") for v in HOSTILE)


def test_reports_written_from_hostile_values_hold_no_formula(tmp_path: Path) -> None:
    rows = [MonthlyRow(unit=v, site_id=f"xa-{i}", name=v, contractor=v, target_pages=10,
                       in_month=1, cumulative=2, accepted_in_month=1, accepted_cumulative=1,
                       deadline=date(2026, 4, 30), planned_to_date=1.0, forecast=None,
                       assessment="chậm tiến độ") for i, v in enumerate(HOSTILE)]
    monthly = MonthlyReport(2026, 3, date(2026, 3, 31), date(2026, 3, 31), rows,
                            [date(2026, 3, 2)], [1.0], [1.0])
    write_monthly(monthly, "xlsx", tmp_path / "m.xlsx")
    write_monthly(monthly, "csv", tmp_path / "m.csv")
    _assert_inert(tmp_path / "m.xlsx", tmp_path / "m.csv", HOSTILE)

    acc_rows = [AcceptanceRow(v, f"xa-{i}", v, 1, 3, SizeTally(a4=3, a4_equivalents=3), 0, 0,
                              Counter({v: 1}))
                for i, v in enumerate(HOSTILE)]
    acc = AcceptanceReport("@Cty", date(2026, 3, 1), date(2026, 3, 31), date(2026, 3, 31),
                           acc_rows, [AcceptedFile("xa-0", v, v, 1, 3, date(2026, 3, 5),
                                                   SizeTally(a4=3, a4_equivalents=3))
                                      for v in HOSTILE])
    write_acceptance(acc, "xlsx", tmp_path / "a.xlsx")
    write_acceptance(acc, "csv", tmp_path / "a.csv")
    _assert_inert(tmp_path / "a.xlsx", tmp_path / "a.csv", HOSTILE)
    detail = load_workbook(tmp_path / "a.xlsx")["Hồ sơ nghiệm thu"]
    assert detail["E5"].value == "Mã hồ sơ"
    assert detail["E6"].value == "'" + LINK and detail["E6"].data_type == "s"


@pytest.mark.integration
def test_acceptance_report_of_a_folder_named_like_a_formula(stack, tmp_path: Path) -> None:
    """The real path: a contractor's folder named =HYPERLINK(…) through PostgreSQL into the
    acceptance report, and a plan whose unit and site name are formulas."""
    dsn = fresh_db(stack, "cells")
    env = {**stack.env, "SOHOA_POSTGRES__DSN": dsn}
    t0 = datetime(2026, 3, 3, 2, 0, tzinfo=UTC)
    events: list[Event] = []
    for n in (1, 2):
        sha = hashlib.sha256(f"p{n}".encode()).hexdigest()
        events.append(PageScanned.make(
            site_id="xa-a", fonds="UBND", file_code=LINK, document=f"{n:03d}.tif", number=n,
            uri=f"file:///hot/UBND/x/{n:03d}.tif", sha256=sha, size_bytes=10,
            media_type="image/tiff", path=f"UBND/x/{n:03d}.tif",
            occurred_at=t0 + timedelta(seconds=n)))
    events.append(FileVerdict(site_id="xa-a", fonds="UBND", file_code=LINK, verdict="accepted",
                              pages_total=2, pages_accepted=2,
                              occurred_at=t0 + timedelta(minutes=5)))
    with psycopg.connect(dsn) as conn:
        apply_events(conn, events)
    plan = tmp_path / "plan.csv"
    plan.write_text("site_id,unit,contractor,target_pages,target_files,deadline,name\n"
                    'xa-a,@SUM(1+1),Cty A,100,5,30/06/2026,"+1+1"\n', encoding="utf-8")
    res = run_sohoa(["campaign", "import", str(plan), "--start", "02/03/2026"], env)
    assert res.returncode == 0, res.stderr
    for fmt in ("xlsx", "csv"):
        res = run_sohoa(["report", "acceptance", "--contractor", "Cty A", "--from",
                         "01/03/2026", "--to", "31/03/2026", "--format", fmt, "--out",
                         str(tmp_path / f"a.{fmt}")], env)
        assert res.returncode == 0, res.stderr
    # The CSV has no per-file sheet: its folder names are only in the XLSX.
    _assert_inert(tmp_path / "a.xlsx", tmp_path / "a.csv", [LINK, "@SUM(1+1)", "+1+1"],
                  ["@SUM(1+1)", "+1+1"])
