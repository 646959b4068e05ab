"""vi-VN formats for what officers read: 1.234,5; dd/mm/yyyy; "ngày 05 tháng 3 năm 2026";
amounts in đồng and in words. One place, so every report, line and cell agrees.

XLSX cells are typed instead (numbers and dates with the number formats below): a spreadsheet
shows them with the separators of the reader's regional settings, 1.234,5 under vi-VN.
"""

from __future__ import annotations

from datetime import date

# Excel number formats of typed cells (the codes are locale-neutral; the display is not).
XLSX_INT = "#,##0"
XLSX_DEC1 = "#,##0.0"
XLSX_PCT = "0.0%"
XLSX_DATE = "dd/mm/yyyy"
XLSX_MONEY = "#,##0"


def num(value: float | int | None, decimals: int = 0) -> str:
    """1234.5 -> "1.234,5" (``decimals`` places); None -> ""."""
    if value is None:
        return ""
    text = f"{value:,.{decimals}f}"
    return text.replace(",", "\x00").replace(".", ",").replace("\x00", ".")


def pct(share: float | None, decimals: int = 1) -> str:
    """0.479 -> "47,9 %" (Vietnamese typesetting puts a space before %)."""
    return "" if share is None else f"{num(100 * share, decimals)} %"


def dmy(d: date | None) -> str:
    return d.strftime("%d/%m/%Y") if d else ""


def long_date(d: date) -> str:
    """"ngày 05 tháng 3 năm 2026": days under 10 and the months 1 and 2 take a leading zero
    (Nghị định 30/2020/NĐ-CP, Phụ lục I; the Party's guidance writes dates the same way)."""
    month = f"{d.month:02d}" if d.month < 3 else str(d.month)
    return f"ngày {d.day:02d} tháng {month} năm {d.year}"


def sort_key(text: str) -> tuple[str, str]:
    """Vietnamese alphabetical order, near enough for names in a list: letters without their
    marks first (Đ with D, not after Z as in code points), the exact text breaking ties."""
    from sohoa.naming import fold

    return fold(text), text


def money(value: int | None) -> str:
    """12345678 -> "12.345.678 đồng"."""
    return "" if value is None else f"{num(value)} đồng"


_DIGITS = ["không", "một", "hai", "ba", "bốn", "năm", "sáu", "bảy", "tám", "chín"]
def _three(n: int, full: bool) -> str:
    """Words of 0 < n < 1000; ``full``: a group after a higher one reads its hundreds
    ("một triệu không trăm lẻ năm nghìn")."""
    h, t, u = n // 100, n // 10 % 10, n % 10
    out: list[str] = []
    if h or full:
        out += [_DIGITS[h], "trăm"]
    if t == 0:
        if u and (h or full):
            out.append("lẻ")
    elif t == 1:
        out.append("mười")
    else:
        out += [_DIGITS[t], "mươi"]
    if u:
        if u == 1 and t >= 2:
            out.append("mốt")
        elif u == 5 and t >= 1:
            out.append("lăm")
        elif u == 4 and t >= 2:
            out.append("tư")
        else:
            out.append(_DIGITS[u])
    return " ".join(out)


def _below_billion(n: int, full: bool) -> list[str]:
    out: list[str] = []
    for scale, name in ((1_000_000, "triệu"), (1_000, "nghìn"), (1, "")):
        g = n // scale % 1000
        if g:
            out.append(_three(g, full))
            if name:
                out.append(name)
        full = full or bool(g)
    return out


def _words(n: int) -> list[str]:
    if n >= 1_000_000_000:
        hi, lo = divmod(n, 1_000_000_000)
        return [*_words(hi), "tỷ", *(_below_billion(lo, True) if lo else [])]
    return _below_billion(n, False)


def words(n: int) -> str:
    """An amount in words, as written under a payment total: 1250000 -> "Một triệu hai trăm
    năm mươi nghìn"."""
    if n < 0:
        rest = words(-n)
        return "Âm " + rest[0].lower() + rest[1:]
    text = " ".join(_words(n)) if n else "không"
    return text[0].upper() + text[1:]


def money_words(n: int) -> str:
    return f"{words(n)} đồng"
