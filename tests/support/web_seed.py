"""A seeded campaign for the tests of `sohoa web` (no tests here): four weeks of synthetic
history ending today, a plan with Vietnamese names, files sent back for rescan with reasons
in the QC workers' grammar, a rejected file, a file whose pages fail QC before any verdict,
and a site outside the plan. ``expected`` is an independent tally of the events, not of the
database."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import holidays

from consumers.synth import SynthConfig, generate, sha, site_ids
from sohoa.events import (
    CheckResult,
    Event,
    FileAssembled,
    FileVerdict,
    PageChecked,
    PageRef,
    PageRemoved,
    PageScanned,
    RescanReason,
    stable_event_id,
)

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
SYNTH_SITES = 4
PLAN = {
    # site -> (name, unit, contractor, target pages, target files, deadline in days from today)
    "xa-0000": ("Xã Long Hưng", "Huyện Tân Phú", "Cty Số Việt", 100, 10, 120),
    "xa-0001": ("Xã Phú Lâm", "Huyện Tân Phú", "Cty Số Việt", 60000, 500, 40),
    "xa-0002": ("Thị trấn Định Quán", "Huyện Định Quán", "Cty Lưu Trữ Đông Nam", 400, 40,
                200),
}
UNPLANNED = "xa-0003"
RESCAN_SITE = "xa-0002"


@dataclass
class Seeded:
    events: list[Event]
    plan_csv: str
    today: date
    # independent tallies
    pages: dict[str, int] = field(default_factory=dict)           # current pages per site
    accepted: dict[str, int] = field(default_factory=dict)        # pages of accepted files
    files: dict[str, dict[tuple[str, str], str]] = field(default_factory=dict)  # -> verdict
    file_keys: dict[str, set[tuple[str, str]]] = field(default_factory=dict)  # every file

    def deadline(self, site: str) -> date:
        return self.today + timedelta(days=PLAN[site][5])

    def target(self, site: str) -> int:
        return PLAN[site][3]


def working_days(start: date, end: date) -> int:
    """Monday to Friday without Vietnamese public holidays, [start, end]: counted here, apart
    from consumers.forecast."""
    vn = holidays.country_holidays("VN", years=range(start.year, end.year + 1))
    n, d = 0, start
    while d <= end:
        n += d.weekday() < 5 and d not in vn
        d += timedelta(days=1)
    return n


def _at(day: date, hour: int) -> datetime:
    return datetime.combine(day, time(hour, 0), tzinfo=TZ).astimezone(UTC)


def _hand_made(site: str, day: date) -> list[Event]:
    """Files of ``site`` whose verdicts ask for rescans or reject, and one not yet judged."""
    out: list[Event] = []

    def file(code: str, pages: int, checks: dict[int, list[CheckResult]], verdict: str | None,
             reasons: list[RescanReason], hour: int) -> None:
        t = _at(day, hour)
        refs = []
        for n in range(1, pages + 1):
            doc = f"{n:03d}.tif"
            h = sha(site, code, doc)
            out.append(PageScanned.make(site_id=site, fonds="UBND-DQ", file_code=code,
                                        document=doc, number=n, uri=f"file:///hot/{code}/{doc}",
                                        sha256=h, size_bytes=100, media_type="image/tiff",
                                        path=f"UBND-DQ/{code}/{doc}",
                                        occurred_at=t + timedelta(minutes=n)))
            refs.append(PageRef(document=doc, page_index=1, number=n, uri=f"file:///hot/{doc}",
                                document_sha256=h, sha256=h, media_type="image/tiff"))
        base = {"site_id": site, "fonds": "UBND-DQ", "file_code": code}
        t += timedelta(minutes=30)
        out.append(FileAssembled(**base, event_id=stable_event_id("web-asm", site, code),
                                 pages=refs, occurred_at=t))
        for n in range(1, pages + 1):
            doc = f"{n:03d}.tif"
            bad = checks.get(n, [])
            results = bad or [CheckResult(check="dpi", value=300, threshold=200, passed=True)]
            out.append(PageChecked(**base, event_id=stable_event_id("web-chk", site, code, n),
                                   document=doc, page_index=1, sha256=sha(site, code, doc),
                                   checks=results, passed=not bad, width_mm=210.0,
                                   height_mm=297.0, occurred_at=t + timedelta(minutes=1)))
        if verdict is not None:
            failed = len(checks)
            out.append(FileVerdict(**base, event_id=stable_event_id("web-vd", site, code),
                                   verdict=verdict, reasons=reasons, pages_total=pages,
                                   pages_accepted=0 if verdict == "rejected" else pages - failed,
                                   occurred_at=t + timedelta(minutes=5)))

    dpi = [CheckResult(check="dpi", value=150, threshold=200, passed=False)]
    skew = [CheckResult(check="skew_deg", value=5.2, threshold=3.0, passed=False)]
    file("HS-QL-01", 4, {2: dpi, 3: skew}, "needs_rescan", [
        RescanReason(document="002.tif", page_index=1, position=2,
                     reason="dpi: 150 (required 200)"),
        RescanReason(document="003.tif", page_index=1, position=3,
                     reason="skew_deg: 5.2 (required 3.0)"),
        RescanReason(number=5, reason="missing_page"),
        RescanReason(reason="page_count: 4 pages, manifest expects 5"),
    ], hour=9)
    file("HS-QL-02", 4, {1: dpi, 2: dpi, 3: dpi}, "rejected",
         [RescanReason(reason="too_many_failed_pages: 3 of 4")], hour=10)
    file("HS-QL-03", 3, {1: [CheckResult(check="blank", value=True, passed=False)]}, None, [],
         hour=11)
    return out


def seed(today: date | None = None) -> Seeded:
    today = today or datetime.now(TZ).date()
    cfg = SynthConfig(sites=SYNTH_SITES, files_per_site=6, pages_per_file=12,
                      start=today - timedelta(days=27), days=28, seed=20)
    assert site_ids(SYNTH_SITES) == [*PLAN, UNPLANNED]
    events = [*generate(cfg), *_hand_made(RESCAN_SITE, today - timedelta(days=1))]
    # Synth times are up to 16:00 local: keep every event in the past.
    now = datetime.now(UTC)
    events = [e for e in events if e.occurred_at <= now]
    lines = ["site_id,name,unit,contractor,target_pages,target_files,deadline"]
    for site, (name, unit, contractor, pages, files, days) in PLAN.items():
        due = today + timedelta(days=days)
        lines.append(f"{site},{name},{unit},{contractor},{pages},{files},{due:%d/%m/%Y}")
    out = Seeded(events, "\n".join(lines) + "\n", today)
    _tally(out)
    return out


def _tally(s: Seeded) -> None:
    current: dict[tuple, tuple[int, str]] = {}
    removed: set[tuple] = set()
    assembled: dict[tuple, int] = {}
    verdicts: dict[tuple, FileVerdict] = {}
    for e in s.events:
        if isinstance(e, PageScanned | PageRemoved):
            k = (e.site_id, e.fonds, e.file_code, e.document, e.page_index)
            if isinstance(e, PageScanned):
                if k not in current or e.revision > current[k][0]:
                    current[k] = (e.revision, e.sha256)
                    removed.discard(k)
            elif k in current and current[k][1] == e.sha256:
                removed.add(k)
        elif isinstance(e, FileAssembled):
            f = (e.site_id, e.fonds, e.file_code)
            assembled[f] = max(assembled.get(f, 0), e.revision)
        elif isinstance(e, FileVerdict):
            f = (e.site_id, e.fonds, e.file_code)
            if f not in verdicts or e.revision >= verdicts[f].revision:
                verdicts[f] = e
    pages: dict[str, int] = defaultdict(int)
    keys: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for k in current:
        keys[k[0]].add((k[1], k[2]))
    for k in set(current) - removed:
        pages[k[0]] += 1
    accepted: dict[str, int] = defaultdict(int)
    files: dict[str, dict[tuple[str, str], str]] = defaultdict(dict)
    for f, v in verdicts.items():
        if v.revision >= assembled.get(f, 0):
            files[f[0]][(f[1], f[2])] = v.verdict.value
            if v.verdict.value == "accepted":
                accepted[f[0]] += v.pages_accepted
    s.pages, s.accepted, s.files = dict(pages), dict(accepted), dict(files)
    s.file_keys = dict(keys)


def write_plan(s: Seeded, tmp: Path) -> Path:
    path = tmp / "ke-hoach.csv"
    path.write_text(s.plan_csv, encoding="utf-8")
    return path
