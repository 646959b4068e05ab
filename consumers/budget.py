"""The figures of a budget estimate (dự toán kinh phí số hóa) for the plan's remaining work.

Per site: remaining pages = plan − pages scanned (current pages); split by size class in the
mix of the site's own scanned pages of known size once it has ``budget_min_sample_pages`` of
them, else in the mix of every site's, else all as A4 (each site's basis says which); larger
pages count the A4 equivalents the sample's larger pages average. Priced at the unit prices of
the site contractor's contract, else ``reports.budget_unit_prices``. Working days left and the
pages per day they need come from the site's calendar (holidays, days off, make-up days).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime

import psycopg
from psycopg.rows import dict_row

from consumers import vi
from consumers.acceptance import contract_for
from consumers.calendar_days import load_calendar
from consumers.page_sizes import SizeTally
from consumers.progress import calendar_for
from sohoa.config import Settings, UnitPrices
from sohoa.naming import fold


class BudgetError(ValueError):
    pass


@dataclass
class Mix:
    """Shares of the pages of known size, and A4 equivalents per larger page."""

    a4: float
    a3: float
    larger: float
    larger_ratio: float
    sample: int
    source: str  # "site" | "campaign" | "assumed"

    @classmethod
    def of(cls, t: SizeTally, source: str) -> Mix:
        known = t.a4 + t.a3 + t.larger
        larger_eq = t.a4_equivalents - t.a4 - 2 * t.a3
        return cls(t.a4 / known, t.a3 / known, t.larger / known,
                   larger_eq / t.larger if t.larger else 3.0, known, source)

    def describe(self) -> str:
        shares = (f"A4 trở xuống {vi.pct(self.a4)}, A3 {vi.pct(self.a3)}, lớn hơn A3 "
                  f"{vi.pct(self.larger)}")
        if self.source == "site":
            return f"tỷ lệ khổ theo {vi.num(self.sample)} trang đã quét của điểm ({shares})"
        if self.source == "campaign":
            return (f"điểm chưa đủ trang để tính tỷ lệ khổ riêng: lấy tỷ lệ của "
                    f"{vi.num(self.sample)} trang đã quét toàn kế hoạch ({shares})")
        return "chưa có trang nào rõ khổ: tạm tính toàn bộ là khổ A4"


ASSUMED = Mix(1.0, 0.0, 0.0, 3.0, 0, "assumed")


@dataclass
class BudgetRow:
    unit: str
    site_id: str
    name: str
    contractor: str
    target: int
    scanned: int
    remaining: int
    a4: int
    a3: int
    larger: int
    a4_equivalents: int
    prices: UnitPrices | None
    price_source: str        # "HĐ số …" | "đơn giá chung (cấu hình)" | ""
    amount: int | None
    deadline: date | None
    working_days_left: int | None
    required_per_day: float | None
    basis: str


@dataclass
class BudgetReport:
    as_of: date
    campaign: str
    rows: list[BudgetRow]
    sources: list[str]       # the price sources used, for the text

    def units(self) -> list[tuple[str, list[BudgetRow]]]:
        groups: dict[str, list[BudgetRow]] = defaultdict(list)
        for r in self.rows:
            groups[r.unit].append(r)
        return sorted(groups.items(), key=lambda kv: vi.sort_key(kv[0]))


def _split(remaining: int, mix: Mix) -> tuple[int, int, int, int]:
    a3 = round(remaining * mix.a3)
    larger = round(remaining * mix.larger)
    a4 = remaining - a3 - larger
    return a4, a3, larger, a4 + 2 * a3 + round(larger * mix.larger_ratio)


def build_budget(conn: psycopg.Connection, settings: Settings, *, units: list[str] | None = None,
                 now: datetime | None = None) -> BudgetReport:
    reports = settings.reports
    cur = conn.cursor(row_factory=dict_row)
    sites = cur.execute(
        "SELECT v.site_id, v.name, v.unit, v.contractor, v.target_pages, v.deadline, "
        "v.timezone, v.pages_scanned, s.workdays, s.work_start, s.work_end "
        "FROM v_site_progress v JOIN sites s USING (site_id) "
        "WHERE v.target_pages IS NOT NULL ORDER BY v.unit, v.site_id").fetchall()
    if units:
        wanted = {fold(u) for u in units}
        known = sorted({s["unit"] for s in sites if s["unit"]})
        missing = [u for u in units if fold(u) not in {fold(k) for k in known}]
        if missing:
            raise BudgetError(f"không có đơn vị {', '.join(map(repr, missing))} trong kế hoạch; "
                              f"các đơn vị có: {'; '.join(known)}")
        sites = [s for s in sites if fold(s["unit"] or "") in wanted]
    if not sites:
        raise BudgetError("kế hoạch chưa có điểm nào (sohoa campaign import)")
    tallies: dict[str, SizeTally] = defaultdict(SizeTally)
    for sid, w, h, n in conn.execute(
            "SELECT site_id, round(width_mm::numeric), round(height_mm::numeric), count(*) "
            "FROM pages WHERE NOT removed AND width_mm IS NOT NULL GROUP BY 1, 2, 3"):
        t = SizeTally()
        t.add(float(w), float(h), reports.page_size_tolerance)
        for name in ("a4", "a3", "larger", "a4_equivalents"):
            setattr(tallies[sid], name, getattr(tallies[sid], name) + n * getattr(t, name))
    everywhere = SizeTally()
    for t in tallies.values():
        everywhere += t
    campaign_mix = (Mix.of(everywhere, "campaign") if everywhere.pages - everywhere.unknown
                    else ASSUMED)
    days = load_calendar(conn)
    now = now or datetime.now(UTC)
    rows: list[BudgetRow] = []
    sources: list[str] = []
    as_of = None
    for s in sites:
        cal = calendar_for(s, settings.campaign, days)
        today = cal.local_today(now)
        as_of = as_of or today
        t = tallies.get(s["site_id"], SizeTally())
        sized = t.a4 + t.a3 + t.larger
        mix = (Mix.of(t, "site") if sized >= reports.budget_min_sample_pages
               else campaign_mix)
        scanned = int(s["pages_scanned"])
        remaining = max(0, int(s["target_pages"]) - scanned)
        a4, a3, larger, eq = _split(remaining, mix)
        contract = contract_for(reports, s["contractor"] or "") if s["contractor"] else None
        prices = contract.unit_prices if contract else reports.budget_unit_prices
        source = (f"HĐ số {contract.number}" if contract else
                  "đơn giá chung (reports.budget_unit_prices)" if prices else "")
        if source and source not in sources:
            sources.append(source)
        amount = None
        larger_eq = eq - a4 - 2 * a3
        if prices is not None:
            amount = a4 * prices.a4 + a3 * prices.a3_price + larger_eq * prices.larger_price
        left = cal.working_days_between(today, s["deadline"]) if s["deadline"] else None
        need = (remaining / left if left else None) if remaining else 0.0
        price_text = (f"đơn giá {source}: A4 {vi.num(prices.a4)}, A3 {vi.num(prices.a3_price)}, "
                      f"lớn hơn A3 {vi.num(prices.larger_price)} đồng/trang A4 quy đổi"
                      if prices else "chưa có đơn giá (chưa tính thành tiền)")
        deadline_text = (f"{vi.num(left)} ngày làm việc đến hạn {vi.dmy(s['deadline'])}" +
                         (f", cần {vi.num(need, 1)} trang/ngày" if need is not None
                          else ", đã quá hạn") if left is not None else "chưa có hạn")
        basis = (f"Còn lại = kế hoạch {vi.num(s['target_pages'])} − đã số hóa "
                 f"{vi.num(scanned)} = {vi.num(remaining)} trang; {mix.describe()}; "
                 f"{price_text}; {deadline_text}.")
        rows.append(BudgetRow(
            unit=s["unit"] or "", site_id=s["site_id"], name=s["name"] or s["site_id"],
            contractor=s["contractor"] or "", target=int(s["target_pages"]), scanned=scanned,
            remaining=remaining, a4=a4, a3=a3, larger=larger, a4_equivalents=eq, prices=prices,
            price_source=source, amount=amount, deadline=s["deadline"],
            working_days_left=left, required_per_day=need, basis=basis))
    campaign = conn.execute(
        "SELECT name FROM campaigns ORDER BY imported_at DESC LIMIT 1").fetchone()
    return BudgetReport(as_of or now.date(),
                        campaign[0] if campaign else settings.campaign.name, rows, sources)
