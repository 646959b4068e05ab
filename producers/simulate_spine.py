"""`sohoa simulate --through-spine`: simulated sites that the real centre serves.

The simulator plays only the sites. Each simulated page becomes a real small JPEG written under
``<sources-root>/<site_id>/<fonds>/<file>/`` (the centre's workers read it there through
``sources.default_roots = ["<sources-root>/{site_id}"]``), and the events are the ones a site
agent sends, built by the agent's own code: PageScanned by ``producers.changes`` from the
document's facts (``sohoa.documents.inspect_document``, as the agent hashes it), FileManifest
by ``producers.manifest``, FileClosed by ``producers.filing.file_closed``, SiteHeartbeat by
``producers.sender.heartbeat``, signed as the agent signs when ``identity.sites`` holds the
site's secret. They go to the stack's own ``topics.site_events``; the assembly app, the QC app,
the consumer and PostgreSQL make everything else. Every ``occurred_at`` is simulated time.

What the simulator sent is its ledger (:class:`Ledger`): the independent count that
``producers.simulate_check`` compares with PostgreSQL once the stack has drained.

Such a run may only reach a stack that is clearly a simulation (:func:`check_simulation_stack`).
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import time as _time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from producers.changes import DocumentRead, document_changes
from producers.filing import file_closed
from producers.layout import PageName
from producers.manifest import manifest_event
from producers.sender import heartbeat
from sohoa.config import Settings
from sohoa.documents import inspect_document
from sohoa.events import Event, FileClosed, PageScanned, SiteHeartbeat

AGENT_VERSION = "sohoa-simulate"
# A word "sim" in a name: "sim", "sim_3f2a", "sohoa.sim.site-events", "sohoa-sim" (not "simple").
SIM_WORD = re.compile(r"(^|[._-])sim($|[._-])")
BASE_PAGES = 8  # distinct renderings per resolution; each page is made unique by a comment


class NotSimulationStack(click.ClickException):
    """The stack named by the settings is not one a simulation may feed."""


def _db_name(dsn: str) -> str:
    from producers.simulate import _db_identity

    return _db_identity(dsn)[2]


def check_simulation_stack(settings: Settings, sources_root: Path,
                           site_ids: list[str]) -> None:
    """Refuse unless every count this run can reach is a simulation's.

    The consumer writes ``postgres.dsn``: its database name must carry the word ``sim`` (every
    report, status and board of that database then shows simulated work only). The workers read
    ``topics.site_events``: its name must carry it too, so no deployment's workers, which read
    their own topic, ever see a simulated page. The page files must not land inside a real
    agent's ``watcher.roots``, and the workers' ``sources`` policy must read each site's pages
    under ``<sources-root>/<site_id>`` (else every page would fail QC as unreadable)."""
    db = _db_name(settings.postgres.url)
    if not SIM_WORD.search(db):
        raise NotSimulationStack(
            f"--through-spine: cơ sở dữ liệu postgres.dsn ({db!r}) không mang chữ 'sim' trong "
            "tên: trang mô phỏng sẽ lẫn vào số liệu thật. Dùng một cơ sở dữ liệu riêng, ví dụ "
            "'sohoa_sim'. (the database must be named as a simulation's)")
    topic = settings.topics.site_events
    if not SIM_WORD.search(topic):
        raise NotSimulationStack(
            f"--through-spine: topics.site_events ({topic!r}) không mang chữ 'sim' trong tên: "
            "các worker thật có thể đọc trang mô phỏng. Ví dụ 'sohoa.sim.site-events'. "
            "(the site-events topic must be named as a simulation's)")
    target = Path(os.path.abspath(sources_root))
    for root in settings.watcher.roots:
        r = Path(os.path.abspath(root))
        if target == r or r in target.parents or target in r.parents:
            raise NotSimulationStack(
                f"--sources-root {sources_root} chồng lên thư mục quét thật {root} "
                "(watcher.roots). (the simulated pages would be counted as a real site's)")
    from streams.sources import PageSources, SourceError

    policy = PageSources.from_settings(settings)
    for site in site_ids:
        probe = (target / site / "f" / "probe.jpg").as_uri()
        try:
            base, _ = policy.locate(site, probe)
        except SourceError:
            base = None
        if base is None or Path(base) != Path(os.path.realpath(target / site)):
            raise NotSimulationStack(
                f"--through-spine: các worker không đọc trang của {site} dưới "
                f"{target / site}. Đặt sources.default_roots = [\"{target}/{{site_id}}\"] "
                "(SOHOA_SOURCES__DEFAULT_ROOTS) cho cả cụm. "
                "(the workers' sources policy must read each site under --sources-root)")


# --- the simulator's own count --------------------------------------------------------------


@dataclass
class SiteLedger:
    pages: int = 0
    pages_by_day: Counter[str] = field(default_factory=Counter)
    failed_pages: int = 0          # below the dpi floor in closed files: QC must fail them
    files_closed: int = 0
    pages_in_closed_files: int = 0  # the others wait for their file to close: not yet checked
    files_clean: int = 0           # closed with no failed page: the verdict must be accepted
    pages_in_clean_files: int = 0
    heartbeats: int = 0
    last_heartbeat_at: str | None = None


@dataclass
class Ledger:
    """What the simulator sent, per site: the count the centre must end with."""

    sites: dict[str, SiteLedger] = field(default_factory=dict)
    events: Counter[str] = field(default_factory=Counter)
    bytes_written: int = 0
    malformed: int = 0
    # The plan the run imported (site -> target_pages, deadline): what reports and the
    # schedule alerts measure the counts against; empty when no plan was imported.
    plan: dict[str, dict[str, Any]] = field(default_factory=dict)
    sent_on: str | None = None  # the local day the send began (verdicts are dated from it)
    malformed_at: float | None = None  # epoch seconds the last malformed event went out

    def site(self, site_id: str) -> SiteLedger:
        s = self.sites.get(site_id)
        if s is None:
            s = self.sites[site_id] = SiteLedger()
        return s

    def to_json(self) -> dict[str, Any]:
        return {"events": dict(self.events), "bytes_written": self.bytes_written,
                "malformed": self.malformed, "plan": self.plan, "sent_on": self.sent_on,
                "malformed_at": self.malformed_at,
                "sites": {k: {**vars(v), "pages_by_day": dict(v.pages_by_day)}
                          for k, v in self.sites.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Ledger:
        out = cls(events=Counter(data.get("events", {})),
                  bytes_written=data.get("bytes_written", 0),
                  malformed=data.get("malformed", 0), plan=data.get("plan", {}),
                  sent_on=data.get("sent_on"), malformed_at=data.get("malformed_at"))
        for k, v in data["sites"].items():
            out.sites[k] = SiteLedger(**{**v, "pages_by_day": Counter(v["pages_by_day"])})
        return out


# --- pages ------------------------------------------------------------------------------------


def unique_jpeg(base: bytes, tag: str) -> bytes:
    """``base`` with a JPEG comment (COM) naming the page, after its JFIF header: the pixels
    are the base's, the bytes (hence the SHA-256 the centre verifies) are the page's own."""
    assert base[:4] == b"\xff\xd8\xff\xe0", "a JFIF JPEG"
    at = 4 + int.from_bytes(base[4:6], "big")
    text = tag.encode()[:60000]
    return base[:at] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + base[at:]


class PageFactory:
    """Page images: a few renderings per resolution, each page made unique cheaply."""

    def __init__(self, px: tuple[int, int]) -> None:
        self.px = px
        self._base: dict[tuple[int, int], bytes] = {}

    def page(self, site_id: str, file_code: str, number: int, dpi: int) -> bytes:
        from producers.simulate import render_page

        k = (dpi, number % BASE_PAGES)
        base = self._base.get(k)
        if base is None:
            base = self._base[k] = render_page("sohoa-sim", "base", k[1] + 1, self.px, dpi)
        return unique_jpeg(base, f"sohoa-sim {site_id} {file_code} {number}")


# --- the sink ----------------------------------------------------------------------------------


class SpineSink:
    """Sends what the simulated sites' agents would send to ``topics.site_events``, after
    writing each page under ``root``; keeps the :class:`Ledger`."""

    def __init__(self, settings: Settings, root: Path, fail_share: dict[str, float],
                 seed: int) -> None:
        from sohoa.identity import Signer
        from sohoa.kafka_clients import make_producer
        from sohoa.work_calendar import WorkCalendar

        self.root = Path(os.path.abspath(root))
        self.topic = settings.topics.site_events
        self.tz = WorkCalendar.from_campaign(settings.campaign).tz
        self.fail_share = fail_share
        self.seed = seed
        self.pages = PageFactory(settings.simulate.image_px)
        self.ledger = Ledger()
        self.min_dpi = settings.qc.min_dpi
        # The agent signs with its site's secret; a centre that holds secrets refuses the rest.
        self.signers = {site: Signer(site, secret.get_secret_value())
                        for site, secret in settings.identity.sites.items()}
        self.producer = make_producer(settings.kafka, client_id=f"{settings.kafka.client_id}-sim",
                                      linger_ms=20, batch_size=256 * 1024)
        self.errors: list[str] = []
        self._rng: dict[str, random.Random] = {}
        self._open: dict[tuple[str, str, str], list[bool]] = {}  # file -> failed, per page

    def _site_rng(self, site: str) -> random.Random:
        rng = self._rng.get(site)
        if rng is None:
            rng = self._rng[site] = random.Random(f"spine:{self.seed}:{site}")
        return rng

    def _send(self, site: str, key: str, value: bytes, name: str) -> None:
        signer = self.signers.get(site)
        headers = None if signer is None else signer.headers(self.topic, key, value)
        fut = self.producer.send(self.topic, key=key, value=value, headers=headers)
        fut.add_errback(lambda exc: self.errors.append(f"{type(exc).__name__}: {exc}"))
        self.ledger.events[name] += 1

    def send(self, ev: Event) -> None:
        if isinstance(ev, PageScanned):
            self._page(ev)
        elif isinstance(ev, FileClosed):
            self._close(ev)
        elif isinstance(ev, SiteHeartbeat):
            self._heartbeat(ev)

    def _page(self, ev: PageScanned) -> None:
        site, fonds, code = ev.site_id, ev.fonds, ev.file_code
        number = ev.number or 1
        low = self._site_rng(site).random() < self.fail_share.get(site, 0.0)
        data = self.pages.page(site, code, number, self.min_dpi - 50 if low else self.min_dpi)
        rel = f"{fonds}/{code}/{ev.document}"
        path = self.root / site / rel
        if path.exists():
            raise click.ClickException(f"{path} đã có: --sources-root phải là thư mục mới "
                                       "(never write over a page)")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.part")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        self.ledger.bytes_written += len(data)
        # What the agent does with a settled document: its facts, then its events.
        facts = inspect_document(io.BytesIO(data), len(data))
        name = PageName(fonds=fonds, file_code=code, document=ev.document, number=ev.number,
                        file_dir=f"{fonds}/{code}")
        changes = document_changes(site, DocumentRead(
            name=name, document=ev.document, path=rel, uri=path.as_uri(), sha256=facts.sha256,
            size=len(data), media_type=facts.media_type, page_sha256=facts.page_sha256),
            {}, None, now=ev.occurred_at)
        for out in changes.events:
            self._send(site, out.key(), out.to_json(), out.NAME)
        led = self.ledger.site(site)
        led.pages += len(changes.pages)
        led.pages_by_day[ev.occurred_at.astimezone(self.tz).date().isoformat()] += \
            len(changes.pages)
        self._open.setdefault((site, fonds, code), []).append(low)

    def _close(self, ev: FileClosed) -> None:
        site, fonds, code = ev.site_id, ev.fonds, ev.file_code
        pages = self._open.pop((site, fonds, code), [])
        seen = len(pages)
        # The operator's hoso.json, read by the agent's manifest code, then the closing marker.
        raw = json.dumps({"title": f"Hồ sơ {code} (mô phỏng)", "expected_pages": seen},
                         ensure_ascii=False).encode()
        man = manifest_event(raw, site, fonds, code).model_copy(
            update={"occurred_at": ev.occurred_at})
        self._send(site, man.key(), man.to_json(), man.NAME)
        closed = file_closed(site, fonds, code, "marker", seen, seen, ev.occurred_at)
        self._send(site, closed.key(), closed.to_json(), closed.NAME)
        led = self.ledger.site(site)
        led.files_closed += 1
        led.pages_in_closed_files += seen
        led.failed_pages += sum(pages)
        if not any(pages):
            led.files_clean += 1
            led.pages_in_clean_files += seen

    def _heartbeat(self, ev: SiteHeartbeat) -> None:
        site = ev.site_id
        hb = heartbeat(site, AGENT_VERSION, ev.outbox_depth, ev.oldest_unsent_age_s,
                       ev.disk_free_bytes, [str(self.root / site)], occurred_at=ev.occurred_at)
        self._send(site, hb.key(), hb.to_json(), hb.NAME)
        led = self.ledger.site(site)
        led.heartbeats += 1
        at = ev.occurred_at.isoformat()
        if led.last_heartbeat_at is None or at > led.last_heartbeat_at:
            led.last_heartbeat_at = at

    def send_raw(self, topic: str, key: str, value: bytes) -> None:
        fut = self.producer.send(self.topic, key=key, value=value)
        fut.add_errback(lambda exc: self.errors.append(f"{type(exc).__name__}: {exc}"))
        self.ledger.malformed += 1
        self.ledger.malformed_at = _time.time()

    def close(self) -> None:
        self.producer.flush(timeout=300)
        self.producer.close(timeout=30)
        if self.errors:
            raise click.ClickException(
                f"Kafka từ chối {len(self.errors)} sự kiện (rejected): {self.errors[0]}")


def send_paced(sink: SpineSink, events: list[tuple[datetime, Event]], speed: float | None,
               progress: Any) -> float:
    """Send in simulated-time order; with ``speed``, simulated second s after the first event
    goes out at real second s/speed (nights and weekends pass quickly, as they are quiet).
    Returns the wall time taken."""
    t0 = _time.monotonic()
    first = events[0][0] if events else None
    for i, (t, ev) in enumerate(events, 1):
        if speed and first is not None:
            delay = t0 + (t - first).total_seconds() / speed - _time.monotonic()
            if delay > 0:
                _time.sleep(delay)
        sink.send(ev)
        if i % 500 == 0:
            progress(500)
    progress(len(events) % 500)
    return _time.monotonic() - t0


def run_through_spine(settings: Settings, *, sites: int, days: int, pages_per_day: float,
                      speed: float | None, live_s: float, scenario: str, seed: int,
                      hot_folder: Path | None, plan_out: Path | None, do_import: bool,
                      results: bool | None, sources_root: Path | None, drain_timeout: float,
                      as_json: bool, prometheus: str | None = None) -> None:
    """The ``--through-spine`` run: check the stack, send, wait for the centre, compare."""
    import sys

    from producers.simulate import build_campaign, import_plan, malformed_event, merged, write_plan

    if sources_root is None:
        raise click.UsageError("--through-spine cần --sources-root (nơi ghi ảnh trang).")
    if prometheus and urlsplit(prometheus).hostname not in ("127.0.0.1", "localhost", "::1"):
        raise click.UsageError(f"--prometheus {prometheus}: chỉ dùng Prometheus trên máy này "
                               "(127.0.0.1). (loopback only)")
    if hot_folder is not None or results or live_s:
        raise click.UsageError("--through-spine không dùng với --hot-folder, --results, --live: "
                               "hệ thống thật tạo kết quả (the real spine makes the results).")
    camp = build_campaign(settings, sites=sites, days=days, scenario=scenario, seed=seed,
                          pages_per_day=pages_per_day, results=False)
    check_simulation_stack(settings, sources_root, [s.site_id for s in camp.sites])
    if sources_root.exists() and any(sources_root.iterdir()):
        raise click.UsageError(f"--sources-root {sources_root} không trống: dùng thư mục mới.")
    if plan_out is not None:
        write_plan(plan_out, camp.plan_rows())
        if do_import:
            # Into the stack's own (simulation) database: its status then has the plan's targets.
            first_day = camp.start.astimezone(camp.calendar.tz).date()
            click.echo(import_plan(plan_out, first_day, settings.postgres.url), err=True)
    events = merged(camp.runs, until=camp.end)
    sink = SpineSink(settings, sources_root,
                     {s.site_id: s.qc_fail_share for s in camp.sites}, seed)
    if plan_out is not None and do_import:
        sink.ledger.plan = {r["site_id"]: {"target_pages": r["target_pages"],
                                           "deadline": r["deadline"]} for r in camp.plan_rows()}
    baseline_seen = None
    if prometheus:
        from producers.simulate_alerts import check_rules_loaded, wait_for_baseline

        check_rules_loaded(prometheus)
        if sink.ledger.plan:
            # The QC rate is a 6 h delta: it counts from the zero Prometheus saw first.
            baseline_seen = wait_for_baseline(prometheus, list(sink.ledger.plan),
                                              min(drain_timeout, 120.0))
    sink.ledger.sent_on = camp.calendar.local_today(datetime.now(UTC)).isoformat()
    from rich.progress import Progress

    t0 = _time.monotonic()
    try:
        with Progress(transient=True, disable=not sys.stderr.isatty()) as bar:
            task = bar.add_task("Gửi như các điểm", total=len(events))
            send_paced(sink, events, speed, lambda n: bar.advance(task, n))
            if scenario in ("boards", "demo"):
                bad = camp.sites[0].site_id
                sink.send_raw(sink.topic, bad, malformed_event(bad))
    finally:
        sink.close()
    sent_s = _time.monotonic() - t0
    summary: dict[str, Any] = {
        **camp.summary(), "through_spine": True, "send_s": round(sent_s, 1),
        "ledger": sink.ledger.to_json()}
    code = 0
    if drain_timeout > 0:
        from producers.simulate_check import wait_until_equal
        from producers.simulate_reports import compare_reports

        c = wait_until_equal(settings, sink.ledger, settings.postgres.url, drain_timeout)
        drained_at = _time.time()
        diffs = c.differences + compare_reports(settings, sink.ledger, settings.postgres.url)
        summary["check"] = {"waited_s": round(c.waited_s, 1), "dead_letters": c.dead_letters}
        if prometheus:
            from producers.simulate_alerts import wait_until_alerts_equal

            a = wait_until_alerts_equal(settings, sink.ledger, prometheus, after=drained_at,
                                        timeout_s=min(drain_timeout, 120.0))
            summary["check"]["alerts"] = {**a.to_json(), "baseline_seen": baseline_seen}
            diffs += a.differences
        summary["check"].update(equal=not diffs, differences=diffs[:200])
        code = 0 if not diffs else 1
    if as_json:
        click.echo(json.dumps(summary, ensure_ascii=False))
    else:
        led = sink.ledger
        pages = sum(s.pages for s in led.sites.values())
        click.echo(f"{len(camp.sites)} điểm, {pages} trang, {sum(led.events.values())} sự kiện "
                   f"gửi trong {sent_s:.1f} s")
        if "check" in summary:
            chk = summary["check"]
            click.echo(("Khớp" if chk["equal"] else "KHÔNG khớp") +
                       f" với PostgreSQL sau {chk['waited_s']} s")
            if "alerts" in chk:
                fired = {k: len(v) for k, v in chk["alerts"]["observed"].items()}
                click.echo(f"Cảnh báo (alerts) {fired}: "
                           + ("khớp" if chk["alerts"]["equal"] else "KHÔNG khớp"))
            for d in chk["differences"][:30]:
                click.echo(f"  {d}")
    if code:
        raise SystemExit(code)
