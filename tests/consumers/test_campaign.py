"""Campaign plans: validation that names row and column, CSV and XLSX, import and show."""

from __future__ import annotations

import json
from datetime import date, time
from pathlib import Path

import psycopg
import pytest

from consumers.campaign import PlanError, read_plan
from sohoa.config import CampaignConfig
from tests.support.procs import run_sohoa
from tests.support.progress_store import apply_events, fresh_db, scalar
from tests.support.store_events import page

HEADER = "site_id,unit,contractor,target_pages,target_files,deadline"


def write(tmp_path: Path, text: str, name: str = "plan.csv", bom: bool = False) -> Path:
    p = tmp_path / name
    p.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return p


def test_csv_plan_with_bom_semicolons_and_vietnamese_dates(tmp_path: Path) -> None:
    p = write(tmp_path, "site_id;unit;contractor;target_pages;target_files;deadline;"
              "name;work_start;work_end\n"
              "xa-tan-phu;Huyện Tân Phú;Công ty Số Việt;12.000;300;31/10/2026;Xã Tân Phú;"
              "07:00;16:30\n"
              "xa-an-binh;Huyện Tân Phú;;5000;100;2026-10-15;;;\n", bom=True)
    rows = read_plan(p, CampaignConfig())
    assert [r.site_id for r in rows] == ["xa-tan-phu", "xa-an-binh"]
    a, b = rows
    assert (a.target_pages, a.target_files, a.deadline) == (12000, 300, date(2026, 10, 31))
    assert (a.unit, a.contractor, a.name) == ("Huyện Tân Phú", "Công ty Số Việt", "Xã Tân Phú")
    assert (a.work_start, a.work_end) == (time(7, 0), time(16, 30))
    assert b.contractor is None and b.work_start == time(7, 30)  # campaign default


def test_every_bad_cell_is_named_by_row_and_column(tmp_path: Path) -> None:
    p = write(tmp_path, HEADER + "\n"
              "xa-a,Huyện A,X,100,5,31/12/2026\n"
              "Xa A!,Huyện A,X,-3,5,31/12/2026\n"
              "xa-c,,X,100,năm,32/13/2026\n"
              "xa-a,Huyện A,X,100,5,31/12/2026\n")
    with pytest.raises(PlanError) as err:
        read_plan(p, CampaignConfig())
    text = "\n".join(err.value.errors)
    assert "dòng 3, cột site_id" in text
    assert "dòng 3, cột target_pages" in text
    assert "dòng 4, cột unit" in text
    assert "dòng 4, cột target_files" in text
    assert "dòng 4, cột deadline" in text
    assert "dòng 5, cột site_id" in text and "trùng với dòng 2" in text
    assert not any("dòng 2," in e for e in err.value.errors)


def test_missing_column_is_reported(tmp_path: Path) -> None:
    p = write(tmp_path, "site_id,unit,target_pages\nxa-a,A,1\n")
    with pytest.raises(PlanError) as err:
        read_plan(p, CampaignConfig())
    assert "contractor" in err.value.errors[0] and "deadline" in err.value.errors[0]


def test_xlsx_plan_reads_dates_and_numbers_as_excel_stores_them(tmp_path: Path) -> None:
    from datetime import datetime

    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.append(["Mã điểm", "Đơn vị", "Nhà thầu", "Số trang", "Số hồ sơ", "Hạn hoàn thành"])
    ws.append(["xa-b", "Huyện B", "Cty Y", 2500, 40.0, datetime(2026, 11, 30)])
    path = tmp_path / "plan.xlsx"
    wb.save(path)
    (row,) = read_plan(path, CampaignConfig())
    assert (row.site_id, row.target_pages, row.target_files, row.deadline) == (
        "xa-b", 2500, 40, date(2026, 11, 30))


@pytest.mark.integration
def test_import_and_show_and_a_late_plan_keeps_counted_pages(stack, tmp_path: Path) -> None:
    dsn = fresh_db(stack, "plan")
    env = {**stack.env, "SOHOA_POSTGRES__DSN": dsn}
    # Pages arrive before the plan: the site is created without a target.
    with psycopg.connect(dsn) as conn:
        apply_events(conn, [page(site="xa-a", no=1), page(site="xa-a", no=2)])
    bad = write(tmp_path, HEADER + "\nxa-a,Huyện A,X,abc,5,31/12/2026\n", "bad.csv")
    out = run_sohoa(["campaign", "import", str(bad)], env)
    assert out.returncode == 2
    assert "dòng 2, cột target_pages" in out.stderr
    good = write(tmp_path, HEADER + ",name\nxa-a,Huyện A,Cty X,1000,10,31/12/2026,Xã A\n"
                 "xa-b,Huyện A,Cty X,500,5,15/12/2026,\n", "good.csv")
    out = run_sohoa(["campaign", "import", str(good), "--start", "01/03/2026"], env)
    assert out.returncode == 0, out.stderr
    shown = json.loads(run_sohoa(["campaign", "show", "--json"], env).stdout)
    by_id = {r["site_id"]: r for r in shown}
    assert by_id["xa-a"]["target_pages"] == 1000 and by_id["xa-a"]["auto_created"] is False
    assert by_id["xa-b"]["deadline"] == "2026-12-15"
    st = json.loads(run_sohoa(["status", "--json"], env).stdout)
    a = next(s for s in st["sites"] if s["site_id"] == "xa-a")
    assert (a["pages"], a["target_pages"], a["remaining_pages"]) == (2, 1000, 998)
    # Re-importing the same plan is harmless.
    assert run_sohoa(["campaign", "import", str(good)], env).returncode == 0
    with psycopg.connect(dsn) as conn:
        assert scalar(conn, "SELECT count(*) FROM sites") == 2
        assert scalar(conn, "SELECT start_date FROM campaigns") == date(2026, 3, 1)
