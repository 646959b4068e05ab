"""What the province page shows, read from the progress store as the reader role.

Sites come from :func:`consumers.progress.load_sites` (the figures `sohoa status`, the gauges and
the alerts use), so the page never disagrees with them. Totals count the plan's sites only: a
site that sends pages without a plan is listed apart, never inside a unit or the total.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

import psycopg
from psycopg.rows import dict_row

from consumers import reasons_vi
from consumers.progress import SiteProgress, load_sites
from consumers.status import STATE_VI
from consumers.vi import sort_key
from sohoa.config import CampaignConfig

NO_UNIT = "(chưa ghi đơn vị)"


def site_name(s: SiteProgress) -> str:
    return s.name or s.site_id


def is_planned(s: SiteProgress) -> bool:
    return s.target_pages is not None


@dataclass
class Tally:
    """Pages of a group of planned sites."""

    sites: int = 0
    target: int = 0
    scanned: int = 0
    accepted: int = 0
    at_risk: int = 0

    def add(self, s: SiteProgress) -> None:
        self.sites += 1
        self.target += s.target_pages or 0
        self.scanned += s.pages_scanned
        self.accepted += s.pages_accepted
        self.at_risk += int(s.at_risk)

    @property
    def share(self) -> float | None:
        return self.scanned / self.target if self.target else None


@dataclass
class Unit:
    name: str
    sites: list[SiteProgress] = field(default_factory=list)
    tally: Tally = field(default_factory=Tally)


@dataclass
class Overview:
    units: list[Unit]
    total: Tally
    unplanned: list[SiteProgress]
    at_risk: list[SiteProgress]


def at_risk_first(sites: list[SiteProgress]) -> list[SiteProgress]:
    """Planned sites the forecast puts past their deadline (or stalled with pages left), the
    widest gap between the pace the deadline needs and the current pace first; a site whose
    deadline has passed with pages left needs an infinite pace."""
    def gap(s: SiteProgress) -> float:
        need = s.required_per_day if s.required_per_day is not None else float("inf")
        return need - s.throughput_per_day

    late = [s for s in sites if is_planned(s) and s.at_risk]
    return sorted(late, key=lambda s: (-gap(s), sort_key(site_name(s))))


def overview(conn: psycopg.Connection, campaign: CampaignConfig) -> Overview:
    sites = load_sites(conn, campaign)
    groups: dict[str, Unit] = {}
    total = Tally()
    for s in sites:
        if not is_planned(s):
            continue
        unit = groups.setdefault(s.unit or NO_UNIT, Unit(s.unit or NO_UNIT))
        unit.sites.append(s)
        unit.tally.add(s)
        total.add(s)
    units = sorted(groups.values(), key=lambda u: sort_key(u.name))
    for u in units:
        u.sites.sort(key=lambda s: sort_key(site_name(s)))
    unplanned = sorted((s for s in sites if not is_planned(s)), key=lambda s: s.site_id)
    return Overview(units, total, unplanned, at_risk_first(sites))


def one_site(conn: psycopg.Connection, campaign: CampaignConfig,
             site_id: str) -> SiteProgress | None:
    found = load_sites(conn, campaign, site=site_id)
    return found[0] if found else None


def files_by_state(conn: psycopg.Connection, site_id: str) -> dict[str, int]:
    return dict(conn.execute("SELECT state, files FROM v_files_by_state WHERE site_id = %s",
                             (site_id,)).fetchall())


_FILES = """
SELECT f.fonds, f.file_code, f.title, f.state, f.documents, f.pages, f.expected_pages,
       f.checked_pages, f.qc_failed_pages, f.verdict, f.verdict_at, f.last_page_at,
       v.reasons
FROM files f
LEFT JOIN verdicts v ON v.event_id = f.verdict_event_id
WHERE f.site_id = %(site)s AND (%(state)s::text IS NULL OR f.state = %(state)s::text)
ORDER BY f.fonds, f.file_code
LIMIT %(limit)s OFFSET %(offset)s
"""


@dataclass
class Reason:
    where: str   # "văn bản 003.tif, trang 1 (trang thứ 3 của hồ sơ)" or "cả hồ sơ"
    label: str   # the kind, for counting
    text: str    # the sentence with its figures


def verdict_reasons(raw: list[dict[str, Any]] | None) -> list[Reason]:
    """A verdict's reasons (``sohoa.events.RescanReason`` as stored) in Vietnamese."""
    out = []
    for r in raw or []:
        out.append(Reason(_where(r), reasons_vi.label(r.get("reason")),
                          reasons_vi.sentence(r.get("reason"))))
    return out


def _where(r: dict[str, Any]) -> str:
    parts = []
    if r.get("document"):
        parts.append(f"văn bản {r['document']}")
        if r.get("page_index"):
            parts.append(f"trang {r['page_index']}")
    elif r.get("number") is not None:
        parts.append(f"số trang {r['number']}")
    where = ", ".join(parts) or "cả hồ sơ"
    if r.get("position"):
        where += f" (trang thứ {r['position']} của hồ sơ)"
    return where


def site_files(conn: psycopg.Connection, site_id: str, *, state: str | None, page: int,
               per_page: int) -> list[dict[str, Any]]:
    rows = conn.cursor(row_factory=dict_row).execute(
        _FILES, {"site": site_id, "state": state, "limit": per_page,
                 "offset": (page - 1) * per_page}).fetchall()
    for r in rows:
        r["state_vi"] = STATE_VI.get(r["state"], r["state"])
        r["reasons"] = (verdict_reasons(r["reasons"])
                        if r["verdict"] in ("needs_rescan", "rejected") else [])
    return rows


_FILE = """
SELECT f.site_id, f.fonds, f.file_code, f.title, f.state, f.documents, f.pages,
       f.expected_pages, f.checked_pages, f.qc_failed_pages, f.verdict, f.verdict_at,
       f.verdict_revision, f.first_seen_at, f.last_page_at, f.closed_at, f.classification,
       f.pages_accepted, v.reasons
FROM files f LEFT JOIN verdicts v ON v.event_id = f.verdict_event_id
WHERE f.site_id = %s AND f.fonds = %s AND f.file_code = %s
"""

# The latest check of each current page whose check failed.
_FAILED_PAGES = """
SELECT p.document, p.page_index, c.checks
FROM pages p
JOIN LATERAL (
    SELECT k.checks FROM page_checks k
    WHERE (k.site_id, k.fonds, k.file_code, k.document, k.page_index, k.revision)
        = (p.site_id, p.fonds, p.file_code, p.document, p.page_index, p.revision)
    ORDER BY k.checked_at DESC, k.event_id DESC LIMIT 1
) c ON true
WHERE p.site_id = %s AND p.fonds = %s AND p.file_code = %s
  AND NOT p.removed AND p.check_passed = false
ORDER BY p.document, p.page_index
"""


def check_reason(c: dict[str, Any]) -> str:
    """A failed check in the QC workers' grammar, which :mod:`consumers.reasons_vi` words."""
    value, threshold = c.get("value"), c.get("threshold")
    if threshold is None:
        return f"{c['check']}: {value}"
    return f"{c['check']}: {value} (required {threshold})"


def file_detail(conn: psycopg.Connection, site_id: str, fonds: str,
                file_code: str) -> dict[str, Any] | None:
    row = conn.cursor(row_factory=dict_row).execute(_FILE, (site_id, fonds, file_code)
                                                    ).fetchone()
    if row is None:
        return None
    row["state_vi"] = STATE_VI.get(row["state"], row["state"])
    row["reasons"] = (verdict_reasons(row["reasons"])
                      if row["verdict"] in ("needs_rescan", "rejected") else [])
    failed = []
    for document, page_index, checks in conn.execute(
            _FAILED_PAGES, (site_id, fonds, file_code)):
        bad = [c for c in (checks or []) if not c.get("passed", True)]
        failed.append(Reason(
            _where({"document": document, "page_index": page_index}),
            ", ".join(reasons_vi.label(check_reason(c)) for c in bad) or "không đạt",
            "; ".join(reasons_vi.sentence(check_reason(c)) for c in bad) or "không đạt"))
    row["failed_pages"] = failed
    return row


_LOOKUP = """
SELECT f.site_id, s.name AS site_name, f.fonds, f.file_code, f.title, f.state, f.pages,
       f.verdict
FROM files f JOIN sites s USING (site_id)
WHERE (%(fonds)s::text IS NULL OR lower(f.fonds) = lower(%(fonds)s::text))
  AND (lower(f.file_code) = lower(%(code)s) OR f.file_code ILIKE %(prefix)s ESCAPE '\\')
ORDER BY lower(f.file_code) = lower(%(code)s) DESC, f.site_id, f.fonds, f.file_code
LIMIT %(limit)s
"""


def lookup(conn: psycopg.Connection, fonds: str | None, code: str,
           limit: int = 100) -> list[dict[str, Any]]:
    """Files whose code is ``code`` or starts with it (case aside), in ``fonds`` if given."""
    escaped = code.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    rows = conn.cursor(row_factory=dict_row).execute(
        _LOOKUP, {"fonds": fonds or None, "code": code, "prefix": escaped + "%",
                  "limit": limit}).fetchall()
    for r in rows:
        r["state_vi"] = STATE_VI.get(r["state"], r["state"])
    return rows


def contractors(conn: psycopg.Connection) -> list[str]:
    names = [r[0] for r in conn.execute(
        "SELECT DISTINCT contractor FROM sites WHERE contractor IS NOT NULL "
        "AND contractor <> ''")]
    return sorted(names, key=sort_key)


def months_with_pages(conn: psycopg.Connection) -> list[date]:
    """The first day of every month that has pages, newest first (the report form's list)."""
    rows = conn.execute(
        "SELECT DISTINCT date_trunc('month', day)::date FROM daily_progress ORDER BY 1 DESC"
    ).fetchall()
    return [r[0] for r in rows]

