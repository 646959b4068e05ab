"""The monthly report's chart: cumulative pages of the plan's sites against the straight line
to their deadlines, as a PNG (matplotlib, for DOCX and PDF) and as a native XLSX line chart."""

from __future__ import annotations

import io
from datetime import date, datetime
from typing import TYPE_CHECKING

from consumers import vi
from consumers.cells import cells

if TYPE_CHECKING:
    from consumers.monthly import MonthlyReport

PLAN_LABEL = "Kế hoạch (đường thẳng đến hạn)"
ACTUAL_LABEL = "Lũy kế thực tế"
TITLE = "Lũy kế số hóa so với kế hoạch (trang, các điểm trong kế hoạch)"


def chart_png(rep: MonthlyReport, width_in: float = 10.0, height_in: float = 5.0) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import FuncFormatter

    plt.rcParams["font.family"] = "DejaVu Sans"
    fig = plt.figure(figsize=(width_in, height_in))
    ax = fig.add_axes((0.1, 0.17, 0.87, 0.75))
    actual = [np.nan if a is None else a for a in rep.chart_actual]
    # matplotlib converts dates through its units registry (and picks date ticks from them);
    # its stubs type x as numbers only, hence the ignores.
    ax.plot(rep.chart_days, rep.chart_planned, "--",  # type: ignore[arg-type]
            color="#888888", label=PLAN_LABEL)
    ax.plot(rep.chart_days, actual, "-", color="#1f77b4",  # type: ignore[arg-type]
            linewidth=2, label=ACTUAL_LABEL)
    first = date(rep.year, rep.month, 1)
    ax.axvspan(first, rep.as_of, color="#ffe9a8", alpha=0.4,  # type: ignore[arg-type]
               label=f"Tháng {rep.month:02d}/{rep.year}")
    ax.set_title(TITLE)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%d/%m/%Y"))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: vi.num(v)))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left")
    for label in ax.get_xticklabels():
        label.set_rotation(30)
        label.set_horizontalalignment("right")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150)
    plt.close(fig)
    return buf.getvalue()


def add_xlsx_chart(rep: MonthlyReport):
    """A callback that adds the chart sheet (data typed: dates as dates) to a workbook."""

    def add(wb) -> None:
        from openpyxl.chart import LineChart, Reference

        cs = wb.create_sheet("Biểu đồ")
        cs.append(cells(["Ngày", f"{ACTUAL_LABEL} (trang)", PLAN_LABEL]))
        for d, a, p in zip(rep.chart_days, rep.chart_actual, rep.chart_planned, strict=True):
            cs.append([datetime(d.year, d.month, d.day), a, round(p)])
            cs.cell(cs.max_row, 1).number_format = vi.XLSX_DATE
            cs.cell(cs.max_row, 2).number_format = vi.XLSX_INT
            cs.cell(cs.max_row, 3).number_format = vi.XLSX_INT
        cs.column_dimensions["A"].width = 12
        cs.column_dimensions["B"].width = 22
        cs.column_dimensions["C"].width = 30
        if not rep.chart_days:
            return
        last_row = len(rep.chart_days) + 1
        chart = LineChart()
        chart.title = TITLE
        chart.y_axis.title = "Trang"
        chart.x_axis.title = "Ngày"
        chart.x_axis.number_format = vi.XLSX_DATE
        chart.add_data(Reference(cs, min_col=2, max_col=3, min_row=1, max_row=last_row),
                       titles_from_data=True)
        chart.set_categories(Reference(cs, min_col=1, min_row=2, max_row=last_row))
        chart.width, chart.height = 28, 14
        cs.add_chart(chart, "E2")
        cs.print_title_rows = "1:1"
        cs.page_setup.paperSize = cs.PAPERSIZE_A4
        cs.page_setup.orientation = "landscape"

    return add
