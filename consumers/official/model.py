"""The blocks of an official document, independent of the file format that renders them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

from consumers import vi

# How a column's values are typed and shown: XLSX cells get the type and number format, DOCX
# and PDF the vi-VN text.
Kind = Literal["text", "int", "dec1", "pct", "date", "money"]


@dataclass(frozen=True)
class Col:
    title: str
    kind: Kind = "text"
    width: float = 1.0          # relative share of the table's width (DOCX, PDF)
    xlsx_width: float = 12.0    # characters
    printed: bool = True        # False: in the XLSX only (e.g. site codes beside names)


def show(value: Any, kind: Kind) -> str:
    """A cell as text in vi-VN (DOCX, PDF, CSV)."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        return value
    if kind == "int" or kind == "money":
        return vi.num(value)
    if kind == "dec1":
        return vi.num(value, 1)
    if kind == "pct":
        return vi.pct(value)
    if kind == "date" and isinstance(value, date):
        return vi.dmy(value)
    return str(value)


RowStyle = Literal["", "group", "subtotal", "total"]


@dataclass
class Row:
    values: list[Any]
    # group: a heading row, [number (I, II…), label] in the first two columns, bold; subtotal
    # and total: bold sums.
    style: RowStyle = ""
    emphasis: bool = False      # e.g. a late site's status, shown in red


@dataclass
class Table:
    columns: list[Col]
    rows: list[Row]
    sheet: str                  # XLSX sheet name (<= 31 characters)
    caption: str = ""           # shown above the table
    font_pt: float = 10.0       # DOCX/PDF
    notes: list[str] = field(default_factory=list)  # below the table

    def printed(self) -> Table:
        """The table as DOCX and PDF show it: only the printed columns."""
        keep = [i for i, c in enumerate(self.columns) if c.printed]
        if len(keep) == len(self.columns):
            return self
        rows = [r if r.style == "group" else
                Row([r.values[i] for i in keep], r.style, r.emphasis) for r in self.rows]
        assert all(c.printed for c in self.columns[:2]), "group labels sit in columns 1-2"
        return Table([self.columns[i] for i in keep], rows, self.sheet, self.caption,
                     self.font_pt, self.notes)


@dataclass
class Para:
    text: str
    style: Literal["body", "heading", "caption", "note", "center"] = "body"


@dataclass
class Chart:
    png: bytes
    width_cm: float
    caption: str = ""
    # Adds a native chart sheet to an XLSX workbook (openpyxl), when the report has one.
    xlsx: Callable[[Any], None] | None = None


Block = Para | Table | Chart


@dataclass
class Heading:
    """The top of the first page and the title: issuer, national motto or Party title,
    number and symbol, place and date, type of document and its summary (trích yếu)."""

    form: Literal["state", "party"]
    parent: str                 # cơ quan chủ quản ("" when none)
    issuer: str                 # cơ quan ban hành
    number_line: str            # "Số: 12/BC-SNV" / "Số 12-BC/VPTU"
    place_date: str             # "Đồng Nai, ngày 05 tháng 4 năm 2026"
    doc_type: str               # "BÁO CÁO", "BIÊN BẢN", "DỰ TOÁN"
    summary: str                # trích yếu


@dataclass
class SignBlock:
    lines: list[str]            # quyền hạn, chức vụ (upper case, bold)
    name: str                   # họ tên (bold)
    hint: str = ""              # e.g. "(Ký, ghi rõ họ tên, đóng dấu)"


@dataclass
class OfficialDoc:
    heading: Heading
    body: list[Block]
    signatures: list[SignBlock]           # one: right; two: left and right
    recipients: list[str] | None = None   # Nơi nhận (None: none, as in a biên bản)
    recipients_title: str = "Nơi nhận:"
    appendix: list[Block] = field(default_factory=list)  # landscape pages after the signature
    appendix_title: str = ""
    as_of: str = ""                       # one line under the title in XLSX sheets

    @property
    def title(self) -> str:
        return f"{self.heading.doc_type.capitalize()} {self.heading.summary}".strip()

    def tables(self) -> list[Table]:
        """The appendix's tables (the detail, usually what a spreadsheet is opened for) first,
        then the body's."""
        return [b for b in [*self.appendix, *self.body] if isinstance(b, Table)]
