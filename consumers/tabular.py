"""Rows of a CSV or XLSX file an office typed (plans, calendars): the header as spelled and
each non-empty row with its number as the user sees it (dòng N)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any


class TabularError(ValueError):
    """The file itself cannot be read as a table; the message is for the user."""


def read_rows(path: Path) -> tuple[list[str], list[tuple[int, list[Any]]]]:
    """(header, [(row number, cells)]) of the first sheet of an XLSX or a CSV (UTF-8, BOM
    optional, comma or semicolon)."""
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        from openpyxl import load_workbook

        try:
            wb = load_workbook(path, read_only=True, data_only=True)
        except Exception as exc:  # a damaged or renamed file: say so, not a traceback
            raise TabularError(f"{path.name}: không đọc được tệp XLSX ({exc})") from None
        ws = wb.worksheets[0]
        rows = [(i, list(r)) for i, r in enumerate(ws.iter_rows(values_only=True), 1)]
        wb.close()
    elif suffix in (".csv", ".txt"):
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise TabularError(f"{path.name}: tệp CSV phải mã hóa UTF-8 (not UTF-8)") from None
        first = text.split("\n", 1)[0]
        delimiter = ";" if first.count(";") > first.count(",") else ","
        rows = [(i, r) for i, r in enumerate(csv.reader(io.StringIO(text),
                                                        delimiter=delimiter), 1)]
    else:
        raise TabularError(f"{path.name}: định dạng không hỗ trợ (unsupported format "
                           f"{suffix!r}; use .xlsx or .csv)")
    rows = [(i, r) for i, r in rows if any(str(c or "").strip() for c in r)]
    if not rows:
        raise TabularError(f"{path.name}: tệp trống (empty file)")
    _header_no, header = rows[0]
    return [str(h or "").strip().lstrip("\ufeff") for h in header], rows[1:]
