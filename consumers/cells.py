"""Spreadsheet cells that cannot run: every row written to an XLSX or CSV passes through
:func:`cells`.

File codes come from folder names the contractor controls, and site names, units and contractors
from plans others type; a value beginning with ``= + - @``, a tab or a carriage return is read
by Excel and LibreOffice as a formula (``=HYPERLINK(…)`` turns into a live link, DDE can run
commands). Such a text gets a leading apostrophe, the usual neutralisation (OWASP "CSV
injection"): it shows as text, and the original is still readable after the apostrophe.
Numbers, dates and empty cells are left as they are.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: Any) -> Any:
    if isinstance(value, str) and value.lstrip(" ").startswith(FORMULA_TRIGGERS):
        return "'" + value
    return value


def cells(values: Iterable[Any]) -> list[Any]:
    """One row, ready for ``csv.writer.writerow`` or openpyxl's ``append``."""
    return [neutralise(v) for v in values]
