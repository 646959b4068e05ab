"""The reports over a simulated March 2026 on the real PostgreSQL, through the `sohoa` CLI as the
reader role, each format read back (python-docx, pdftotext, openpyxl) and checked against an
independent tally of the test's own events; the monthly report's first page is rendered to PNG
(pdftoppm) under tests/artefacts/reports/."""

from __future__ import annotations

import csv
import shutil
import subprocess
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
import pytest
from docx import Document
from openpyxl import load_workbook

from consumers import vi
from consumers.monthly_doc import TOTAL_LABEL, UNPLANNED_GROUP, UNPLANNED_TOTAL
from consumers.synth import A3, A4, SynthConfig, generate, site_ids
from sohoa.events import (
    Event,
    FileVerdict,
    PageChecked,
    PageRemoved,
    PageScanned,
    RescanReason,
)
from sohoa.work_calendar import WorkCalendar
from tests.support.artefacts import artefact_dir
from tests.support.procs import run_sohoa
from tests.support.progress_store import apply_events, as_role, fresh_db

pytestmark = pytest.mark.integration
TZ = ZoneInfo("Asia/Ho_Chi_Minh")
CFG = SynthConfig(sites=5, files_per_site=8, pages_per_file=15, start=date(2026, 3, 2),
                  days=27, seed=31)
SITES = site_ids(CFG.sites)
PLANNED = SITES[:4]           # SITES[4] sends pages but is not in the plan
NAMES = {SITES[0]: "Xã Một", SITES[1]: "Xã Hai", SITES[2]: "Xã Ba", SITES[3]: "Xã Bốn"}
TARGETS = {SITES[0]: 50, SITES[1]: 90_000, SITES[2]: 200, SITES[3]: 150}
PRICES = {"a4": 1_500, "a3": 2_800, "larger": 1_400}
BUDGET_PRICES = {"a4": 1_000, "a3": 2_000, "larger": 1_000}
CONFIG = f"""
[reports]
budget_min_sample_pages = 50
budget_unit_prices = {{ a4 = {BUDGET_PRICES['a4']}, a3 = {BUDGET_PRICES['a3']}, \
larger = {BUDGET_PRICES['larger']} }}

[reports.issuer]
form = "state"
parent = "Ủy ban nhân dân tỉnh Đồng Nai"
name = "Sở Nội vụ"
full_name = "Sở Nội vụ tỉnh Đồng Nai"
abbreviation = "SNV"
place = "Đồng Nai"
recipients = ["Ủy ban nhân dân tỉnh (để báo cáo)", "Các huyện Tân Phú, Định Quán"]
archive = "VT, CCVTLT"

[reports.issuer.signer]
authority = "KT. Giám đốc"
title = "Phó Giám đốc"
name = "Nguyễn Văn An"

[[reports.contracts]]
contractor = "Cty Số Việt"
number = "15/2026/HĐ-SNV"
signed = 2026-01-15
legal_name = "Công ty TNHH Số Việt"
representative = "Lê Văn Cường"
representative_title = "Giám đốc"
unit_prices = {{ a4 = {PRICES['a4']}, a3 = {PRICES['a3']}, larger = {PRICES['larger']} }}
"""


def _extra_rescan() -> list:
    """A file of site 0 sent back with reasons in the workers' English grammar."""
    t0 = datetime(2026, 3, 19, 3, 0, tzinfo=UTC)
    base = {"site_id": SITES[0], "fonds": "UBND", "file_code": "HS-XIEN"}
    events: list[Event] = []
    events += [PageScanned.make(**base, document=f"{n:03d}.tif", number=n,
                                uri=f"file:///hot/UBND/HS-XIEN/{n:03d}.tif",
                                sha256=f"{n:064x}", size_bytes=100, media_type="image/tiff",
                                path=f"UBND/HS-XIEN/{n:03d}.tif",
                                occurred_at=t0 + timedelta(minutes=n)) for n in (1, 2)]
    events.append(FileVerdict(
        **base, verdict="needs_rescan", pages_total=2, pages_accepted=0,
        reasons=[RescanReason(document="001.tif", page_index=1, position=1,
                              reason="skew_deg: 5.2 (required 3.0)"),
                 RescanReason(document="002.tif", page_index=1, position=2,
                              reason="colour: L (required colour)")],
        occurred_at=t0 + timedelta(days=1)))
    return events


@pytest.fixture(scope="module")
def month(stack, tmp_path_factory):
    """A simulated March 2026 in a fresh database, with a plan: (env, events, tmp dir)."""
    events = generate(CFG) + _extra_rescan()
    dsn = fresh_db(stack, "report")
    with psycopg.connect(dsn) as conn:
        apply_events(conn, events, batch=400)
    tmp = tmp_path_factory.mktemp("report")
    plan = tmp / "plan.csv"
    # Site 0 has a small target (done), site 1 a huge one with an early deadline (late),
    # sites 2-3 belong to another contractor and another unit; site 4 is not in the plan.
    plan.write_text(
        "site_id,unit,contractor,target_pages,target_files,deadline,name\n"
        f"{SITES[0]},Huyện Tân Phú,Cty Số Việt,50,5,30/06/2026,Xã Một\n"
        f"{SITES[1]},Huyện Tân Phú,Cty Số Việt,90000,900,30/04/2026,Xã Hai\n"
        f"{SITES[2]},Huyện Định Quán,Cty Lưu Trữ,200,10,31/12/2026,Xã Ba\n"
        f"{SITES[3]},Huyện Định Quán,Cty Lưu Trữ,150,10,31/12/2026,Xã Bốn\n",
        encoding="utf-8")
    config = tmp / "sohoa.toml"
    config.write_text(CONFIG, encoding="utf-8")
    env = {**stack.env, "SOHOA_POSTGRES__DSN": dsn,
           "SOHOA_POSTGRES__READER_DSN": as_role(dsn, "sohoa_reader"),
           "SOHOA_CONFIG": str(config)}
    out = run_sohoa(["campaign", "import", str(plan), "--start", "02/03/2026"], env)
    assert out.returncode == 0, out.stderr
    return env, events, tmp


# --- the independent tally ------------------------------------------------------------------

def _page_key(e) -> tuple:
    return (e.site_id, e.fonds, e.file_code, e.document, e.page_index)


def live_pages_first_day(events) -> dict[tuple, date]:
    """The current pages the events leave, with the local day each was first scanned."""
    current: dict[tuple, tuple[int, str]] = {}
    first: dict[tuple, datetime] = {}
    removed: set[tuple] = set()
    for e in events:
        if isinstance(e, PageScanned):
            k = _page_key(e)
            first[k] = min(first.get(k, e.occurred_at), e.occurred_at)
            if k not in current or e.revision > current[k][0]:
                current[k] = (e.revision, e.sha256)
                removed.discard(k)
        elif isinstance(e, PageRemoved):
            k = _page_key(e)
            if k in current and current[k][1] == e.sha256:
                removed.add(k)
    return {k: first[k].astimezone(TZ).date() for k in set(current) - removed}


def pages_by_site(events, *, month: int | None = None) -> Counter:
    out: Counter = Counter()
    for k, day in live_pages_first_day(events).items():
        if month is None or day.month == month:
            out[k[0]] += 1
    return out


def sizes(events) -> dict[tuple, tuple]:
    """Each page's size as its latest check stated it."""
    out: dict[tuple, tuple] = {}
    for e in events:
        if isinstance(e, PageChecked):
            out[_page_key(e)] = (e.width_mm, e.height_mm)
    return out


def size_class(size: tuple) -> str:
    return {A4: "a4", A3: "a3", (None, None): "unknown"}[size]


def accepted_tally(events, sites: list[str]) -> tuple[Counter, Counter, dict[str, Counter]]:
    """Files and pages accepted in March per site, and their live pages by size class."""
    latest: dict[tuple, FileVerdict] = {}
    for e in events:
        if isinstance(e, FileVerdict) and e.site_id in sites:
            k = (e.site_id, e.fonds, e.file_code)
            if k not in latest or e.revision > latest[k].revision:
                latest[k] = e
    files: Counter = Counter()
    pages: Counter = Counter()
    accepted: set[tuple] = set()
    for k, v in latest.items():
        if v.verdict == "accepted" and v.occurred_at.astimezone(TZ).month == 3:
            files[k[0]] += 1
            pages[k[0]] += v.pages_accepted
            accepted.add(k)
    size = sizes(events)
    by_class: dict[str, Counter] = defaultdict(Counter)
    for k in live_pages_first_day(events):
        if k[:3] in accepted:
            by_class[k[0]][size_class(size[k])] += 1
    return files, pages, by_class


def _report(env, tmp, args: list[str], name: str) -> tuple:
    out = tmp / name
    res = run_sohoa(["report", *args, "--out", str(out)], env)
    assert res.returncode == 0, res.stderr
    return out, res


# --- monthly --------------------------------------------------------------------------------

def test_monthly_xlsx_figures_match_an_independent_count(month) -> None:
    env, events, tmp = month
    out, res = _report(env, tmp, ["monthly", "--month", "03/2026", "--format", "xlsx"],
                       "thang-03.xlsx")
    assert "4 điểm trong kế hoạch, 1 điểm ngoài kế hoạch" in res.stdout
    wb = load_workbook(out)
    ws = wb["Tiến độ"]
    header = [c.value for c in ws[5]]
    col = {h: i for i, h in enumerate(header)}
    rows = [[c.value for c in r] for r in ws.iter_rows(min_row=6)]
    body = {r[col["Mã điểm"]]: r for r in rows if r[col["Mã điểm"]]}
    in_march = pages_by_site(events, month=3)
    total = pages_by_site(events)
    for sid in SITES:
        r = body[sid]
        assert r[col["Số hóa trong tháng (trang)"]] == in_march[sid]
        assert r[col["Lũy kế (trang)"]] == total[sid]
    for sid in PLANNED:
        r = body[sid]
        assert r[col["Đơn vị / Điểm số hóa"]] == NAMES[sid]    # the plan's name, not the slug
        assert r[col["Tỷ lệ hoàn thành"]] == pytest.approx(total[sid] / TARGETS[sid])
    assert body[SITES[0]][col["Đánh giá"]] == "đã hoàn thành"
    assert body[SITES[1]][col["Đánh giá"]] == "chậm tiến độ"
    assert body[SITES[1]][col["Hạn hoàn thành"]] == datetime(2026, 4, 30)
    assert body[SITES[1]][col["Dự kiến hoàn thành"]] > datetime(2026, 4, 30)
    # TỔNG CỘNG: the plan's sites only; the site outside it is listed apart.
    labels = [r[1] for r in rows]
    grand = rows[labels.index(TOTAL_LABEL)]
    assert grand[col["Lũy kế (trang)"]] == sum(total[s] for s in PLANNED)
    assert grand[col["Kế hoạch (trang)"]] == sum(TARGETS.values())
    assert grand[col["Tỷ lệ hoàn thành"]] == pytest.approx(
        sum(total[s] for s in PLANNED) / sum(TARGETS.values()))
    assert labels.index(UNPLANNED_GROUP) > labels.index(TOTAL_LABEL)
    # Units in Vietnamese order (Đ with D, before T), numbered I, II in the STT column.
    assert [r[:2] for r in rows if r[1] in ("Huyện Định Quán", "Huyện Tân Phú")] == [
        ["I", "Huyện Định Quán"], ["II", "Huyện Tân Phú"]]
    outside = rows[labels.index(UNPLANNED_TOTAL)]
    assert outside[col["Lũy kế (trang)"]] == total[SITES[4]]
    assert outside[col["Đánh giá"]] == "chưa có kế hoạch"
    assert outside[col["Kế hoạch (trang)"]] is None
    sub = rows[labels.index("Cộng Huyện Định Quán")]
    assert sub[col["Kế hoạch (trang)"]] == 350
    assert sub[col["Đánh giá"]] == "đúng tiến độ"
    # The at-risk sheet: site 1 needs its remaining pages over April's working days.
    risk = wb["Điểm chậm tiến độ"]
    rh = [c.value for c in risk[5]]
    row = next(r for r in risk.iter_rows(min_row=6, values_only=True)
               if r[1] == "Xã Hai (Huyện Tân Phú)")
    remaining = TARGETS[SITES[1]] - total[SITES[1]]
    days_left = WorkCalendar().working_days_between(date(2026, 4, 1), date(2026, 4, 30))
    assert row[rh.index("Còn lại (trang)")] == remaining
    assert row[rh.index("Ngày làm việc còn lại")] == days_left
    assert row[rh.index("Cần đạt (trang/ ngày)")] == pytest.approx(remaining / days_left)
    chart = wb["Biểu đồ"]
    assert chart._charts and chart["A2"].value == datetime(2026, 3, 1)
    # The chart's actual line is the plan's sites' pages (never the outsider's).
    last_march = next(r for r in chart.iter_rows(min_row=2, values_only=True)
                      if r[0] == datetime(2026, 3, 31))
    assert last_march[1] == sum(total[s] for s in PLANNED)


def test_monthly_docx_is_the_official_document(month) -> None:
    env, events, tmp = month
    out, _ = _report(env, tmp, ["monthly", "--month", "2026-03", "--date", "02/04/2026"],
                     "thang-03.docx")
    assert out.suffix == ".docx"
    doc = Document(str(out))
    left, right = (c.text.split("\n") for c in doc.tables[0].rows[0].cells)
    assert left[:2] == ["ỦY BAN NHÂN DÂN TỈNH ĐỒNG NAI", "SỞ NỘI VỤ"]
    assert left[-1].startswith("Số: ") and left[-1].endswith("/BC-SNV")
    assert right[:2] == ["CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", "Độc lập - Tự do - Hạnh phúc"]
    assert right[-1] == "Đồng Nai, ngày 02 tháng 4 năm 2026"
    text = "\n".join(p.text for p in doc.paragraphs)
    total = pages_by_site(events)
    done = sum(total[s] for s in PLANNED)
    target = sum(TARGETS.values())
    assert (f"Tính đến ngày 31/03/2026, 4 điểm số hóa thuộc 2 đơn vị trong kế hoạch đã số hóa "
            f"{vi.num(done)} trang, đạt {vi.pct(done / target)} chỉ tiêu {vi.num(target)} trang"
            ) in text
    assert f"1 điểm chưa có kế hoạch đã gửi {vi.num(total[SITES[4]])} trang" in text
    closing = [c.text for c in doc.tables[2].rows[0].cells]
    assert closing[0].split("\n") == ["Nơi nhận:", "- Ủy ban nhân dân tỉnh (để báo cáo);",
                                      "- Các huyện Tân Phú, Định Quán;", "- Lưu: VT, CCVTLT."]
    assert [x for x in closing[1].split("\n") if x] == ["KT. GIÁM ĐỐC", "PHÓ GIÁM ĐỐC",
                                                        "Nguyễn Văn An"]


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="poppler-utils missing")
def test_monthly_pdf_renders_its_form_table_and_chart(month) -> None:
    from PIL import Image

    env, events, tmp = month
    out, _ = _report(env, tmp, ["monthly", "--month", "03/2026", "--format", "pdf",
                                "--date", "02/04/2026"], "thang-03.pdf")
    text = subprocess.run(["pdftotext", "-layout", str(out), "-"], capture_output=True,
                          text=True, check=True).stdout
    for needle in ("CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", "Đồng Nai, ngày 02 tháng 4 năm 2026",
                   "Tiến độ số hóa tài liệu lưu trữ tháng 03/2026", "Nơi nhận:", "Xã Hai",
                   "KT. GIÁM ĐỐC", "Nguyễn Văn An", "PHỤ LỤC", "TỔNG CỘNG"):
        assert needle in text, needle
    assert vi.num(sum(pages_by_site(events)[s] for s in PLANNED)) in text
    keep = artefact_dir("reports")
    for old in keep.glob("monthly-*.png"):
        old.unlink()
    subprocess.run(["pdftoppm", "-r", "80", "-png", str(out), str(keep / "monthly")],
                   check=True)
    pngs = sorted(keep.glob("monthly-*.png"))
    assert len(pngs) >= 3        # the letter, then the appendix's table and chart
    first = Image.open(pngs[0]).convert("L")
    assert first.width < first.height   # portrait A4
    dark = int((np.asarray(first) < 128).sum())
    assert dark > 2000, "the first page carries text"
    # The appendix's chart: the actual line in matplotlib's blue (#1f77b4).
    blue = 0
    for png in pngs[1:]:
        px = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
        blue += int((np.abs(px - np.array([31, 119, 180])) < 40).all(axis=2).sum())
    assert blue > 50


def test_monthly_csv_is_utf8_with_bom_and_vi_vn(month) -> None:
    env, events, tmp = month
    out, _ = _report(env, tmp, ["monthly", "--month", "2026-03", "--format", "csv"],
                     "thang-03.csv")
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(raw.decode("utf-8-sig").splitlines()))
    assert rows[0] == ["Báo cáo tiến độ số hóa tài liệu lưu trữ tháng 03/2026"]
    header = rows[2]
    deadline_i = header.index("Hạn hoàn thành")
    sites = [r for r in rows[3:] if len(r) > 2 and r[2].startswith("xa-")]
    assert {r[deadline_i] for r in sites if r[deadline_i]} == {
        "30/06/2026", "30/04/2026", "31/12/2026"}
    total = next(r for r in rows if len(r) > 1 and r[1] == TOTAL_LABEL)
    done = sum(pages_by_site(events)[s] for s in PLANNED)
    assert total[header.index("Lũy kế (trang)")] == vi.num(done)
    assert total[header.index("Kế hoạch (trang)")] == "90.400"


# --- acceptance -----------------------------------------------------------------------------

def test_acceptance_record_counts_and_prices_what_the_verdicts_say(month) -> None:
    env, events, tmp = month
    # The contractor typed without capitals or diacritics: the plan's "Cty Số Việt".
    out, res = _report(env, tmp, ["acceptance", "--contractor", "cty so viet", "--from",
                                  "01/03/2026", "--to", "31/03/2026", "--format", "xlsx"],
                       "nghiem-thu.xlsx")
    assert "cảnh báo" not in res.stderr
    sites = SITES[:2]
    files, pages, by_class = accepted_tally(events, sites)
    rescans = Counter(e.site_id for e in events if isinstance(e, FileVerdict)
                      and e.site_id in sites and e.verdict == "needs_rescan")
    wb = load_workbook(out)
    ws = wb["Nghiệm thu"]
    h = [c.value for c in ws[5]]
    rows = {r[h.index("Mã điểm")]: r for r in ws.iter_rows(min_row=6, values_only=True)
            if r[h.index("Mã điểm")] in sites}
    assert set(rows) == set(sites)
    assert all(by_class[s]["a3"] and by_class[s]["unknown"] for s in sites)
    for sid in sites:
        r = rows[sid]
        c = by_class[sid]
        assert r[h.index("Điểm số hóa")] == NAMES[sid]
        assert r[h.index("Hồ sơ nghiệm thu")] == files[sid]
        assert r[h.index("Trang nghiệm thu")] == pages[sid]
        assert r[h.index("Số lần yêu cầu quét lại")] == rescans[sid]
        assert [r[h.index(f"{k} (trang)")] for k in ("Khổ A4 trở xuống", "Khổ A3",
                                                     "Khổ lớn hơn A3", "Chưa rõ khổ")] == [
            c["a4"], c["a3"], 0, c["unknown"]]
        assert r[h.index("Quy đổi A4 (trang A4)")] == c["a4"] + 2 * c["a3"]
    assert "trang bị nghiêng (1)" in rows[SITES[0]][h.index("Lý do (số lần)")]
    # Value at the contract's unit prices, in đồng and in words.
    a4 = sum(by_class[s]["a4"] for s in sites)
    a3 = sum(by_class[s]["a3"] for s in sites)
    amount = a4 * PRICES["a4"] + a3 * PRICES["a3"]
    value = wb["Giá trị"]
    vh = [c.value for c in value[5]]
    body = list(value.iter_rows(min_row=6, values_only=True))
    lines = {r[1]: r for r in body if r[1]}
    assert lines["Khổ A4 trở xuống"][vh.index("Thành tiền (đồng)")] == a4 * PRICES["a4"]
    assert lines["Khổ A3"][vh.index("Đơn giá (đồng)")] == PRICES["a3"]
    assert lines["TỔNG CỘNG"][vh.index("Thành tiền (đồng)")] == amount
    assert value.cell(6, vh.index("Thành tiền (đồng)") + 1).number_format == "#,##0"
    assert f"Bằng chữ: {vi.money_words(amount)}." in [r[0] for r in body]
    # Pages not accepted, with their reasons in Vietnamese.
    refused = [r for r in wb["Trang không đạt"].iter_rows(min_row=6, values_only=True)]
    xien = {r[4]: r[7] for r in refused if r[3] == "HS-XIEN"}
    assert xien == {"001.tif": "nghiêng 5,2° (cho phép tối đa 3°)",
                    "002.tif": "ảnh thang xám (yêu cầu ảnh màu)"}
    assert all("required" not in (r[7] or "") for r in refused)


def test_acceptance_record_as_docx_and_pdf_with_both_parties(month) -> None:
    env, events, tmp = month
    out, _ = _report(env, tmp, ["acceptance", "--contractor", "CTY SỐ VIỆT", "--from",
                                "01/03/2026", "--to", "31/03/2026", "--date", "03/04/2026"],
                     "nghiem-thu.docx")
    doc = Document(str(out))
    text = "\n".join(p.text for p in doc.paragraphs)
    assert "BIÊN BẢN" in text
    assert ("Nghiệm thu khối lượng số hóa tài liệu lưu trữ từ ngày 01/03/2026 đến ngày "
            "31/03/2026 (Hợp đồng số 15/2026/HĐ-SNV)") in text
    assert "Căn cứ Hợp đồng số 15/2026/HĐ-SNV ký ngày 15 tháng 01 năm 2026" in text
    assert "BÊN A (bên giao): Sở Nội vụ tỉnh Đồng Nai" in text
    assert "BÊN B (bên nhận): Công ty TNHH Số Việt" in text
    assert "Đại diện: Lê Văn Cường; chức vụ: Giám đốc." in text
    closing = next(t for t in doc.tables if t.rows[0].cells[0].text.startswith("ĐẠI DIỆN"))
    sign = [c.text.split("\n") for c in closing.rows[0].cells]
    signs = [[x for x in s if x] for s in sign]
    assert signs == [["ĐẠI DIỆN BÊN B", "GIÁM ĐỐC", "(Ký, ghi rõ họ tên, đóng dấu)",
                      "Lê Văn Cường"],
                     ["ĐẠI DIỆN BÊN A", "PHÓ GIÁM ĐỐC", "(Ký, ghi rõ họ tên, đóng dấu)",
                      "Nguyễn Văn An"]]
    _files, _pages, by_class = accepted_tally(events, SITES[:2])
    amount = (sum(c["a4"] for c in by_class.values()) * PRICES["a4"]
              + sum(c["a3"] for c in by_class.values()) * PRICES["a3"])
    assert f"giá trị {vi.money(amount)} (bằng chữ: {vi.money_words(amount)})" in text
    if shutil.which("pdftotext") is None:
        pytest.skip("poppler-utils missing")
    pdf, _ = _report(env, tmp, ["acceptance", "--contractor", "Cty Số Việt", "--from",
                                "01/03/2026", "--to", "31/03/2026", "--format", "pdf"],
                     "nghiem-thu.pdf")
    ptext = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True,
                           check=True).stdout
    for needle in ("BIÊN BẢN", "ĐẠI DIỆN BÊN A", "ĐẠI DIỆN BÊN B", "Lê Văn Cường",
                   vi.num(amount), "nghiêng 5,2°", "ảnh thang xám (yêu cầu ảnh màu)"):
        assert needle in ptext, needle
    assert "skew_deg" not in ptext and "required" not in ptext


def test_an_unknown_contractor_is_an_error_naming_the_known_ones(month) -> None:
    env, _events, tmp = month
    out = tmp / "khong-co.xlsx"
    res = run_sohoa(["report", "acceptance", "--contractor", "Cty Không Có", "--from",
                     "01/03/2026", "--to", "31/03/2026", "--out", str(out)], env)
    assert res.returncode != 0
    assert "Cty Không Có" in res.stderr
    assert "Cty Lưu Trữ" in res.stderr and "Cty Số Việt" in res.stderr
    assert not out.exists()


def test_acceptance_csv_shows_the_size_classes_and_a4_equivalents(month) -> None:
    env, events, tmp = month
    out, res = _report(env, tmp, ["acceptance", "--contractor", "Cty Lưu Trữ", "--from",
                                  "01/03/2026", "--to", "31/03/2026", "--format", "csv"],
                       "nghiem-thu.csv")
    assert "chưa có hợp đồng" in res.stderr     # no contract for this one: no prices
    rows = list(csv.reader(out.read_bytes().decode("utf-8-sig").splitlines()))
    header = rows[2]
    sizes_at = header.index("Khổ A4 trở xuống (trang)")
    assert header[sizes_at:sizes_at + 5] == ["Khổ A4 trở xuống (trang)", "Khổ A3 (trang)",
                                             "Khổ lớn hơn A3 (trang)", "Chưa rõ khổ (trang)",
                                             "Quy đổi A4 (trang A4)"]
    total = next(r for r in rows if len(r) > 1 and r[1] == "TỔNG CỘNG")

    def n(text: str) -> int:
        return int(text.replace(".", "") or 0)

    a4, a3, larger, unknown, units = map(n, total[sizes_at:sizes_at + 5])
    _f, pages, by_class = accepted_tally(events, SITES[2:4])
    assert n(total[header.index("Trang nghiệm thu")]) == sum(pages.values())
    assert a4 + a3 + larger + unknown == n(total[header.index("Trang nghiệm thu")])
    assert (a4, a3, unknown) == tuple(sum(c[k] for c in by_class.values())
                                      for k in ("a4", "a3", "unknown"))
    assert units == a4 + 2 * a3
    assert any(r and r[0].startswith("Quy đổi trang A4: khổ A4 trở xuống = 1") for r in rows)


# --- budget ---------------------------------------------------------------------------------

def test_budget_estimate_from_the_remaining_volume(month) -> None:
    env, events, tmp = month
    out, _ = _report(env, tmp, ["budget", "--format", "xlsx"], "du-toan.xlsx")
    wb = load_workbook(out)
    ws = wb["Dự toán theo điểm"]
    h = [c.value for c in ws[5]]
    rows = {r[h.index("Mã điểm")]: r for r in ws.iter_rows(min_row=6, values_only=True)
            if r[h.index("Mã điểm")]}
    assert set(rows) == set(PLANNED)       # the plan's sites; the outsider has no plan
    total = pages_by_site(events)
    size = sizes(events)
    known: dict[str, Counter] = defaultdict(Counter)
    for k in live_pages_first_day(events):
        if k in size and size[k] != (None, None):
            known[k[0]][size_class(size[k])] += 1
    for sid in PLANNED:
        r = rows[sid]
        remaining = max(0, TARGETS[sid] - total[sid])
        assert r[h.index("Còn lại (trang)")] == remaining
        mix = known[sid]
        assert sum(mix.values()) >= 50           # each site's own mix (budget_min_sample_pages)
        a3 = round(remaining * mix["a3"] / sum(mix.values()))
        assert r[h.index("Khổ A3 (trang)")] == a3
        assert r[h.index("Khổ A4 trở xuống (trang)")] == remaining - a3
        prices = PRICES if sid in SITES[:2] else BUDGET_PRICES
        assert r[h.index("Thành tiền (đồng)")] == (remaining - a3) * prices["a4"] \
            + a3 * prices["a3"]
        basis = r[h.index("Cơ sở tính toán")]
        assert basis.startswith(f"Còn lại = kế hoạch {vi.num(TARGETS[sid])} − đã số hóa "
                                f"{vi.num(total[sid])} = {vi.num(remaining)} trang")
        assert "tỷ lệ khổ theo" in basis
        assert ("HĐ số 15/2026/HĐ-SNV" in basis) == (sid in SITES[:2])
    grand = next(r for r in ws.iter_rows(min_row=6, values_only=True) if r[1] == "TỔNG CỘNG")
    assert grand[h.index("Thành tiền (đồng)")] == sum(
        rows[s][h.index("Thành tiền (đồng)")] for s in PLANNED)
    docx, _ = _report(env, tmp, ["budget", "--format", "docx"], "du-toan.docx")
    text = "\n".join(p.text for p in Document(str(docx)).paragraphs)
    for needle in ("BÁO CÁO", "Dự toán kinh phí số hóa tài liệu lưu trữ", "I. CĂN CỨ ĐỀ XUẤT",
                   "III. CƠ SỞ TÍNH TOÁN KINH PHÍ", "Căn cứ đơn giá tại Hợp đồng số "
                   "15/2026/HĐ-SNV", f"Tổng kinh phí dự toán: "
                   f"{vi.money(grand[h.index('Thành tiền (đồng)')])}"):
        assert needle in text, needle
