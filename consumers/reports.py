"""The monthly progress report and the contractor acceptance report, in Vietnamese.

Figures come from ``daily_progress`` (pages by the local day they were first scanned,
accepted pages by the day of their file's verdict) and ``verdicts``; dates are dd/mm/yyyy. The
acceptance report also counts the accepted files' pages by physical size and in A4
equivalents (:mod:`consumers.page_sizes`), the unit contracts pay in.
"""

from __future__ import annotations

import calendar as _calendar
import csv
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
from psycopg.rows import dict_row

from consumers.cells import cells
from consumers.deliverables import SiteDeliverable, by_site
from consumers.forecast import WorkCalendar, forecast_site
from consumers.page_sizes import SIZE_CLASS_VI, SizeClass, SizeTally
from sohoa.config import CampaignConfig, ReportsConfig

ON_TRACK = "đúng tiến độ"
LATE = "chậm tiến độ"
NO_PLAN = "chưa có kế hoạch"
DONE = "đã hoàn thành"


def parse_month(text: str) -> tuple[int, int]:
    """"2026-03" or "03/2026" (also "3/2026") -> (2026, 3)."""
    s = text.strip()
    m = re.fullmatch(r"(\d{4})-(\d{1,2})", s) or re.fullmatch(r"(\d{1,2})/(\d{4})", s)
    if m:
        a, b = m.groups()
        year, month = (int(a), int(b)) if len(a) == 4 else (int(b), int(a))
        if 1 <= month <= 12:
            return year, month
    raise ValueError(f"tháng không hợp lệ {text!r}: dùng MM/YYYY hoặc YYYY-MM, ví dụ 03/2026")


def fmt_date(d: date | None) -> str:
    return d.strftime("%d/%m/%Y") if d else ""


# --- monthly --------------------------------------------------------------------------------

@dataclass
class MonthlyRow:
    unit: str
    site_id: str
    name: str
    contractor: str
    target_pages: int | None
    in_month: int
    cumulative: int
    accepted_in_month: int
    accepted_cumulative: int
    deadline: date | None
    planned_to_date: float | None
    forecast: date | None
    assessment: str

    @property
    def completion(self) -> float | None:
        if not self.target_pages:
            return None
        return self.cumulative / self.target_pages


@dataclass
class MonthlyReport:
    year: int
    month: int
    generated: date
    as_of: date
    rows: list[MonthlyRow]
    chart_days: list[date] = field(default_factory=list)
    chart_actual: list[float | None] = field(default_factory=list)
    chart_planned: list[float] = field(default_factory=list)
    # The deliverable per site (packaged / handed over / verified), as of the report.
    deliverables: dict[str, SiteDeliverable] = field(default_factory=dict)

    @property
    def title(self) -> str:
        return f"Báo cáo tiến độ số hóa tài liệu lưu trữ tháng {self.month:02d}/{self.year}"

    def units(self) -> list[tuple[str, list[MonthlyRow]]]:
        groups: dict[str, list[MonthlyRow]] = defaultdict(list)
        for r in self.rows:
            groups[r.unit].append(r)
        return sorted(groups.items())


class _WorkdayIndex:
    """Prefix counts of working days, so the straight line costs O(1) per site and day."""

    def __init__(self, cal: WorkCalendar, start: date, end: date) -> None:
        self.start = start
        n = (end - start).days + 1
        flags = np.fromiter((cal.is_working_day(start + timedelta(days=i)) for i in range(n)),
                            dtype=np.int32, count=n)
        self.prefix = np.concatenate([[0], np.cumsum(flags)])  # prefix[i] = workdays < start+i

    def upto(self, d: date) -> int:
        """Working days in [start, d]."""
        i = (d - self.start).days + 1
        return int(self.prefix[min(max(i, 0), len(self.prefix) - 1)])


_SITES_SQL = """
SELECT s.site_id, s.name, s.unit, s.contractor, s.target_pages, s.deadline, s.timezone,
       s.workdays, s.work_start, s.work_end, c.start_date
FROM sites s LEFT JOIN campaigns c USING (campaign_id)
ORDER BY s.unit NULLS LAST, s.site_id
"""


def build_monthly(conn: psycopg.Connection, campaign: CampaignConfig, year: int, month: int,
                  *, today: date | None = None) -> MonthlyReport:
    today = today or datetime.now(ZoneInfo(campaign.timezone)).date()
    first = date(year, month, 1)
    last = date(year, month, _calendar.monthrange(year, month)[1])
    # For the current month, figures and forecast are as of today; for a past one, month end.
    as_of = min(last, today) if first <= today else last
    cur = conn.cursor(row_factory=dict_row)
    sites = cur.execute(_SITES_SQL).fetchall()
    before: dict[str, tuple[int, int]] = {
        sid: (int(p), int(a)) for sid, p, a in conn.execute(
            "SELECT site_id, sum(pages_scanned), sum(pages_accepted) FROM daily_progress "
            "WHERE day < %s GROUP BY site_id", (first,))}
    lookback = first - timedelta(days=campaign.forecast_window_days * 3 + 21)
    daily: dict[str, dict[date, tuple[int, int]]] = defaultdict(dict)
    with conn.cursor() as c2:
        c2.execute("SELECT site_id, day, pages_scanned, pages_accepted FROM daily_progress "
                   "WHERE day >= %s AND day <= %s", (lookback, last))
        for sid, day, ps, pa in c2:
            daily[sid][day] = (ps, pa)
    first_day = dict(conn.execute(
        "SELECT site_id, min(day) FROM daily_progress GROUP BY site_id").fetchall())
    totals_by_day = dict(conn.execute(
        "SELECT day, sum(pages_scanned) FROM daily_progress WHERE day <= %s GROUP BY day",
        (last,)).fetchall())

    # Campaign start (for the straight line): the plan's start date, else the first page.
    def start_of(s: dict[str, Any]) -> date:
        return s["start_date"] or first_day.get(s["site_id"]) or first

    chart_start = min([start_of(s) for s in sites if s["target_pages"]] + [first])
    chart_end = max([s["deadline"] for s in sites if s["deadline"]] + [last])
    indexes: dict[tuple, _WorkdayIndex] = {}
    cals: dict[tuple, WorkCalendar] = {}

    def cal_of(s: dict[str, Any]) -> tuple[WorkCalendar, _WorkdayIndex]:
        key = (s["timezone"], tuple(s["workdays"]), s["work_start"], s["work_end"])
        if key not in cals:
            cals[key] = WorkCalendar(s["timezone"], tuple(s["workdays"]), s["work_start"],
                                     s["work_end"])
            lo = min(chart_start, lookback) - timedelta(days=1)
            indexes[key] = _WorkdayIndex(cals[key], lo, max(chart_end, today) + timedelta(1))
        return cals[key], indexes[key]

    rows: list[MonthlyRow] = []
    span = (chart_end - chart_start).days + 1
    chart_days = [chart_start + timedelta(days=i) for i in range(span)]
    planned = np.zeros(len(chart_days))
    for s in sites:
        sid = s["site_id"]
        cal, idx = cal_of(s)
        d = daily.get(sid, {})
        p_before, a_before = before.get(sid, (0, 0))
        in_month = sum(v[0] for k, v in d.items() if first <= k <= as_of)
        acc_month = sum(v[1] for k, v in d.items() if first <= k <= as_of)
        cumulative = p_before + in_month
        target = s["target_pages"]
        deadline = s["deadline"]
        start = start_of(s)
        planned_to_date = None
        if target is not None and deadline is not None:
            total_wd = idx.upto(deadline) - idx.upto(start - timedelta(days=1))
            done_wd = idx.upto(as_of) - idx.upto(start - timedelta(days=1))
            planned_to_date = (float(target) if total_wd <= 0
                               else target * min(1.0, max(0.0, done_wd / total_wd)))
            # The site's straight line, added to the campaign's over every chart day.
            if total_wd > 0:
                base = idx.upto(start - timedelta(days=1))
                offs = (chart_days[0] - idx.start).days + 1
                pref = idx.prefix[offs:offs + len(chart_days)]
                frac = np.clip((pref - base) / total_wd, 0.0, 1.0)
                planned += target * frac
            else:
                planned += float(target)
        fc = forecast_site(cal, {k: v[0] for k, v in d.items() if k < as_of + timedelta(1)},
                           today=as_of + timedelta(days=1) if as_of < today else today,
                           scanned=cumulative, target=target, deadline=deadline,
                           window_days=campaign.forecast_window_days)
        if target is None:
            assessment = NO_PLAN
        elif cumulative >= target:
            assessment = DONE if not (deadline and fc.completion and fc.completion > deadline) \
                else LATE
        else:
            assessment = LATE if fc.at_risk else ON_TRACK
        rows.append(MonthlyRow(
            unit=s["unit"] or "(chưa có đơn vị)", site_id=sid, name=s["name"] or sid,
            contractor=s["contractor"] or "", target_pages=target, in_month=in_month,
            cumulative=cumulative, accepted_in_month=acc_month,
            accepted_cumulative=a_before + acc_month, deadline=deadline,
            planned_to_date=planned_to_date, forecast=fc.completion, assessment=assessment))
    actual: list[float | None] = []
    running = 0.0
    for day in chart_days:
        running += float(totals_by_day.get(day, 0))
        actual.append(running if day <= as_of else None)
    return MonthlyReport(year, month, today, as_of, rows, chart_days, actual,
                         [float(x) for x in planned], by_site(conn))


MONTHLY_HEADERS = ["Đơn vị", "Mã điểm", "Tên điểm", "Nhà thầu", "Kế hoạch (trang)",
                   "Số hóa trong tháng (trang)", "Lũy kế (trang)", "Tỷ lệ hoàn thành (%)",
                   "Nghiệm thu trong tháng (trang)", "Nghiệm thu lũy kế (trang)",
                   "Kế hoạch lũy kế đến kỳ (trang)", "Hạn hoàn thành", "Dự kiến hoàn thành",
                   "Đánh giá"]


def _row_values(r: MonthlyRow) -> list[Any]:
    return [r.unit, r.site_id, r.name, r.contractor, r.target_pages, r.in_month, r.cumulative,
            round(100 * r.completion, 1) if r.completion is not None else None,
            r.accepted_in_month, r.accepted_cumulative,
            round(r.planned_to_date) if r.planned_to_date is not None else None,
            fmt_date(r.deadline), fmt_date(r.forecast) or "không dự báo được", r.assessment]


def _subtotal(label: str, rows: list[MonthlyRow]) -> list[Any]:
    target = sum(r.target_pages or 0 for r in rows)
    cum = sum(r.cumulative for r in rows)
    late = sum(1 for r in rows if r.assessment == LATE)
    return [label, "", f"{len(rows)} điểm", "", target, sum(r.in_month for r in rows), cum,
            round(100 * cum / target, 1) if target else None,
            sum(r.accepted_in_month for r in rows), sum(r.accepted_cumulative for r in rows),
            round(sum(r.planned_to_date or 0 for r in rows)), "", "",
            f"{late} điểm chậm tiến độ" if late else ON_TRACK]


def _as_of_line(rep: MonthlyReport) -> str:
    return f"Số liệu đến ngày {fmt_date(rep.as_of)}; lập ngày {fmt_date(rep.generated)}"


def write_monthly(rep: MonthlyReport, fmt: str, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        return _monthly_csv(rep, out)
    if fmt == "xlsx":
        return _monthly_xlsx(rep, out)
    if fmt == "pdf":
        return _monthly_pdf(rep, out)
    raise ValueError(f"unknown format {fmt}")


def _monthly_csv(rep: MonthlyReport, out: Path) -> Path:
    # UTF-8 with BOM: Excel on Windows opens Vietnamese text correctly only with it.
    with out.open("w", encoding="utf-8-sig", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cells([rep.title]))
        w.writerow(cells([_as_of_line(rep)]))
        w.writerow(cells(MONTHLY_HEADERS))
        for unit, rows in rep.units():
            for r in rows:
                w.writerow(cells("" if v is None else v for v in _row_values(r)))
            w.writerow(cells("" if v is None else v for v in _subtotal(f"Cộng {unit}", rows)))
        w.writerow(cells("" if v is None else v for v in _subtotal("TỔNG CỘNG", rep.rows)))
    return out


def _monthly_xlsx(rep: MonthlyReport, out: Path) -> Path:
    # Write-only mode streams rows: thousands of sites in a second or two, not ten.
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.chart import LineChart, Reference
    from openpyxl.styles import Alignment, Font, PatternFill
    from openpyxl.utils import get_column_letter

    wb = Workbook(write_only=True)
    ws = wb.create_sheet("Tiến độ")
    widths = [22, 18, 24, 18, 12, 12, 12, 10, 12, 12, 12, 12, 14, 16]
    for i, wdt in enumerate(widths, 1):
        ws.column_dimensions[get_column_letter(i)].width = wdt
    ws.freeze_panes = "C5"
    bold = Font(bold=True)
    title_font = Font(bold=True, size=14)
    fill = PatternFill("solid", fgColor="DDEBF7")
    wrap = Alignment(wrap_text=True, vertical="center")
    late_font = Font(color="C00000")

    def styled(values: list[Any], font=None, fill_=None, align=None) -> list[Any]:
        out_row = []
        for v in cells(values):
            c = WriteOnlyCell(ws, value=v)
            if font is not None:
                c.font = font
            if fill_ is not None:
                c.fill = fill_
            if align is not None:
                c.alignment = align
            out_row.append(c)
        return out_row

    ws.append(styled([rep.title], title_font))
    ws.append(cells([_as_of_line(rep)]))
    ws.append([])
    ws.append(styled(MONTHLY_HEADERS, bold, fill, wrap))
    for unit, rows in rep.units():
        for r in rows:
            values = cells(_row_values(r))
            if r.assessment == LATE:
                last = WriteOnlyCell(ws, value=values[-1])
                last.font = late_font
                values[-1] = last
            ws.append(values)
        ws.append(styled(_subtotal(f"Cộng {unit}", rows), bold))
    ws.append(styled(_subtotal("TỔNG CỘNG", rep.rows), bold))

    cs = wb.create_sheet("Biểu đồ")
    cs.append(cells(["Ngày", "Lũy kế thực tế (trang)", "Kế hoạch (đường thẳng đến hạn)"]))
    for d, a, p in zip(rep.chart_days, rep.chart_actual, rep.chart_planned, strict=True):
        cs.append(cells([fmt_date(d), a, round(p)]))
    if rep.chart_days:
        last_row = len(rep.chart_days) + 1
        chart = LineChart()
        chart.title = "Lũy kế số hóa so với kế hoạch"
        chart.y_axis.title = "Trang"
        chart.x_axis.title = "Ngày"
        chart.add_data(Reference(cs, min_col=2, max_col=3, min_row=1, max_row=last_row),
                       titles_from_data=True)
        chart.set_categories(Reference(cs, min_col=1, min_row=2, max_row=last_row))
        chart.width, chart.height = 28, 14
        cs.add_chart(chart, "E2")
    bs = wb.create_sheet("Bàn giao")
    bs.append(cells(["Mã điểm", "Hồ sơ đã đóng gói", "Hồ sơ đã bàn giao",
                     "Hồ sơ đã kiểm tra đạt", "Hồ sơ kiểm tra không đạt", "Trang đã đóng gói",
                     "Trang đã kiểm tra đạt"]))
    for r in rep.rows:
        d = rep.deliverables.get(r.site_id, SiteDeliverable())
        bs.append(cells([r.site_id, d.files_packaged, d.files_handed_over, d.files_verified,
                         d.files_verify_failed, d.pages_packaged, d.pages_verified]))
    wb.save(out)
    return out


def _chart(ax, rep: MonthlyReport) -> None:
    import matplotlib.dates as mdates

    days = rep.chart_days
    actual = [np.nan if a is None else a for a in rep.chart_actual]
    ax.plot(days, rep.chart_planned, "--", color="#888888", label="Kế hoạch (đường thẳng đến hạn)")
    ax.plot(days, actual, "-", color="#1f77b4", linewidth=2, label="Lũy kế thực tế")
    first = date(rep.year, rep.month, 1)
    ax.axvspan(first, rep.as_of, color="#ffe9a8", alpha=0.4,
               label=f"Tháng {rep.month:02d}/{rep.year}")
    ax.set_title("Lũy kế số hóa so với kế hoạch (trang)")
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%d/%m/%Y"))
    ax.yaxis.set_major_formatter(
        __import__("matplotlib.ticker", fromlist=["FuncFormatter"]).FuncFormatter(
            lambda v, _p: f"{v:,.0f}".replace(",", ".")))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left")
    for label in ax.get_xticklabels():
        label.set_rotation(30)
        label.set_horizontalalignment("right")


PDF_ROWS_PER_PAGE = 44


def _fonts() -> tuple[str, str]:
    """DejaVu Sans (every Vietnamese diacritic), from matplotlib's own copy: always present."""
    import matplotlib
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    if "DejaVuSans" not in pdfmetrics.getRegisteredFontNames():
        ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
        pdfmetrics.registerFont(TTFont("DejaVuSans", str(ttf / "DejaVuSans.ttf")))
        pdfmetrics.registerFont(TTFont("DejaVuSans-Bold", str(ttf / "DejaVuSans-Bold.ttf")))
    return "DejaVuSans", "DejaVuSans-Bold"


def _chart_png(rep: MonthlyReport) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["font.family"] = "DejaVu Sans"
    fig = plt.figure(figsize=(11.0, 5.6))
    ax = fig.add_axes((0.08, 0.16, 0.9, 0.76))
    _chart(ax, rep)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()


def _monthly_pdf(rep: MonthlyReport, out: Path) -> Path:
    """Page 1: the chart (matplotlib); then the table, drawn with reportlab so that thousands
    of sites take a second, not the minutes matplotlib needs for as many Vietnamese strings."""
    import io

    from reportlab import rl_config
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfbase.pdfmetrics import stringWidth
    from reportlab.pdfgen import canvas

    regular, bold = _fonts()
    rl_config.useA85 = 0  # binary (deflated) streams: smaller, and no ASCII85 pass
    page_w, page_h = landscape(A4)
    headers = ["Đơn vị", "Điểm", "Kế hoạch", "Trong tháng", "Lũy kế", "Tỷ lệ %", "Hạn",
               "Dự kiến xong", "Đánh giá"]
    # (x, right-aligned?) per column, in points.
    cols = [(24, False), (150, False), (330, True), (400, True), (470, True), (520, True),
            (540, False), (610, False), (690, False)]
    lines: list[tuple[list[str], bool]] = []
    for unit, rows in rep.units():
        for r in rows:
            lines.append(([r.unit, r.site_id, _n(r.target_pages), _n(r.in_month),
                           _n(r.cumulative),
                           f"{100 * r.completion:.1f}" if r.completion is not None else "",
                           fmt_date(r.deadline), fmt_date(r.forecast) or "—", r.assessment],
                          False))
        st = _subtotal(f"Cộng {unit}", rows)
        lines.append(([st[0], st[2], _n(st[4]), _n(st[5]), _n(st[6]),
                       f"{st[7]}" if st[7] is not None else "", "", "", st[13]], True))
    tot = _subtotal("TỔNG CỘNG", rep.rows)
    lines.append(([tot[0], tot[2], _n(tot[4]), _n(tot[5]), _n(tot[6]),
                   f"{tot[7]}" if tot[7] is not None else "", "", "", tot[13]], True))
    pages = max(1, math.ceil(len(lines) / PDF_ROWS_PER_PAGE))
    subtitle = (f"Số liệu đến ngày {fmt_date(rep.as_of)} — lập ngày {fmt_date(rep.generated)}")
    c = canvas.Canvas(str(out), pagesize=(page_w, page_h), pageCompression=1)
    c.setTitle(rep.title)
    c.setCreator("sohoa")
    c.setFont(bold, 15)
    c.drawCentredString(page_w / 2, page_h - 40, rep.title)
    c.setFont(regular, 10)
    c.drawCentredString(page_w / 2, page_h - 58, subtitle)
    img = ImageReader(io.BytesIO(_chart_png(rep)))
    c.drawImage(img, 20, 40, width=page_w - 40, height=(page_w - 40) * 5.6 / 11.0,
                preserveAspectRatio=True)
    c.showPage()
    row_h = 11.0
    for pno in range(pages):
        chunk = lines[pno * PDF_ROWS_PER_PAGE:(pno + 1) * PDF_ROWS_PER_PAGE]
        c.setFont(bold, 10)
        c.drawCentredString(page_w / 2, page_h - 28, f"{rep.title} — trang {pno + 2}/{pages + 1}")
        y = page_h - 56
        c.setFillColorRGB(0.867, 0.922, 0.969)
        c.rect(18, y - 3, page_w - 36, row_h + 2, stroke=0, fill=1)
        c.setFillColorRGB(0, 0, 0)
        c.setFont(bold, 7.5)
        for (x, right), h in zip(cols, headers, strict=True):
            (c.drawRightString if right else c.drawString)(x, y, h)
        y0 = y
        for i, (_values, is_total) in enumerate(chunk):
            if is_total:
                c.setFillColorRGB(0.95, 0.95, 0.95)
                c.rect(18, y0 - (i + 1) * row_h - 3, page_w - 36, row_h, stroke=0, fill=1)
        c.setFillColorRGB(0, 0, 0)
        # One text object for the page: a drawString per cell costs an object each.
        text = c.beginText()
        for values, is_total in chunk:
            y -= row_h
            font = bold if is_total else regular
            text.setFont(font, 7)
            for (x, right), v in zip(cols, values, strict=True):
                if not v:
                    continue
                v = str(v)[:40]
                text.setTextOrigin(x - stringWidth(v, font, 7) if right else x, y)
                text.textOut(v)
        c.drawText(text)
        c.showPage()
    c.save()
    return out


def _n(v: Any) -> str:
    if v is None or v == "":
        return ""
    return f"{int(v):,}".replace(",", ".")


# --- acceptance -----------------------------------------------------------------------------

@dataclass
class AcceptanceRow:
    unit: str
    site_id: str
    name: str
    files_accepted: int
    pages_accepted: int
    sizes: SizeTally  # the accepted files' current pages by size class, and A4 equivalents
    rescan_verdicts: int
    rejected_verdicts: int
    reasons: Counter[str]


@dataclass
class AcceptedFile:
    site_id: str
    fonds: str
    file_code: str
    documents: int
    pages_accepted: int
    day: date
    sizes: SizeTally


@dataclass
class AcceptanceReport:
    contractor: str
    date_from: date
    date_to: date
    generated: date
    rows: list[AcceptanceRow]
    files: list[AcceptedFile]
    tolerance: float = ReportsConfig().page_size_tolerance

    @property
    def title(self) -> str:
        return (f"Báo cáo nghiệm thu khối lượng số hóa — nhà thầu {self.contractor}, "
                f"từ {fmt_date(self.date_from)} đến {fmt_date(self.date_to)}")

    @property
    def rule(self) -> str:
        pct = f"{100 * self.tolerance:g}".replace(".", ",")
        return ("Quy đổi trang A4: khổ A4 trở xuống = 1, khổ A3 = 2, khổ lớn hơn = diện tích "
                f"÷ diện tích A4, làm tròn lên (dung sai lề quét {pct}% mỗi cạnh).")

    def totals(self) -> SizeTally:
        out = SizeTally()
        for r in self.rows:
            out += r.sizes
        return out

    def unknown_note(self) -> str | None:
        n = self.totals().unknown
        if not n:
            return None
        return (f"Lưu ý: {_n(n)} trang chưa rõ khổ (ảnh không ghi độ phân giải) chưa được quy "
                "đổi A4; cần xác định khổ của các trang này trước khi thanh toán.")


_ACCEPTED_FILES = """
SELECT f.site_id, f.fonds, f.file_code, f.documents, COALESCE(f.pages_accepted, 0),
       (f.verdict_at AT TIME ZONE s.timezone)::date AS day
FROM files f JOIN sites s USING (site_id)
WHERE f.site_id = ANY(%(ids)s) AND f.state = 'accepted'
  AND (f.verdict_at AT TIME ZONE s.timezone)::date BETWEEN %(d1)s AND %(d2)s
ORDER BY f.site_id, day, f.fonds, f.file_code
"""

# The current pages of those files, with the size their latest check found.
_ACCEPTED_PAGES = """
SELECT f.site_id, f.fonds, f.file_code, p.width_mm, p.height_mm
FROM files f JOIN sites s USING (site_id)
JOIN pages p ON p.site_id = f.site_id AND p.fonds = f.fonds AND p.file_code = f.file_code
WHERE f.site_id = ANY(%(ids)s) AND f.state = 'accepted' AND NOT p.removed
  AND (f.verdict_at AT TIME ZONE s.timezone)::date BETWEEN %(d1)s AND %(d2)s
"""


def build_acceptance(conn: psycopg.Connection, contractor: str, d1: date, d2: date,
                     *, today: date | None = None, timezone: str = "Asia/Ho_Chi_Minh",
                     tolerance: float = ReportsConfig().page_size_tolerance
                     ) -> AcceptanceReport:
    today = today or datetime.now(ZoneInfo(timezone)).date()
    sites = conn.execute(
        "SELECT site_id, COALESCE(name, site_id), COALESCE(unit, '') FROM sites "
        "WHERE contractor = %s ORDER BY unit, site_id", (contractor,)).fetchall()
    q = {"ids": [s[0] for s in sites], "d1": d1, "d2": d2}
    sizes: dict[tuple[str, str, str], SizeTally] = defaultdict(SizeTally)
    for sid, fonds, code, width, height in conn.execute(_ACCEPTED_PAGES, q):
        sizes[(sid, fonds, code)].add(width, height, tolerance)
    files = [AcceptedFile(sid, fonds, code, docs, pages, day, sizes[(sid, fonds, code)])
             for sid, fonds, code, docs, pages, day in conn.execute(_ACCEPTED_FILES, q)]
    verdicts = conn.execute("""
        SELECT v.site_id, v.verdict, v.reasons
        FROM verdicts v JOIN sites s USING (site_id)
        WHERE v.site_id = ANY(%(ids)s) AND v.verdict <> 'accepted'
          AND (v.occurred_at AT TIME ZONE s.timezone)::date BETWEEN %(d1)s AND %(d2)s""",
                            q).fetchall()
    acc_files: Counter[str] = Counter()
    acc_pages: Counter[str] = Counter()
    site_sizes: dict[str, SizeTally] = defaultdict(SizeTally)
    for f in files:
        acc_files[f.site_id] += 1
        acc_pages[f.site_id] += f.pages_accepted
        site_sizes[f.site_id] += f.sizes
    rescans: Counter[str] = Counter()
    rejects: Counter[str] = Counter()
    reasons: dict[str, Counter[str]] = defaultdict(Counter)
    for sid, verdict, rs in verdicts:
        (rescans if verdict == "needs_rescan" else rejects)[sid] += 1
        for r in rs or [{}]:
            reasons[sid][r.get("reason") or "(không rõ)"] += 1
    rows = [AcceptanceRow(unit, sid, name, acc_files[sid], acc_pages[sid], site_sizes[sid],
                          rescans[sid], rejects[sid], reasons[sid]) for sid, name, unit in sites]
    return AcceptanceReport(contractor, d1, d2, today, rows, files, tolerance)


SIZE_HEADERS = [f"{SIZE_CLASS_VI[c]} (trang)" for c in SizeClass] + ["Quy đổi A4 (trang A4)"]
ACCEPT_HEADERS = ["Đơn vị", "Mã điểm", "Tên điểm", "Hồ sơ nghiệm thu", "Trang nghiệm thu",
                  *SIZE_HEADERS, "Số lần yêu cầu quét lại", "Số lần không đạt",
                  "Lý do (số lần)"]
FILE_HEADERS = ["Mã điểm", "Phông", "Mã hồ sơ", "Văn bản", "Số trang nghiệm thu", *SIZE_HEADERS,
                "Ngày nghiệm thu"]


def _sizes(t: SizeTally) -> list[int]:
    return [t.a4, t.a3, t.larger, t.unknown, t.a4_equivalents]


def _acc_values(r: AcceptanceRow) -> list[Any]:
    return [r.unit, r.site_id, r.name, r.files_accepted, r.pages_accepted, *_sizes(r.sizes),
            r.rescan_verdicts, r.rejected_verdicts,
            "; ".join(f"{k} ({v})" for k, v in r.reasons.most_common())]


def _file_values(f: AcceptedFile) -> list[Any]:
    return [f.site_id, f.fonds, f.file_code, f.documents, f.pages_accepted, *_sizes(f.sizes),
            fmt_date(f.day)]


def write_acceptance(rep: AcceptanceReport, fmt: str, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    total = ["TỔNG CỘNG", "", f"{len(rep.rows)} điểm",
             sum(r.files_accepted for r in rep.rows), sum(r.pages_accepted for r in rep.rows),
             *_sizes(rep.totals()), sum(r.rescan_verdicts for r in rep.rows),
             sum(r.rejected_verdicts for r in rep.rows), ""]
    notes = [rep.rule] + ([note] if (note := rep.unknown_note()) else [])
    if fmt == "csv":
        with out.open("w", encoding="utf-8-sig", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(cells([rep.title]))
            w.writerow(cells([f"Lập ngày {fmt_date(rep.generated)}"]))
            w.writerow(cells(ACCEPT_HEADERS))
            for r in rep.rows:
                w.writerow(cells(_acc_values(r)))
            w.writerow(cells(total))
            for note in notes:
                w.writerow(cells([note]))
        return out
    from openpyxl import Workbook
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    wb = Workbook()
    ws = wb.active
    ws.title = "Nghiệm thu"
    ws.append(cells([rep.title]))
    ws["A1"].font = Font(bold=True, size=13)
    ws.append(cells([f"Lập ngày {fmt_date(rep.generated)}"]))
    ws.append([])
    ws.append(cells(ACCEPT_HEADERS))
    for c in ws[ws.max_row]:
        c.font = Font(bold=True)
    for r in rep.rows:
        ws.append(cells(_acc_values(r)))
    ws.append(cells(total))
    for c in ws[ws.max_row]:
        c.font = Font(bold=True)
    ws.append([])
    for note in notes:
        ws.append(cells([note]))
    widths = (20, 18, 24, 14, 14, 14, 12, 14, 14, 14, 14, 14, 60)
    for i, wdt in enumerate(widths, 1):
        ws.column_dimensions[get_column_letter(i)].width = wdt
    ds = wb.create_sheet("Hồ sơ nghiệm thu")
    ds.append(cells(FILE_HEADERS))
    for c in ds[1]:
        c.font = Font(bold=True)
    for f in rep.files:
        ds.append(cells(_file_values(f)))
    wb.save(out)
    return out
