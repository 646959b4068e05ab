"""Monthly and acceptance reports over a simulated month, checked against an independent tally
of the events; the PDF is rendered with pdftoppm and its chart looked for."""

from __future__ import annotations

import csv
import shutil
import subprocess
from collections import Counter, defaultdict
from datetime import date, datetime
from zoneinfo import ZoneInfo

import psycopg
import pytest
from openpyxl import load_workbook

from consumers.synth import A3, A4, SynthConfig, generate, site_ids
from sohoa.events import FileVerdict, PageChecked, PageRemoved, PageScanned
from tests.procs import run_sohoa
from tests.test_consumer_support import apply_events, fresh_db

pytestmark = pytest.mark.integration
TZ = ZoneInfo("Asia/Ho_Chi_Minh")
CFG = SynthConfig(sites=4, files_per_site=8, pages_per_file=15, start=date(2026, 3, 2),
                  days=27, seed=31)


@pytest.fixture(scope="module")
def month(stack, tmp_path_factory):
    """A simulated March 2026 in a fresh database, with a plan: (env, events, tmp dir)."""
    events = generate(CFG)
    dsn = fresh_db(stack, "report")
    with psycopg.connect(dsn) as conn:
        apply_events(conn, events, batch=400)
    tmp = tmp_path_factory.mktemp("report")
    sites = site_ids(CFG.sites)
    plan = tmp / "plan.csv"
    # Site 0 has a small target (done), site 1 a huge one with an early deadline (late),
    # sites 2-3 belong to another contractor and another unit.
    plan.write_text(
        "site_id,unit,contractor,target_pages,target_files,deadline,name\n"
        f"{sites[0]},Huyện Tân Phú,Cty Số Việt,50,5,30/06/2026,Xã Một\n"
        f"{sites[1]},Huyện Tân Phú,Cty Số Việt,90000,900,30/04/2026,Xã Hai\n"
        f"{sites[2]},Huyện Định Quán,Cty Lưu Trữ,200,10,31/12/2026,Xã Ba\n"
        f"{sites[3]},Huyện Định Quán,Cty Lưu Trữ,150,10,31/12/2026,Xã Bốn\n",
        encoding="utf-8")
    env = {**stack.env, "SOHOA_POSTGRES__DSN": dsn}
    out = run_sohoa(["campaign", "import", str(plan), "--start", "02/03/2026"], env)
    assert out.returncode == 0, out.stderr
    return env, events, tmp


def _page_key(e) -> tuple:
    return (e.site_id, e.fonds, e.file_code, e.document, e.page_index)


def live_pages(events) -> set[tuple]:
    """The current pages the events leave: (site, fonds, file, document, page index)."""
    current: dict[tuple, tuple[int, str]] = {}
    removed: set[tuple] = set()
    for e in events:
        if isinstance(e, PageScanned):
            k = _page_key(e)
            if k not in current or e.revision > current[k][0]:
                current[k] = (e.revision, e.sha256)
                removed.discard(k)
        elif isinstance(e, PageRemoved) and current.get(_page_key(e), (0, ""))[1] == e.sha256:
            removed.add(_page_key(e))
    return set(current) - removed


def live_pages_by_site_day(events) -> dict[str, Counter]:
    current: dict[tuple, tuple[int, str]] = {}
    first: dict[tuple, object] = {}
    removed: set[tuple] = set()
    for e in events:
        if not isinstance(e, PageScanned | PageRemoved):
            continue
        k = _page_key(e)
        if isinstance(e, PageScanned):
            first[k] = min(first.get(k, e.occurred_at), e.occurred_at)
            if k not in current or e.revision > current[k][0]:
                current[k] = (e.revision, e.sha256)
                removed.discard(k)
        elif isinstance(e, PageRemoved) and k in current and current[k][1] == e.sha256:
            removed.add(k)
    out: dict[str, Counter] = defaultdict(Counter)
    for k in set(current) - removed:
        out[k[0]][first[k].astimezone(TZ).date()] += 1
    return out


def test_monthly_xlsx_has_the_expected_figures(month) -> None:
    env, events, tmp = month
    out = tmp / "thang-03.xlsx"
    res = run_sohoa(["report", "monthly", "--month", "2026-03", "--format", "xlsx",
                     "--out", str(out)], env)
    assert res.returncode == 0, res.stderr
    wb = load_workbook(out)
    ws = wb["Tiến độ"]
    assert ws["A1"].value == "Báo cáo tiến độ số hóa tài liệu lưu trữ tháng 03/2026"
    rows = list(ws.iter_rows(values_only=True))
    header_i = next(i for i, r in enumerate(rows) if r and r[0] == "Đơn vị")
    header = rows[header_i]
    col = {name: i for i, name in enumerate(header)}
    body = {r[1]: r for r in rows[header_i + 1:] if r[1] and r[1].startswith("xa-")}
    tally = live_pages_by_site_day(events)
    sites = site_ids(CFG.sites)
    for sid in sites:
        in_march = sum(n for d, n in tally[sid].items() if d.month == 3)
        r = body[sid]
        assert r[col["Số hóa trong tháng (trang)"]] == in_march
        assert r[col["Lũy kế (trang)"]] == sum(tally[sid].values())
        target = r[col["Kế hoạch (trang)"]]
        assert r[col["Tỷ lệ hoàn thành (%)"]] == round(100 * sum(tally[sid].values()) / target, 1)
    assert body[sites[0]][col["Đánh giá"]] == "đã hoàn thành"
    assert body[sites[1]][col["Đánh giá"]] == "chậm tiến độ"
    assert body[sites[1]][col["Hạn hoàn thành"]] == "30/04/2026"
    forecast = body[sites[1]][col["Dự kiến hoàn thành"]]
    assert datetime.strptime(forecast, "%d/%m/%Y").date() > date(2026, 4, 30)
    # Unit subtotals and the grand total add up.
    total = next(r for r in rows if r[0] == "TỔNG CỘNG")
    assert total[col["Lũy kế (trang)"]] == sum(sum(c.values()) for c in tally.values())
    sub = next(r for r in rows if r[0] == "Cộng Huyện Định Quán")
    assert sub[col["Kế hoạch (trang)"]] == 350
    chart_sheet = wb["Biểu đồ"]
    assert chart_sheet._charts, "the chart sheet carries a line chart"
    assert chart_sheet["A2"].value == "01/03/2026"  # the month, or the campaign if earlier


def test_monthly_csv_is_utf8_with_bom_and_dd_mm_yyyy(month) -> None:
    env, _events, tmp = month
    out = tmp / "thang-03.csv"
    assert run_sohoa(["report", "monthly", "--month", "2026-03", "--format", "csv",
                      "--out", str(out)], env).returncode == 0
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(raw.decode("utf-8-sig").splitlines()))
    assert rows[0] == ["Báo cáo tiến độ số hóa tài liệu lưu trữ tháng 03/2026"]
    header = rows[2]
    deadline_i = header.index("Hạn hoàn thành")
    assert {r[deadline_i] for r in rows[3:] if r[1].startswith("xa-")} == {
        "30/06/2026", "30/04/2026", "31/12/2026"}


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="poppler-utils missing")
def test_monthly_pdf_renders_with_its_chart(month) -> None:
    from PIL import Image

    env, _events, tmp = month
    out = tmp / "thang-03.pdf"
    res = run_sohoa(["report", "monthly", "--month", "2026-03", "--format", "pdf",
                     "--out", str(out)], env)
    assert res.returncode == 0, res.stderr
    subprocess.run(["pdftoppm", "-r", "100", "-png", str(out), str(tmp / "page")], check=True)
    pngs = sorted(tmp.glob("page-*.png"))
    assert len(pngs) >= 2  # the chart page and the table page
    img = Image.open(pngs[0]).convert("RGB")
    # The actual-progress line is drawn in matplotlib's blue (#1f77b4).
    blue = sum(1 for px in img.getdata()
               if abs(px[0] - 31) < 40 and abs(px[1] - 119) < 40 and abs(px[2] - 180) < 40)
    assert blue > 50
    text = subprocess.run(["pdftotext", str(out), "-"], capture_output=True, text=True).stdout
    assert "Báo cáo tiến độ số hóa tài liệu lưu trữ tháng 03/2026" in text
    assert "chậm tiến độ" in text


def test_acceptance_report_counts_what_the_verdicts_say(month) -> None:
    env, events, tmp = month
    out = tmp / "nghiem-thu.xlsx"
    res = run_sohoa(["report", "acceptance", "--contractor", "Cty Số Việt", "--from",
                     "01/03/2026", "--to", "31/03/2026", "--out", str(out)], env)
    assert res.returncode == 0, res.stderr
    sites = site_ids(CFG.sites)[:2]
    latest: dict[tuple, FileVerdict] = {}
    rescans: Counter = Counter()
    for e in events:
        if isinstance(e, FileVerdict) and e.site_id in sites:
            k = (e.site_id, e.fonds, e.file_code)
            if k not in latest or e.revision > latest[k].revision:
                latest[k] = e
            if e.verdict == "needs_rescan":
                rescans[e.site_id] += 1
    files: Counter = Counter()
    pages: Counter = Counter()
    accepted: set[tuple] = set()
    for k, v in latest.items():
        if v.verdict == "accepted" and v.occurred_at.astimezone(TZ).month == 3:
            files[k[0]] += 1
            pages[k[0]] += v.pages_accepted
            accepted.add(k)
    # Each accepted page's size, as its latest check stated it (synth: A4, A3 or none).
    size: dict[tuple, tuple] = {}
    for e in events:
        if isinstance(e, PageChecked):
            size[_page_key(e)] = (e.width_mm, e.height_mm)
    by_class: dict[str, Counter] = defaultdict(Counter)
    for k in live_pages(events):
        if k[:3] in accepted:
            by_class[k[0]][{A4: "a4", A3: "a3", (None, None): "unknown"}[size[k]]] += 1
    ws = load_workbook(out)["Nghiệm thu"]
    rows = {r[1]: r for r in ws.iter_rows(values_only=True) if r[1] in sites}
    assert set(rows) == set(sites)
    assert sum(rescans.values()) > 0
    assert all(by_class[s]["a3"] and by_class[s]["unknown"] for s in sites)
    for sid in sites:
        _unit, _id, _name, f, p, a4, a3, larger, unknown, units, rs, rj, reasons = rows[sid]
        assert (f, p, rs, rj) == (files[sid], pages[sid], rescans[sid], 0)
        c = by_class[sid]
        assert (a4, a3, larger, unknown) == (c["a4"], c["a3"], 0, c["unknown"])
        assert a4 + a3 + unknown == p  # every accepted page in one class
        assert units == c["a4"] + 2 * c["a3"]  # unknown sizes are not counted as 1
        if rs:
            assert "dpi dưới 200" in reasons
    notes = [r[0] for r in ws.iter_rows(values_only=True) if r[0] and r[0].startswith("Lưu ý")]
    assert notes == [f"Lưu ý: {sum(c['unknown'] for c in by_class.values())} trang chưa rõ khổ "
                     "(ảnh không ghi độ phân giải) chưa được quy đổi A4; cần xác định khổ của "
                     "các trang này trước khi thanh toán."]
    detail = list(load_workbook(out)["Hồ sơ nghiệm thu"].iter_rows(values_only=True))
    assert len(detail) - 1 == sum(files.values())
    assert sum(r[9] for r in detail[1:]) == sum(rows[s][9] for s in sites)  # A4 equivalents
    assert {r[1] for r in detail[1:]} == {"UBND"}  # fonds
    assert any(r[3] < r[4] for r in detail[1:])  # a file holding a multi-page PDF


def test_acceptance_csv_shows_the_size_classes_and_a4_equivalents(month) -> None:
    env, _events, tmp = month
    out = tmp / "nghiem-thu.csv"
    res = run_sohoa(["report", "acceptance", "--contractor", "Cty Số Việt", "--from",
                     "01/03/2026", "--to", "31/03/2026", "--format", "csv", "--out", str(out)],
                    env)
    assert res.returncode == 0, res.stderr
    rows = list(csv.reader(out.read_bytes().decode("utf-8-sig").splitlines()))
    header = rows[2]
    assert header[5:10] == ["Khổ A4 trở xuống (trang)", "Khổ A3 (trang)",
                            "Khổ lớn hơn A3 (trang)", "Chưa rõ khổ (trang)",
                            "Quy đổi A4 (trang A4)"]
    total = next(r for r in rows if r[0] == "TỔNG CỘNG")
    a4, a3, larger, unknown, units = map(int, total[5:10])
    assert a4 + a3 + larger + unknown == int(total[4]) and units == a4 + 2 * a3
    assert any(r[0].startswith("Quy đổi trang A4: khổ A4 trở xuống = 1") for r in rows)
