"""`sohoa simulate`: a synthetic digitization campaign that drives a pipeline of its own.

N sites scan pages inside their working hours (the campaign calendar: weekdays, working hours,
lunch break, Vietnamese public holidays) at different speeds. Events (PageScanned with
``occurred_at`` in simulated time, FileClosed, SiteHeartbeat with the outbox depth, and —
standing in for the central pipeline — FileAssembled, PageChecked, OcrCompleted and
FileVerdict) go to the simulation's own topics (``simulate.topics``) and the plan to its own
database (``simulate.postgres_dsn``): the command refuses to run when either is the real one,
so simulated pages never reach the real workers nor mix with real counts. With
``--hot-folder``, real small images and closing markers are written instead, for a site agent
to pick up (never inside a real agent's root).

The ``boards``/``demo`` scenarios give the monitoring something to show: one stalled site, one
agent that cannot deliver (outbox growing), one site behind its deadline, one with a high QC
failure rate, one finished site, and one malformed event from "a vendor's software".
Everything is deterministic for a given ``--seed``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import random
import subprocess
import sys
import time as _time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import click

from sohoa.config import Settings, SimulateConfig, TopicsConfig
from sohoa.events import (
    CheckResult,
    Event,
    FileAssembled,
    FileClosed,
    FileVerdict,
    OcrCompleted,
    PageChecked,
    PageRef,
    PageScanned,
    PageText,
    RescanReason,
    SiteHeartbeat,
    Verdict,
    stable_event_id,
)
from sohoa.work_calendar import WorkCalendar

log = logging.getLogger(__name__)

AGENT_VERSION = "sohoa-simulate"
MAX_SITES = 500          # the boards' demo traffic, all of it held and sent by this process
SPINE_MAX_SITES = 5000   # --through-spine: the 3,321 communes of a national campaign fit
SITE_EVENT_TYPES = {"PageScanned", "PageRemoved", "FileManifest", "FileClosed", "SiteHeartbeat"}
ROLES = ("stalled", "offline", "late", "qc", "finished")
ROLE_LABELS = {
    "normal": "bình thường", "stalled": "ngừng quét", "offline": "mất mạng (hàng đợi tăng)",
    "late": "chậm so với hạn", "qc": "tỷ lệ lỗi QC cao", "finished": "đã xong",
}
_COMMUNES = (
    "tan-phu", "an-binh", "phu-my", "hoa-loi", "long-hung", "tan-hiep", "binh-an", "my-thanh",
    "vinh-loc", "thanh-son", "dong-hoa", "phuoc-long", "nghia-trung", "quang-tien", "hai-ninh",
    "ea-kar", "cam-thuy", "yen-bai", "son-tay", "hung-dao",
)
_UNITS = ("huyen-an-phu", "huyen-tan-chau", "thi-xa-binh-long", "so-noi-vu")
_CONTRACTORS = ("cty-so-hoa-viet", "cty-luu-tru-sao-mai", "")
_FAILS = (  # (check, value, threshold) as the real page QC reports them
    ("dpi", 150.0, 200), ("blank", 0.0, 1), ("skew_deg", 5.2, 3.0),
    ("sharpness", 0.45, 0.8), ("colour", "L", "colour"),
)
_PASS = (("decode", "JPEG", None), ("dpi", 200.0, 200), ("colour", "RGB", "colour"),
         ("blank", 14.0, 1), ("skew_deg", 0.4, 3.0), ("sharpness", 1.6, 0.8))


# --- the campaign -------------------------------------------------------------------------


@dataclass
class SiteSpec:
    site_id: str
    unit: str
    contractor: str
    role: str
    pages_per_day: float
    qc_fail_share: float
    fonds: str


@dataclass
class SiteRun:
    """What one site did over the simulated interval."""

    spec: SiteSpec
    events: list[tuple[datetime, Event]] = field(default_factory=list)
    pages_sent: int = 0
    pages_unsent: int = 0
    files_closed: int = 0
    qc_failed_pages: int = 0
    target_pages: int = 0
    target_files: int = 0
    last_page_at: datetime | None = None


def plan_sites(n: int, scenario: str, seed: int, pages_per_day: float,
               cfg: SimulateConfig) -> list[SiteSpec]:
    rng = random.Random(f"plan:{seed}")
    roles = list(ROLES) if scenario in ("boards", "demo") else []
    sites = []
    for i in range(n):
        # Special roles go to the last sites so the first ones are ordinary.
        k = i - (n - len(roles))
        role = roles[k] if k >= 0 else "normal"
        name = _COMMUNES[i % len(_COMMUNES)] + (f"-{i // len(_COMMUNES) + 1}"
                                                if i >= len(_COMMUNES) else "")
        speed = pages_per_day * rng.uniform(0.6, 1.4)
        if role == "late":
            speed = pages_per_day * 0.5
        sites.append(SiteSpec(
            site_id=f"xa-{name}", unit=_UNITS[i % len(_UNITS)],
            contractor=_CONTRACTORS[i % len(_CONTRACTORS)], role=role, pages_per_day=speed,
            qc_fail_share=cfg.qc_fail_share_high if role == "qc" else cfg.qc_fail_share,
            fonds=f"phong-ubnd-{name}"))
    return sites


class SiteSimulator:
    """Turns one site's working time into events, deterministically."""

    def __init__(self, spec: SiteSpec, cal: WorkCalendar, cfg: SimulateConfig, seed: int,
                 *, results: bool, now: datetime, end: datetime) -> None:
        """``now`` ends the history (roles are relative to it); ``end`` ends the live part."""
        self.spec, self.cal, self.cfg, self.results, self.end = spec, cal, cfg, results, end
        self.now = now
        self.rng = random.Random(f"site:{seed}:{spec.site_id}")
        self.run = SiteRun(spec)
        self.file_no = 0
        self.page_no = 0
        self.file_pages = 0
        self.open_refs: list[PageRef] = []
        self.unsent_since: datetime | None = None
        # Role windows (wall time): when scanning stops, when the outbox stops draining.
        self.stop_at = {
            "stalled": now - timedelta(hours=cfg.stall_hours),
            "finished": now - timedelta(days=2),
        }.get(spec.role)
        self.outage_at = now - timedelta(hours=cfg.outage_hours) if spec.role == "offline" \
            else None

    def _emit(self, at: datetime, ev: Event) -> None:
        self.run.events.append((at, ev))

    def simulate(self, start: datetime, end: datetime) -> SiteRun:
        gap = self.cal.working_seconds_per_day() / max(self.spec.pages_per_day, 1e-9)
        hb_every = timedelta(seconds=self.cfg.heartbeat_interval_s)
        next_hb = start
        beat_now = self.now < end  # the agent reports as the history ends, whatever the hour
        # Working seconds until the next page, carried over nights and breaks: a site slower
        # than a page per working interval still scans at its pace.
        owed = gap * self.rng.uniform(0.2, 1.0)
        for s, e in self.cal.intervals(start, end):
            t = s + timedelta(seconds=owed)
            while t < e:
                if beat_now and t >= self.now:
                    self._heartbeat(self.now)
                    beat_now = False
                if next_hb <= t:
                    self._heartbeat(t)
                    next_hb = t + hb_every
                if self.stop_at is None or t < self.stop_at:
                    self._page(t)
                t += timedelta(seconds=gap * self.rng.uniform(0.5, 1.5))
            owed = (t - e).total_seconds()
        if beat_now:
            self._heartbeat(self.now)
        self._heartbeat(end)
        self.run.events.sort(key=lambda x: x[0])
        return self.run

    def _page(self, t: datetime) -> None:
        spec = self.spec
        if self.page_no == 0:
            self.file_no += 1
            self.file_pages = self.rng.randint(self.cfg.file_pages_min,
                                               max(self.cfg.file_pages_min,
                                                   self.cfg.file_pages_max))
            self.open_refs = []
        self.page_no += 1
        code = self.file_code()
        sha = hashlib.sha256(f"{spec.site_id}/{code}/{self.page_no}/1".encode()).hexdigest()
        uri = f"file:///sim/{spec.site_id}/{spec.fonds}/{code}/{self.page_no:04d}.jpg"
        document = f"{self.page_no:04d}.jpg"
        ev = PageScanned.make(
            site_id=spec.site_id, fonds=spec.fonds, file_code=code, document=document,
            number=self.page_no, uri=uri, sha256=sha,
            size_bytes=self.rng.randint(250_000, 900_000), media_type="image/jpeg",
            occurred_at=t, path=f"{spec.fonds}/{code}/{document}")
        self.open_refs.append(PageRef(document=document, number=self.page_no, uri=uri,
                                      document_sha256=sha, sha256=sha,
                                      media_type="image/jpeg"))
        self.run.last_page_at = t
        if self.outage_at is not None and t >= self.outage_at:
            # The agent has it in its outbox; it never reaches Kafka during the outage.
            self.run.pages_unsent += 1
            self.unsent_since = self.unsent_since or t
        else:
            self._emit(t, ev)
            self.run.pages_sent += 1
        if self.page_no >= self.file_pages:
            self._close(t)

    def file_code(self) -> str:
        return f"HS{self.file_no:05d}"

    def _close(self, t: datetime) -> None:
        spec, code, refs = self.spec, self.file_code(), list(self.open_refs)
        n = len(refs)
        self.page_no = 0
        if self.outage_at is not None and t >= self.outage_at:
            return  # the close marker is queued with the pages
        at = t + timedelta(seconds=20)
        self._emit(at, FileClosed(site_id=spec.site_id, fonds=spec.fonds, file_code=code,
                                  reason="marker", expected_pages=n, pages_seen=n,
                                  occurred_at=at,
                                  event_id=stable_event_id("FileClosed", spec.site_id, spec.fonds,
                                                           code)))
        self.run.files_closed += 1
        if self.results:
            self._results(at, code, refs)

    def _results(self, closed: datetime, code: str, refs: list[PageRef]) -> None:
        """What the central pipeline would emit: assembly, page checks, OCR, verdict."""
        spec, rng = self.spec, self.rng
        ids = (spec.site_id, spec.fonds, code)
        t = closed + timedelta(seconds=30)
        if t > self.end:
            return
        base = {"site_id": spec.site_id, "fonds": spec.fonds, "file_code": code}
        self._emit(t, FileAssembled(**base, revision=1, trigger="marker", pages=refs,
                                    expected_pages=len(refs), occurred_at=t,
                                    event_id=stable_event_id("FileAssembled", *ids, 1)))
        failed: list[tuple[PageRef, tuple[str, Any, Any]]] = []
        t = closed + timedelta(seconds=60)
        if t > self.end:
            return
        for ref in refs:
            bad = _FAILS[rng.randrange(len(_FAILS))] if rng.random() < spec.qc_fail_share \
                else None
            checks = [CheckResult(check=c, value=v, threshold=th, passed=True)
                      for c, v, th in _PASS if bad is None or c != bad[0]]
            if bad is not None:
                checks.append(CheckResult(check=bad[0], value=bad[1], threshold=bad[2],
                                          passed=False))
                failed.append((ref, bad))
            self._emit(t, PageChecked(**base, document=ref.document, sha256=ref.sha256,
                                      checks=checks, passed=bad is None, occurred_at=t,
                                      width_mm=210.0, height_mm=297.0,
                                      event_id=stable_event_id("PageChecked", *ids,
                                                               ref.document, 1)))
        self.run.qc_failed_pages += len(failed)
        t = closed + timedelta(seconds=self.cfg.ocr_lag_s)
        if t > self.end:
            return  # still waiting for OCR: the backlog the boards show
        if not failed:
            out_sha = hashlib.sha256(f"ocr/{spec.site_id}/{code}".encode()).hexdigest()
            self._emit(t - timedelta(seconds=10), OcrCompleted(
                **base, revision=1, output_uri=f"file:///sim/ocr/{spec.site_id}/{code}.pdf",
                output_sha256=out_sha, seconds=rng.uniform(20, 200),
                pages=[PageText(document=r.document, chars=rng.randint(800, 2500),
                                mean_confidence=rng.uniform(75, 95)) for r in refs],
                occurred_at=t - timedelta(seconds=10),
                event_id=stable_event_id("OcrCompleted", *ids, 1)))
        share = len(failed) / max(1, len(refs))
        verdict = (Verdict.ACCEPTED if not failed else
                   Verdict.REJECTED if share > 0.5 else Verdict.NEEDS_RESCAN)
        position = {r.document: i for i, r in enumerate(refs, start=1)}
        reasons = [RescanReason(document=r.document, page_index=1,
                                position=position[r.document],
                                reason=f"{c}: {v} (required {th})")
                   for r, (c, v, th) in failed]
        self._emit(t, FileVerdict(**base, revision=1, verdict=verdict, reasons=reasons,
                                  pages_total=len(refs), pages_accepted=len(refs) - len(failed),
                                  occurred_at=t,
                                  event_id=stable_event_id("FileVerdict", *ids, 1)))

    def _heartbeat(self, t: datetime) -> None:
        spec = self.spec
        if self.unsent_since is not None and t >= self.unsent_since:
            depth = self.run.pages_unsent
            age = (t - self.unsent_since).total_seconds()
        else:
            depth, age = self.rng.randint(0, 3), self.rng.uniform(0, 20)
        self._emit(t, SiteHeartbeat(
            site_id=spec.site_id, agent_version=AGENT_VERSION, outbox_depth=depth,
            oldest_unsent_age_s=round(age, 1), disk_free_bytes=200 * 1024**3,
            roots=[f"D:/SCAN/{spec.site_id}"], occurred_at=t,
            event_id=stable_event_id("SiteHeartbeat", spec.site_id, t.isoformat())))


@dataclass
class Campaign:
    sites: list[SiteSpec]
    runs: list[SiteRun]
    start: datetime
    end: datetime
    deadline: date
    calendar: WorkCalendar

    def plan_rows(self) -> list[dict[str, Any]]:
        rows = []
        for r in self.runs:
            rows.append({"site_id": r.spec.site_id, "unit": r.spec.unit,
                         "contractor": r.spec.contractor, "target_pages": r.target_pages,
                         "target_files": r.target_files,
                         "deadline": self.deadline.isoformat()})
        return rows

    def summary(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(), "end": self.end.isoformat(),
            "deadline": self.deadline.isoformat(),
            "sites": [{"site_id": r.spec.site_id, "role": r.spec.role, "unit": r.spec.unit,
                       "pages_sent": r.pages_sent, "pages_unsent": r.pages_unsent,
                       "files_closed": r.files_closed, "qc_failed_pages": r.qc_failed_pages,
                       "target_pages": r.target_pages, "events": len(r.events),
                       "last_page_at": r.last_page_at.isoformat() if r.last_page_at else None}
                      for r in self.runs],
        }


def build_campaign(settings: Settings, *, sites: int, days: int, scenario: str, seed: int,
                   pages_per_day: float, results: bool, end: datetime | None = None,
                   live_s: float = 0.0, speed: float = 1.0) -> Campaign:
    """Simulate ``days`` working days of history up to ``end`` (now), plus the live part."""
    cfg = settings.simulate
    cal = WorkCalendar.from_campaign(settings.campaign)
    end = (end or datetime.now(UTC)).astimezone(UTC)
    today = end.astimezone(cal.tz).date()
    # A day counts once its working hours have begun: run before the office opens (or on a
    # day off), `--days 1` means the last working day, not an empty morning.
    begun = any(s < end for s, _ in cal.day_intervals(today))
    last = today if begun else today - timedelta(days=1)
    first = cal.working_days_back(last, days) if days > 0 else today
    start = datetime.combine(first, time(0), cal.tz).astimezone(UTC) if days > 0 else end
    deadline = today + timedelta(days=cfg.deadline_days)
    live_end = end + timedelta(seconds=live_s * speed)
    specs = plan_sites(sites, scenario, seed, pages_per_day, cfg)
    remaining_days = max(1, cal.working_days_between(today + timedelta(days=1), deadline))
    runs = []
    for spec in specs:
        sim = SiteSimulator(spec, cal, cfg, seed, results=results, now=end, end=live_end)
        run = sim.simulate(start, live_end)
        done = run.pages_sent + run.pages_unsent
        # The plan: ordinary sites can make it at well under their pace; the late site would
        # need three times its pace; the finished site planned exactly what it scanned.
        factor = {"late": 3.0, "finished": 0.0}.get(spec.role, 0.4)
        run.target_pages = done + round(spec.pages_per_day * remaining_days * factor)
        mean_file = (cfg.file_pages_min + max(cfg.file_pages_min, cfg.file_pages_max)) / 2
        run.target_files = max(1, round(run.target_pages / mean_file))
        runs.append(run)
    return Campaign(specs, runs, start, end, deadline, cal)


# --- sinks --------------------------------------------------------------------------------


class NotIsolated(click.ClickException):
    """The simulation would write where real work is read or counted."""


def _db_identity(dsn: str) -> tuple[str, str, str]:
    """(host, port, database) of a URL or key=value DSN, for comparing two DSNs."""
    import re
    from urllib.parse import urlsplit

    if "://" in dsn:
        u = urlsplit(dsn)
        return (u.hostname or "localhost", str(u.port or 5432), u.path.lstrip("/"))
    kv = dict(re.findall(r"(\w+)\s*=\s*('[^']*'|\S+)", dsn))
    kv = {k: v.strip("'") for k, v in kv.items()}
    return (kv.get("host", "localhost"), kv.get("port", "5432"), kv.get("dbname", ""))


def check_isolated(settings: Settings, hot_folder: Path | None, do_import: bool) -> None:
    """Refuse to run where the simulation could reach the real workers or real counts: its
    topics must not be the real ones (``topics.*``, nor the default names), its plan database
    not ``postgres.dsn``, its hot folder not inside a real agent's root."""
    if hot_folder is not None:
        target = Path(os.path.abspath(hot_folder))
        for root in settings.watcher.roots:
            r = Path(os.path.abspath(root))
            if target == r or r in target.parents:
                raise NotIsolated(
                    f"--hot-folder {hot_folder} nằm trong thư mục quét thật {root} "
                    "(watcher.roots): trang mô phỏng sẽ bị tính như trang thật. "
                    "(the simulated pages would be counted as real work)")
        return
    real = {*settings.topics.model_dump(exclude={"spec"}).values(),
            *TopicsConfig().model_dump(exclude={"spec"}).values()}
    clash = sorted(real & set(settings.simulate.topics.model_dump(exclude={"spec"}).values()))
    if clash:
        raise NotIsolated(
            f"simulate.topics trùng topic thật {clash}: các worker thật sẽ xử lý sự kiện mô "
            "phỏng. Đặt simulate.topics khác (mặc định sohoa.sim.*). "
            "(simulated events must stay off the topics the real workers read)")
    sim_dsn = settings.simulate.postgres_dsn
    if do_import and sim_dsn is not None and _db_identity(sim_dsn.get_secret_value()) == \
            _db_identity(settings.postgres.url):
        raise NotIsolated(
            "simulate.postgres_dsn là cơ sở dữ liệu thật (postgres.dsn): kế hoạch mô phỏng sẽ "
            "lẫn vào số liệu thật. (the simulated plan must go to its own database)")


class KafkaSink:
    """Sends events to the simulation's own topics with the kernel's idempotent producer."""

    def __init__(self, settings: Settings) -> None:
        from sohoa.kafka_clients import make_producer

        self.topics: TopicsConfig = settings.simulate.topics
        self.producer = make_producer(settings.kafka, client_id=f"{settings.kafka.client_id}-sim")
        self.errors: list[str] = []
        self.sent = 0

    def topic_for(self, ev: Event) -> str:
        return self.topics.site_events if ev.NAME in SITE_EVENT_TYPES else self.topics.file_events

    def send(self, ev: Event) -> None:
        fut = self.producer.send(self.topic_for(ev), key=ev.key(), value=ev.to_json())
        fut.add_errback(lambda exc: self.errors.append(f"{type(exc).__name__}: {exc}"))
        self.sent += 1

    def send_raw(self, topic: str, key: str, value: bytes) -> None:
        fut = self.producer.send(topic, key=key, value=value)
        fut.add_errback(lambda exc: self.errors.append(f"{type(exc).__name__}: {exc}"))

    def close(self) -> None:
        self.producer.flush(timeout=120)
        self.producer.close(timeout=30)
        if self.errors:
            raise click.ClickException(
                f"Kafka từ chối {len(self.errors)} sự kiện (rejected): {self.errors[0]}")


class HotFolderSink:
    """Writes real small page images (and closing markers) for the real site agent.

    Layout: ``<root>/<site_id>/<fonds>/<file>/<page>.jpg`` — run one `sohoa watch` per site
    with ``watcher.roots = [<root>/<site_id>]``. Pages of the high-QC site that "fail" are
    written at 150 dpi, so the real page QC fails them.
    """

    def __init__(self, root: Path, settings: Settings) -> None:
        self.root = root
        self.marker = settings.watcher.close_marker
        self.px = settings.simulate.image_px
        # site_id -> share of pages written below the dpi floor
        self.fail_share: dict[str, float] = {}
        self.rng = random.Random("hot-folder")
        self.written = 0

    def send(self, ev: Event) -> None:
        if isinstance(ev, PageScanned):
            self._page(ev)
        elif isinstance(ev, FileClosed):
            d = self.root / ev.site_id / ev.fonds / ev.file_code
            d.mkdir(parents=True, exist_ok=True)
            (d / self.marker).touch()

    def _page(self, ev: PageScanned) -> None:
        d = self.root / ev.site_id / ev.fonds / ev.file_code
        d.mkdir(parents=True, exist_ok=True)
        final = d / ev.document
        if final.exists():
            return  # never rewrite a scan
        low = self.rng.random() < self.fail_share.get(ev.site_id, 0.0)
        data = render_page(ev.site_id, ev.file_code, ev.number or 0, self.px,
                           150 if low else 200)
        tmp = d / f".{final.name}.part"
        tmp.write_bytes(data)
        os.replace(tmp, final)  # the agent sees a complete file or none
        self.written += 1

    def send_raw(self, topic: str, key: str, value: bytes) -> None:
        pass

    def close(self) -> None:
        pass


def render_page(site_id: str, file_code: str, page_no: int, px: tuple[int, int],
                dpi: int) -> bytes:
    """A page-like colour JPEG: text lines in dark ink on off-white paper, unique per page."""
    import io

    from PIL import Image, ImageDraw

    w, h = px
    img = Image.new("RGB", (w, h), (246, 242, 230))
    draw = ImageDraw.Draw(img)
    rng = random.Random(f"{site_id}/{file_code}/{page_no}")
    draw.text((80, 60), f"{site_id}  {file_code}  trang {page_no}", fill=(20, 20, 60))
    y = 140
    while y < h - 120:
        x = 80
        while x < w - 120:
            word = rng.randint(20, 110)
            draw.rectangle((x, y, min(x + word, w - 80), y + 14), fill=(35, 30, 40))
            x += word + rng.randint(12, 24)
        y += rng.randint(34, 46)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80, dpi=(dpi, dpi))
    return buf.getvalue()


# --- driving ------------------------------------------------------------------------------


def malformed_event(site_id: str) -> bytes:
    """A vendor's PageScanned without uri/sha256: the readers must dead-letter it."""
    return json.dumps({"schema": {"name": "PageScanned", "version": 1},
                       "event_id": stable_event_id("sim-malformed", site_id),
                       "occurred_at": "2026-01-05T02:00:00Z", "site_id": site_id,
                       "file_code": "HS-LOI", "page_no": 1}).encode()


def merged(runs: Iterable[SiteRun], *, after: datetime | None = None,
           until: datetime | None = None) -> list[tuple[datetime, Event]]:
    out = [(t, ev) for r in runs for t, ev in r.events
           if (after is None or t > after) and (until is None or t <= until)]
    out.sort(key=lambda x: x[0])
    return out


def send_history(sink: Any, events: list[tuple[datetime, Event]],
                 progress: Callable[[int], None]) -> None:
    for i, (_t, ev) in enumerate(events, 1):
        sink.send(ev)
        if i % 500 == 0:
            progress(500)
    progress(len(events) % 500)


def send_live(sink: Any, events: list[tuple[datetime, Event]], start: datetime, speed: float,
              progress: Callable[[int], None]) -> None:
    """Paced: simulated second s after ``start`` goes out at real second s/speed, stamped now."""
    t0 = _time.monotonic()
    for t, ev in events:
        due = t0 + (t - start).total_seconds() / speed
        delay = due - _time.monotonic()
        if delay > 0:
            _time.sleep(delay)
        now = datetime.now(UTC)
        data = ev.model_dump(by_alias=True)
        data["occurred_at"] = now
        if isinstance(ev, SiteHeartbeat):
            data["event_id"] = stable_event_id("SiteHeartbeat", ev.site_id, now.isoformat())
        sink.send(type(ev)(**data))
        progress(1)


def write_plan(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["site_id", "unit", "contractor", "target_pages",
                                           "target_files", "deadline"])
        w.writeheader()
        w.writerows(rows)


def import_plan(path: Path, start: date, dsn: str) -> str:
    """Run `sohoa campaign import` (the progress store's command) as its own process, into
    the simulation's database ``dsn``."""
    argv = [sys.executable, "-m", "sohoa.cli", "campaign", "import", str(path),
            "--start", start.isoformat()]
    from sohoa.config import config_file

    env = dict(os.environ)
    env["SOHOA_POSTGRES__DSN"] = dsn
    if config_file() is not None:
        env["SOHOA_CONFIG"] = str(config_file())
    res = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    if res.returncode != 0:
        raise click.ClickException(
            f"Không nhập được kế hoạch (campaign import failed): {res.stderr.strip()[-400:]}")
    return res.stdout.strip()


@click.command("simulate")
@click.option("--sites", type=click.IntRange(1, SPINE_MAX_SITES),
              help=f"Số điểm số hóa (sites); tối đa {MAX_SITES}, hoặc {SPINE_MAX_SITES} với "
              "--through-spine.")
@click.option("--days", type=click.IntRange(0, 400),
              help="Số ngày làm việc đã qua cần mô phỏng (working days of history).")
@click.option("--pages-per-day", type=click.IntRange(1), help="Trang/ngày trung bình mỗi điểm.")
@click.option("--speed", type=click.FloatRange(min=0, min_open=True),
              help="Nén thời gian khi chạy trực tiếp: giây mô phỏng mỗi giây thực. Với "
              "--through-spine: nhịp gửi cả quãng mô phỏng (bỏ trống: gửi nhanh nhất).")
@click.option("--live", "live_s", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Chạy trực tiếp thêm N giây thực sau phần lịch sử (live traffic).")
@click.option("--scenario", type=click.Choice(["demo", "boards", "none"]), default="demo",
              show_default=True, help="demo/boards: thêm điểm ngừng quét, mất mạng, chậm hạn, "
              "lỗi QC cao, đã xong và một sự kiện hỏng; none: chỉ điểm bình thường.")
@click.option("--seed", type=int, help="Hạt giống ngẫu nhiên (deterministic runs).")
@click.option("--hot-folder", type=click.Path(path_type=Path, file_okay=False),
              help="Ghi ảnh trang thật vào thư mục nóng thay vì gửi sự kiện.")
@click.option("--plan-out", type=click.Path(path_type=Path, dir_okay=False),
              help="Ghi kế hoạch chiến dịch CSV rồi nhập bằng `sohoa campaign import`.")
@click.option("--import/--no-import", "do_import", default=True, show_default=True,
              help="Nhập kế hoạch (--plan-out) vào kho tiến độ trước khi gửi sự kiện.")
@click.option("--results/--no-results", default=None,
              help="Mô phỏng cả kết quả xử lý trung tâm (ghép, QC, OCR, kết luận). "
              "Mặc định: có, trừ khi dùng --hot-folder.")
@click.option("--through-spine", is_flag=True,
              help="Chỉ đóng vai các điểm: ghi ảnh trang thật dưới --sources-root và gửi đúng "
              "sự kiện của agent vào topics.site_events; hệ thống thật (ghép, QC, consumer, "
              "PostgreSQL) làm phần còn lại, rồi đối chiếu với số đếm của mô phỏng. Chỉ chạy "
              "khi cơ sở dữ liệu và topic mang chữ 'sim' (through the real spine).")
@click.option("--sources-root", type=click.Path(path_type=Path, file_okay=False),
              help="Thư mục mới để ghi ảnh trang, mỗi điểm <DIR>/<site_id> (đặt "
              "sources.default_roots = [\"<DIR>/{site_id}\"] cho các worker).")
@click.option("--scale", type=click.FloatRange(min=0, min_open=True, max=1), default=1.0,
              show_default=True, help="Thu nhỏ nhịp quét: mỗi điểm quét pages-per-day × scale "
              "trang/ngày, để một tháng chạy trong vài phút (scale down the pace).")
@click.option("--drain-timeout", type=click.FloatRange(min=0), default=600.0, show_default=True,
              help="--through-spine: chờ tối đa N giây để PostgreSQL khớp số đếm của mô phỏng; "
              "0: không đối chiếu.")
@click.option("--prometheus", "prometheus", metavar="URL",
              help="--through-spine: Prometheus (127.0.0.1) đang thu /metrics của consumer với "
              "các luật trong monitoring/prometheus/rules; đối chiếu cả cảnh báo "
              "(check the alerts too).")
@click.option("--json", "as_json", is_flag=True, help="In tóm tắt JSON (summary) ra stdout.")
@click.pass_context
def simulate(ctx: click.Context, sites: int | None, days: int | None,
             pages_per_day: int | None, speed: float | None, live_s: float, scenario: str,
             seed: int | None, hot_folder: Path | None, plan_out: Path | None,
             do_import: bool, results: bool | None, through_spine: bool,
             sources_root: Path | None, scale: float, drain_timeout: float,
             prometheus: str | None, as_json: bool) -> None:
    """Mô phỏng một chiến dịch số hóa (synthetic campaign traffic through the real pipeline).

    \b
    Ví dụ (examples):
      sohoa simulate --sites 8 --days 15 --plan-out plan.csv        lịch sử 15 ngày làm việc
      sohoa simulate --days 2 --live 600 --speed 60                  trình diễn: 1 s = 1 phút
      sohoa simulate --sites 2 --days 0 --live 120 --hot-folder .state/hotfolder
      sohoa simulate --through-spine --sources-root /srv/sim-pages --sites 3321 --days 22 \\
          --pages-per-day 5000 --scale 0.0005 --speed 4000     một tháng toàn quốc, thu nhỏ
    """
    settings: Settings = ctx.obj if isinstance(ctx.obj, Settings) else Settings()
    cfg = settings.simulate
    if through_spine:
        from producers.simulate_spine import run_through_spine

        run_through_spine(settings, sites=sites or cfg.sites, days=cfg.days if days is None
                          else days, pages_per_day=(pages_per_day or cfg.pages_per_day) * scale,
                          speed=speed, live_s=live_s, scenario=scenario,
                          seed=cfg.seed if seed is None else seed, hot_folder=hot_folder,
                          plan_out=plan_out, do_import=do_import, results=results,
                          sources_root=sources_root, drain_timeout=drain_timeout,
                          as_json=as_json, prometheus=prometheus)
        return
    if sources_root is not None or scale != 1.0 or prometheus:
        raise click.UsageError("--sources-root, --scale và --prometheus chỉ dùng với "
                               "--through-spine.")
    if sites is not None and sites > MAX_SITES:
        raise click.UsageError(f"--sites: tối đa {MAX_SITES} điểm, trừ khi --through-spine.")
    want_import = plan_out is not None and do_import and hot_folder is None
    check_isolated(settings, hot_folder, want_import)
    if want_import and cfg.postgres_dsn is None:
        raise click.UsageError(
            "--plan-out nhập kế hoạch vào cơ sở dữ liệu mô phỏng: đặt simulate.postgres_dsn "
            "(SOHOA_SIMULATE__POSTGRES_DSN), hoặc dùng --no-import. "
            "(the simulated plan goes to its own database: set simulate.postgres_dsn)")
    sites = sites or cfg.sites
    days = cfg.days if days is None else days
    speed = speed or cfg.speed
    seed = cfg.seed if seed is None else seed
    results = (hot_folder is None) if results is None else results
    camp = build_campaign(settings, sites=sites, days=days, scenario=scenario, seed=seed,
                          pages_per_day=pages_per_day or cfg.pages_per_day, results=results,
                          live_s=live_s, speed=speed)
    log.info("simulation built", extra={"sites": sites, "days": days, "scenario": scenario,
                                        "seed": seed, "events": sum(len(r.events)
                                                                    for r in camp.runs)})
    if plan_out is not None:
        write_plan(plan_out, camp.plan_rows())
        click.echo(f"đã ghi kế hoạch {plan_out} ({len(camp.runs)} điểm)", err=True)
        if want_import and cfg.postgres_dsn is not None:
            first_day = camp.start.astimezone(camp.calendar.tz).date()
            click.echo(import_plan(plan_out, first_day, cfg.postgres_dsn.get_secret_value()),
                       err=True)

    sink: Any = HotFolderSink(hot_folder, settings) if hot_folder else KafkaSink(settings)
    if isinstance(sink, HotFolderSink):
        sink.fail_share = {s.site_id: s.qc_fail_share for s in camp.sites if s.role == "qc"}
    history = merged(camp.runs, until=camp.end)
    live = merged(camp.runs, after=camp.end)
    from rich.progress import Progress

    try:
        with Progress(transient=True, disable=not sys.stderr.isatty()) as bar:
            task = bar.add_task("Gửi sự kiện lịch sử", total=len(history) + len(live))
            send_history(sink, history, lambda n: bar.advance(task, n))
            if scenario in ("boards", "demo") and hot_folder is None:
                bad_site = camp.sites[0].site_id
                sink.send_raw(cfg.topics.site_events, bad_site, malformed_event(bad_site))
            if live:
                bar.update(task, description="Chạy trực tiếp")
                send_live(sink, live, camp.end, speed, lambda n: bar.advance(task, n))
    except KeyboardInterrupt:
        click.echo("dừng theo yêu cầu (interrupted)", err=True)
    finally:
        sink.close()

    summary = camp.summary()
    if as_json:
        click.echo(json.dumps(summary, ensure_ascii=False))
        return
    _print_table(summary)


def _print_table(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"Mô phỏng chiến dịch — hạn {summary['deadline']}")
    for col in ("Điểm", "Tình huống", "Trang đã gửi", "Trang chờ gửi", "Kế hoạch", "Lỗi QC"):
        t.add_column(col)
    for s in summary["sites"]:
        t.add_row(s["site_id"], ROLE_LABELS[s["role"]], str(s["pages_sent"]),
                  str(s["pages_unsent"]), str(s["target_pages"]), str(s["qc_failed_pages"]))
    Console(stderr=False).print(t)
