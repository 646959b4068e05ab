"""The figures of a contractor's acceptance record (biên bản nghiệm thu khối lượng).

Accepted: files whose current verdict is accepted and dated in the period; their current pages
by physical size class and in A4 equivalents (:mod:`consumers.page_sizes`), the unit contracts
pay in. Not accepted: the files whose latest verdict by the period's end is needs_rescan or
rejected and dated in it, each reason named (in Vietnamese, :mod:`consumers.reasons_vi`).
Contractors are matched as the plan spells them, case and diacritics aside.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

import psycopg

from consumers import reasons_vi
from consumers.page_sizes import SizeTally
from sohoa.config import ContractConfig, ReportsConfig, UnitPrices
from sohoa.naming import fold


class UnknownContractor(LookupError):
    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        listed = "; ".join(known) if known else "(kế hoạch chưa có nhà thầu nào)"
        super().__init__(f"không có nhà thầu {name!r} trong kế hoạch; các nhà thầu có: {listed}")


def plan_contractors(conn: psycopg.Connection) -> list[str]:
    return [c for (c,) in conn.execute(
        "SELECT DISTINCT contractor FROM sites WHERE contractor IS NOT NULL "
        "AND contractor <> '' ORDER BY 1")]


def match_contractor(conn: psycopg.Connection, name: str) -> list[str]:
    """Every spelling in the plan of the contractor ``name`` folds to (usually one); else
    :class:`UnknownContractor` listing the known ones."""
    known = plan_contractors(conn)
    found = [c for c in known if fold(c) == fold(name)]
    if not found:
        raise UnknownContractor(name, known)
    return found


def contract_for(reports: ReportsConfig, contractor: str) -> ContractConfig | None:
    return next((c for c in reports.contracts if fold(c.contractor) == fold(contractor)), None)


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
    reasons: Counter[str]  # Vietnamese label -> occurrences in the period's verdicts


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
class RefusedItem:
    """One reason a file is not accepted at the period's end (a page, or the file)."""

    site: str          # the site's name
    fonds: str
    file_code: str
    verdict: str       # needs_rescan | rejected
    document: str
    page: int | None   # page in the document
    position: int | None  # place in the file
    reason: str        # in Vietnamese, with its figures
    day: date


@dataclass
class Amount:
    label: str
    pages: int
    a4_equivalents: int | None
    unit: str
    price: int | None
    amount: int


@dataclass
class AcceptanceReport:
    contractor: str
    date_from: date
    date_to: date
    generated: date
    rows: list[AcceptanceRow]
    files: list[AcceptedFile]
    tolerance: float = ReportsConfig().page_size_tolerance
    contract: ContractConfig | None = None
    refused: list[RefusedItem] = field(default_factory=list)

    @property
    def period(self) -> str:
        from consumers import vi

        return f"từ ngày {vi.dmy(self.date_from)} đến ngày {vi.dmy(self.date_to)}"

    @property
    def title(self) -> str:
        return f"Biên bản nghiệm thu khối lượng số hóa — {self.contractor}, {self.period}"

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
        from consumers import vi

        n = self.totals().unknown
        if not n:
            return None
        return (f"Lưu ý: {vi.num(n)} trang chưa rõ khổ (ảnh không ghi độ phân giải) chưa được "
                "quy đổi A4; cần xác định khổ của các trang này trước khi thanh toán.")

    def amounts(self) -> list[Amount] | None:
        """Value by size class at the contract's prices (None without a contract)."""
        if self.contract is None:
            return None
        return amounts(self.totals(), self.contract.unit_prices)


def amounts(t: SizeTally, prices: UnitPrices) -> list[Amount]:
    larger_eq = t.a4_equivalents - t.a4 - 2 * t.a3
    return [
        Amount("Khổ A4 trở xuống", t.a4, t.a4, "trang", prices.a4, t.a4 * prices.a4),
        Amount("Khổ A3", t.a3, 2 * t.a3, "trang A3", prices.a3_price, t.a3 * prices.a3_price),
        Amount("Khổ lớn hơn A3", t.larger, larger_eq, "trang A4 quy đổi", prices.larger_price,
               larger_eq * prices.larger_price),
        Amount("Chưa rõ khổ (chưa tính tiền)", t.unknown, None, "trang", None, 0),
    ]


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

_PERIOD_VERDICTS = """
SELECT v.site_id, v.verdict, v.reasons
FROM verdicts v JOIN sites s USING (site_id)
WHERE v.site_id = ANY(%(ids)s) AND v.verdict <> 'accepted'
  AND (v.occurred_at AT TIME ZONE s.timezone)::date BETWEEN %(d1)s AND %(d2)s
"""

# Each file's latest verdict by the period's end; kept below when it refuses and falls in it.
_LATEST_VERDICTS = """
SELECT DISTINCT ON (v.site_id, v.fonds, v.file_code)
       v.site_id, v.fonds, v.file_code, v.verdict, v.reasons,
       (v.occurred_at AT TIME ZONE s.timezone)::date AS day
FROM verdicts v JOIN sites s USING (site_id)
WHERE v.site_id = ANY(%(ids)s)
  AND (v.occurred_at AT TIME ZONE s.timezone)::date <= %(d2)s
ORDER BY v.site_id, v.fonds, v.file_code, v.revision DESC, v.occurred_at DESC
"""


def build_acceptance(conn: psycopg.Connection, contractor: str | list[str], d1: date,
                     d2: date, *, today: date | None = None,
                     timezone: str = "Asia/Ho_Chi_Minh",
                     tolerance: float = ReportsConfig().page_size_tolerance,
                     contract: ContractConfig | None = None) -> AcceptanceReport:
    """``contractor``: the plan's spelling(s), as :func:`match_contractor` gives them."""
    names = [contractor] if isinstance(contractor, str) else contractor
    today = today or datetime.now(ZoneInfo(timezone)).date()
    sites = conn.execute(
        "SELECT site_id, COALESCE(name, site_id), COALESCE(unit, '') FROM sites "
        "WHERE contractor = ANY(%s) ORDER BY unit, site_id", (names,)).fetchall()
    site_name = {sid: name for sid, name, _unit in sites}
    q = {"ids": [s[0] for s in sites], "d1": d1, "d2": d2}
    sizes: dict[tuple[str, str, str], SizeTally] = defaultdict(SizeTally)
    for sid, fonds, code, width, height in conn.execute(_ACCEPTED_PAGES, q):
        sizes[(sid, fonds, code)].add(width, height, tolerance)
    files = [AcceptedFile(sid, fonds, code, docs, pages, day, sizes[(sid, fonds, code)])
             for sid, fonds, code, docs, pages, day in conn.execute(_ACCEPTED_FILES, q)]
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
    for sid, verdict, rs in conn.execute(_PERIOD_VERDICTS, q):
        (rescans if verdict == "needs_rescan" else rejects)[sid] += 1
        for r in rs or [{}]:
            reasons[sid][reasons_vi.label(r.get("reason"))] += 1
    refused: list[RefusedItem] = []
    for sid, fonds, code, verdict, rs, day in conn.execute(_LATEST_VERDICTS, q):
        if verdict == "accepted" or day < d1:
            continue
        for r in rs or [{}]:
            refused.append(RefusedItem(
                site=site_name[sid], fonds=fonds, file_code=code, verdict=verdict,
                document=r.get("document") or "", page=r.get("page_index"),
                position=r.get("position"), reason=reasons_vi.sentence(r.get("reason")),
                day=day))
    rows = [AcceptanceRow(unit, sid, name, acc_files[sid], acc_pages[sid], site_sizes[sid],
                          rescans[sid], rejects[sid], reasons[sid]) for sid, name, unit in sites]
    return AcceptanceReport(names[0], d1, d2, today, rows, files, tolerance, contract, refused)
