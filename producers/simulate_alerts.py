"""After `sohoa simulate --through-spine`: do the alerts fire for exactly the sites they should?

A real Prometheus scrapes the consumer's and the apps' /metrics with the repository's rule
files loaded (``--prometheus URL``). The expressions of the alerts whose inputs are the sites'
counts and plan, as that Prometheus loaded them from ``monitoring/prometheus/rules/alerts.yml``,
are evaluated through ``/api/v1/query`` against the live scrape instead of waiting out their
``for:`` durations (15 min to 1 h: longer than a compressed run): an expression that holds is
an alert pending. What each must hold for is derived from the simulator's ledger, the imported
plan and the rules' thresholds:

- ``SohoaSiteBehindSchedule``: pages left (target − the ledger's pages) and, by the ledger's
  pages per simulated day over the campaign's forecast window, a completion after the deadline
  (``consumers.forecast.forecast_site``, the formula the centre states; what is checked is that
  the counts it reaches the rule with are the ledger's) or a deadline already past.
- ``SohoaQcFailureRateHigh``: more than 15 % of the pages failed QC, over at least 50 pages,
  counted from the site's zero (the run waits for Prometheus to see every planned site at zero
  pages before it sends, :func:`wait_for_baseline`). A site whose zero Prometheus did not see
  in the rule's 6 h window, or whose count sits within ``delta()``'s extrapolation of the
  50-page floor, is listed as undecided, not compared.
- ``SohoaDeadLetters``: the scenario's one malformed event, dead-lettered by the assembly app
  and by the consumer (its ``stage`` labels), while it is inside the rule's 15 min.

Not checked, because their inputs are the hour of the check rather than the ledger: the alerts
gated on ``sohoa_site_working_now`` and on heartbeat age against the real clock
(``SohoaSiteStalled``, ``SohoaSiteAgentDown``, ``SohoaSiteOffline``,
``SohoaSiteUploadBacklog``): a simulated history's last heartbeat is minutes or days old
depending on when the run starts, and at night or on a weekend none may fire. Nor are the
pipeline's own alerts (OCR backlog and failures, consumer lag): no site count says when they
should fire.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from producers.simulate_spine import Ledger
from sohoa.config import Settings

SITE_ALERTS = ("SohoaSiteBehindSchedule", "SohoaQcFailureRateHigh")
DEAD_LETTERS = "SohoaDeadLetters"   # by stage: every reader of the site-events topic
CHECKED = (*SITE_ALERTS, DEAD_LETTERS)
DEAD_LETTER_STAGES = ("assembly", "consumer")
DEAD_LETTER_WINDOW_S = 15 * 60  # the rule's increase(…[15m])
QC_SHARE_PCT = 15.0    # the rule's "> 15"
QC_MIN_PAGES = 50      # the rule's ">= 50"
QC_WINDOW = "6h"
# delta() extrapolates a window's first and last samples towards its edges: a count a little
# under the floor can read over it. Within this factor below the floor a site is undecided.
EXTRAPOLATION = 1.1

Sites = dict[str, set[str]]  # alert -> sites (stages, for the dead letters)


class PrometheusError(RuntimeError):
    pass


def _get(base: str, path: str, params: dict[str, str]) -> Any:
    url = f"{base.rstrip('/')}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=15) as resp:
        body = json.loads(resp.read())
    if body.get("status") != "success":
        raise PrometheusError(f"{path}: {body}")
    return body["data"]


def query(base: str, expr: str, at: float | None = None) -> list[dict[str, Any]]:
    params = {"query": expr}
    if at is not None:
        params["time"] = f"{at:.3f}"
    data = _get(base, "/api/v1/query", params)
    return list(data["result"])


def rule_expressions(base: str) -> dict[str, str]:
    """Each alert's expression as Prometheus loaded it from the rule files."""
    groups = _get(base, "/api/v1/rules", {})["groups"]
    return {r["name"]: r["query"] for g in groups for r in g["rules"] if r["type"] == "alerting"}


def check_rules_loaded(base: str) -> None:
    """The Prometheus must evaluate the repository's rules (the recording rule the alerts join
    on included), or its answers say nothing about the shipped alerts."""
    groups = _get(base, "/api/v1/rules", {})["groups"]
    names = {r.get("name") for g in groups for r in g["rules"]}
    missing = (set(CHECKED) | {"sohoa:site_unit:info"}) - names
    if missing:
        raise PrometheusError(f"Prometheus at {base} lacks the rules {sorted(missing)}: load "
                              "monitoring/prometheus/rules/*.yml")


def wait_for_baseline(base: str, sites: list[str], timeout_s: float) -> bool:
    """Until Prometheus has scraped every one of ``sites`` at zero pages (the plan imported,
    no page yet): the QC rate's window then starts from each site's zero."""
    want = set(sites)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        seen = {r["metric"].get("site") for r in query(base, "sohoa_site_pages_scanned == 0")}
        if want <= seen:
            return True
        time.sleep(0.5)
    return False


def last_scrape(base: str) -> float:
    """When Prometheus last scraped the consumer's progress gauges (0: never)."""
    res = query(base, "max(timestamp(sohoa_consumer_store_up))")
    return float(res[0]["value"][1]) if res else 0.0


@dataclass
class AlertComparison:
    differences: list[str]
    expected: Sites
    observed: Sites
    undecided: Sites = field(default_factory=dict)

    @property
    def equal(self) -> bool:
        return not self.differences

    def to_json(self) -> dict[str, Any]:
        return {"equal": self.equal, "differences": self.differences[:200],
                "expected": {k: sorted(v) for k, v in self.expected.items()},
                "observed": {k: sorted(v) for k, v in self.observed.items()},
                "undecided": {k: sorted(v) for k, v in self.undecided.items() if v}}


def expected_alerts(settings: Settings, ledger: Ledger, today: date,
                    baseline: set[str], now_s: float) -> tuple[Sites, Sites]:
    """(sites each checked alert must hold for, sites it cannot be decided for)."""
    from consumers.forecast import forecast_site
    from sohoa.work_calendar import WorkCalendar

    cal = WorkCalendar.from_campaign(settings.campaign)
    behind: set[str] = set()
    for site, plan in ledger.plan.items():
        s = ledger.sites.get(site)
        pages = s.pages if s else 0
        target, deadline = int(plan["target_pages"]), plan.get("deadline")
        if deadline is None or target - pages <= 0:
            continue
        due = date.fromisoformat(deadline)
        days = {date.fromisoformat(d): n for d, n in (s.pages_by_day if s else {}).items()}
        fc = forecast_site(cal, days, today=today, scanned=pages, target=target, deadline=due,
                           window_days=settings.campaign.forecast_window_days)
        if fc.at_risk or due < today:
            behind.add(site)
    qc: set[str] = set()
    qc_undecided: set[str] = set()
    for site, s in ledger.sites.items():
        share = 100.0 * s.failed_pages / max(s.pages, 1)
        fires = share > QC_SHARE_PCT and s.pages >= QC_MIN_PAGES
        near = (share == QC_SHARE_PCT or
                (share > QC_SHARE_PCT and QC_MIN_PAGES / EXTRAPOLATION <= s.pages < QC_MIN_PAGES))
        if near or (s.pages and site not in baseline):
            qc_undecided.add(site)
        elif fires:
            qc.add(site)
    # The scenario's malformed event, dead-lettered by the assembly app and by the consumer,
    # counts in the rule's 15 min from when each handled it: surely inside while under 14 min
    # have passed since it was sent, beyond that only as fast as the stack drained.
    dead: set[str] = set()
    dead_undecided: set[str] = set()
    if ledger.malformed:
        age = now_s - (ledger.malformed_at or 0.0)
        (dead if age < DEAD_LETTER_WINDOW_S - 60 else dead_undecided).update(DEAD_LETTER_STAGES)
    return ({"SohoaSiteBehindSchedule": behind, "SohoaQcFailureRateHigh": qc,
             DEAD_LETTERS: dead},
            {"SohoaQcFailureRateHigh": qc_undecided, DEAD_LETTERS: dead_undecided})


def observed_alerts(base: str, at: float) -> Sites:
    exprs = rule_expressions(base)
    return {name: {r["metric"]["stage" if name == DEAD_LETTERS else "site"]
                   for r in query(base, exprs[name], at)} for name in CHECKED}


def active_alerts(base: str) -> dict[str, dict[str, str]]:
    """What Prometheus's own rule evaluation holds (``/api/v1/alerts``): per checked alert,
    site (or stage) -> state, "pending" until its ``for:`` has passed, then "firing"."""
    out: dict[str, dict[str, str]] = {name: {} for name in CHECKED}
    for a in _get(base, "/api/v1/alerts", {})["alerts"]:
        name = a["labels"].get("alertname")
        if name in out:
            out[name][a["labels"]["stage" if name == DEAD_LETTERS else "site"]] = a["state"]
    return out


def compare_alerts(settings: Settings, ledger: Ledger, base: str) -> AlertComparison:
    from sohoa.work_calendar import WorkCalendar

    at = time.time()
    today = WorkCalendar.from_campaign(settings.campaign).local_today(
        datetime.fromtimestamp(at, UTC))
    baseline = {r["metric"]["site"] for r in query(
        base, f"min_over_time(sohoa_site_pages_scanned[{QC_WINDOW}]) == 0", at)}
    expected, undecided = expected_alerts(settings, ledger, today, baseline, at)
    observed = observed_alerts(base, at)
    diffs = []
    for name in CHECKED:
        skip = undecided.get(name, set())
        want, got = expected[name] - skip, observed[name] - skip
        for site in sorted(want - got):
            diffs.append(f"{name} {site}: simulator expects it, Prometheus does not fire")
        for site in sorted(got - want):
            diffs.append(f"{name} {site}: Prometheus fires, simulator does not expect it")
    return AlertComparison(diffs, expected, observed, undecided)


def wait_until_alerts_equal(settings: Settings, ledger: Ledger, base: str, *, after: float,
                            timeout_s: float, poll_s: float = 1.0) -> AlertComparison:
    """Once Prometheus has scraped gauges computed after ``after`` (epoch seconds; the consumer
    caches them ``consumer.gauge_cache_s``), compare until equal or ``timeout_s``."""
    t_end = time.monotonic() + timeout_s
    fresh = after + settings.consumer.gauge_cache_s
    while (scraped := last_scrape(base)) < fresh and time.monotonic() < t_end:
        time.sleep(poll_s)
    while True:
        c = compare_alerts(settings, ledger, base)
        if c.equal or time.monotonic() >= t_end:
            break
        time.sleep(poll_s)
    if scraped < fresh:
        # Not an alert missing: Prometheus has no gauges of the drained stack to judge by.
        c.differences.insert(0, "Prometheus has not scraped the consumer's gauges since the "
                             f"drain (last scrape {time.time() - scraped:.0f} s ago): "
                             "/metrics slower than the scrape timeout?")
    return c
