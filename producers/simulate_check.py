"""After `sohoa simulate --through-spine`: does the centre's PostgreSQL say what was sent?

The simulator's ledger (``producers.simulate_spine.Ledger``) is the independent count. Per site
it is compared with what the stack made of it: the pages table (pages, pages per simulated day,
pages that failed QC), ``sohoa status`` (``consumers.status.collect``), the daily counts, the
files assembled and judged (one verdict per closed file, accepted exactly for the files with no
page below the dpi floor), the last heartbeat; and the dead letters hold exactly the scenario's
one malformed event, once per reader of the site-events topic. Equality, not "at least": a page
lost or counted twice anywhere shows as a difference.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from producers.simulate_spine import Ledger
from sohoa.config import Settings

Figures = dict[str, dict[str, Any]]  # site -> figure -> value

_QUERIES = {
    "pages": "SELECT site_id, count(*) FROM pages WHERE NOT removed GROUP BY site_id",
    "failed_pages": "SELECT site_id, count(*) FROM pages WHERE NOT removed AND "
                    "check_passed = false GROUP BY site_id",
    "unchecked_pages": "SELECT site_id, count(*) FROM pages WHERE NOT removed AND "
                       "check_passed IS NULL GROUP BY site_id",
    "files_assembled": "SELECT site_id, count(DISTINCT (fonds, file_code)) "
                       "FROM file_assemblies GROUP BY site_id",
    "files_judged": "SELECT site_id, count(DISTINCT (fonds, file_code)) FROM verdicts "
                    "GROUP BY site_id",
    "files_accepted": "SELECT site_id, count(*) FROM (SELECT DISTINCT ON (site_id, fonds, "
                      "file_code) site_id, verdict FROM verdicts ORDER BY site_id, fonds, "
                      "file_code, revision DESC) v WHERE verdict = 'accepted' GROUP BY site_id",
    "daily_files_accepted": "SELECT site_id, sum(files_accepted) FROM daily_progress "
                            "GROUP BY site_id",
    "last_heartbeat_at": "SELECT site_id, last_heartbeat_at FROM site_heartbeats",
}


@dataclass
class Comparison:
    differences: list[str]
    observed: Figures
    expected: Figures
    dead_letters: dict[str, int]
    waited_s: float

    @property
    def equal(self) -> bool:
        return not self.differences


def expected_figures(ledger: Ledger) -> Figures:
    out: Figures = {}
    for site, s in ledger.sites.items():
        out[site] = {
            "pages": s.pages, "status_pages": s.pages, "failed_pages": s.failed_pages,
            "unchecked_pages": s.pages - s.pages_in_closed_files,
            "pages_by_day": {d: n for d, n in s.pages_by_day.items() if n},
            "daily_pages": {d: n for d, n in s.pages_by_day.items() if n},
            "files_assembled": s.files_closed, "files_judged": s.files_closed,
            "files_accepted": s.files_clean, "daily_files_accepted": s.files_clean,
            "last_heartbeat_at": s.last_heartbeat_at,
        }
    return out


def observed_figures(conn: psycopg.Connection,
                     settings: Settings) -> tuple[Figures, dict[str, int]]:
    from consumers.status import collect

    out: Figures = defaultdict(dict)
    for name, sql in _QUERIES.items():
        for site, value in conn.execute(sql).fetchall():
            if isinstance(value, datetime):
                value = value.isoformat()
            out[site][name] = int(value) if isinstance(value, int | float) else value
    for site, day, n in conn.execute(
            "SELECT site_id, scan_day, count(*) FROM pages WHERE NOT removed "
            "GROUP BY site_id, scan_day").fetchall():
        out[site].setdefault("pages_by_day", {})[day.isoformat()] = int(n)
    for site, day, n in conn.execute(
            "SELECT site_id, day, pages_scanned FROM daily_progress "
            "WHERE pages_scanned > 0").fetchall():
        out[site].setdefault("daily_pages", {})[day.isoformat()] = int(n)
    status = collect(conn, settings.campaign, with_files=False)
    for s in status["sites"]:
        if s["pages"]:
            out[s["site_id"]]["status_pages"] = int(s["pages"])
    dead: dict[str, int] = dict(conn.execute(
        "SELECT source, count(*) FROM dead_letters GROUP BY source").fetchall())
    return dict(out), {k: int(v) for k, v in dead.items()}


def _same_instant(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        try:
            return datetime.fromisoformat(a) == datetime.fromisoformat(b)
        except ValueError:
            return False
    return bool(a == b)


def expected_dead_letters(ledger: Ledger) -> dict[str, int]:
    """Each reader of the site-events topic records a malformed event once."""
    from consumers.apply.records import CONSUMER_SOURCE

    return {src: ledger.malformed for src in ("streams", CONSUMER_SOURCE)} \
        if ledger.malformed else {}


def differences(expected: Figures, observed: Figures, ledger: Ledger,
                dead_letters: dict[str, int]) -> list[str]:
    out = []
    for site in sorted(set(expected) | set(observed)):
        want, got = expected.get(site, {}), observed.get(site, {})
        for name in sorted(set(want) | set(got)):
            w, g = want.get(name, 0), got.get(name, 0)
            if name in ("pages_by_day", "daily_pages"):
                w, g = w or {}, g or {}
            if not _same_instant(w, g):
                out.append(f"{site} {name}: simulator {w!r}, PostgreSQL {g!r}")
    want_dead = expected_dead_letters(ledger)
    if dead_letters != want_dead:
        out.append(f"dead_letters: simulator {want_dead}, PostgreSQL {dead_letters}")
    return out


def compare(settings: Settings, ledger: Ledger, dsn: str) -> Comparison:
    exp = expected_figures(ledger)
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        obs, dead = observed_figures(conn, settings)
    return Comparison(differences(exp, obs, ledger, dead), obs, exp, dead, 0.0)


def wait_until_equal(settings: Settings, ledger: Ledger, dsn: str, timeout_s: float,
                     poll_s: float = 2.0, settle_s: float = 5.0) -> Comparison:
    """Compare until equal or ``timeout_s``; once equal, again after ``settle_s`` (a late
    duplicate would land by then). The last comparison says what still differs."""
    t0 = time.monotonic()
    while True:
        c = compare(settings, ledger, dsn)
        c.waited_s = time.monotonic() - t0
        if c.equal and settle_s > 0:
            time.sleep(settle_s)
            c = compare(settings, ledger, dsn)
            c.waited_s = time.monotonic() - t0
            if c.equal:
                return c
        if c.equal or c.waited_s >= timeout_s:
            return c
        time.sleep(poll_s)
