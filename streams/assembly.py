"""Assembly state of one archival file (hồ sơ): pure logic, no Faust.

The Faust agent keeps one :class:`FileState` per ``site_id/file_code`` in a changelog-backed
table (as a plain JSON dict, see :meth:`FileState.to_dict`), feeds it every site event, and
publishes the :class:`~sohoa.events.FileAssembled` that :meth:`FileState.apply` returns.

Rules:
- a file is assembled on its closing marker, when its distinct pages reach the manifest's
  expected count, or after an idle timeout;
- a page that arrives (or changes) after assembly reopens the file as the next revision; the
  reopened file is assembled again when the count is reached, on a marker, or after a short
  settle time (trigger ``late_page``); nothing is dropped;
- replaying an event that the state already reflects changes nothing (the table may be ahead of
  the committed offsets after a crash); a replayed marker re-emits the same FileAssembled,
  whose event id is stable, so a FileAssembled lost in the crash is never missing.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Any

from sohoa.events import (
    Classification,
    Event,
    FileAssembled,
    FileClosed,
    FileManifest,
    PageRef,
    PageRemoved,
    PageScanned,
    SiteDuplicate,
    stable_event_id,
)


@dataclass
class PageEntry:
    uri: str
    sha256: str
    revision: int
    size: int = 0

    def to_list(self) -> list[Any]:
        return [self.uri, self.sha256, self.revision, self.size]

    @classmethod
    def from_list(cls, v: list[Any]) -> PageEntry:
        return cls(uri=v[0], sha256=v[1], revision=int(v[2]), size=int(v[3]))


@dataclass
class FileState:
    site_id: str
    file_code: str
    fonds: str = ""
    # page_no -> path (relative to the hot folder, or the URI when absent) -> entry
    pages: dict[int, dict[str, PageEntry]] = field(default_factory=dict)
    expected_pages: int | None = None
    classification: str = Classification.PUBLIC.value
    revision: int = 1
    assembled: bool = False      # the current revision has been published
    closed: bool = False         # the site sent its closing marker at some point
    last_activity: float = 0.0   # wall clock (s) of the last change, for the idle timeout
    assembled_at: float | None = None
    # Site-wide content check: pages (page_no -> sha256) whose answer from the content index
    # has not come back yet; assembly waits for them (the idle timeout does not).
    pending: dict[int, str] = field(default_factory=dict)
    site_dups: dict[int, tuple[str, int]] = field(default_factory=dict)
    deferred: str | None = None  # trigger of an assembly waiting for pending answers

    # --- (de)serialisation: compact JSON for the table's changelog -----------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "s": self.site_id, "f": self.file_code, "fo": self.fonds,
            "p": {str(n): {k: e.to_list() for k, e in by.items()} for n, by in self.pages.items()},
            "e": self.expected_pages, "c": self.classification, "r": self.revision,
            "a": self.assembled, "cl": self.closed, "t": self.last_activity,
            "at": self.assembled_at,
            "pd": {str(n): sha for n, sha in self.pending.items()},
            "sd": {str(n): list(v) for n, v in self.site_dups.items()},
            "df": self.deferred,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FileState:
        return cls(
            site_id=d["s"], file_code=d["f"], fonds=d.get("fo", ""),
            pages={int(n): {k: PageEntry.from_list(v) for k, v in by.items()}
                   for n, by in d.get("p", {}).items()},
            expected_pages=d.get("e"), classification=d.get("c", "public"),
            revision=int(d.get("r", 1)), assembled=bool(d.get("a")), closed=bool(d.get("cl")),
            last_activity=float(d.get("t", 0.0)), assembled_at=d.get("at"),
            pending={int(n): sha for n, sha in d.get("pd", {}).items()},
            site_dups={int(n): (v[0], int(v[1])) for n, v in d.get("sd", {}).items()},
            deferred=d.get("df"),
        )

    # --- event handling ------------------------------------------------------------------
    def apply(self, event: Event, now: float, idle_timeout_s: float = 3600.0,
              late_settle_s: float = 60.0,
              content_check: bool = False) -> tuple[bool, FileAssembled | None]:
        """Fold one event in. Returns (state changed, FileAssembled to publish or None).
        With ``content_check`` a new page waits for the site-wide content index's answer
        (:meth:`content_answer`) before the file is assembled."""
        if isinstance(event, PageScanned):
            changed = self._add_page(event)
            if not changed:
                return False, None
            self.last_activity = now
            self.site_dups.pop(event.page_no, None)
            if content_check:
                self.pending[event.page_no] = event.sha256
            self._reopen_if_assembled()
            if self._count_reached():
                trigger = "late_page" if self.revision > 1 else "expected_count"
                return True, self._maybe_assemble(trigger, now)
            return True, None
        if isinstance(event, PageRemoved):
            by = self.pages.get(event.page_no, {})
            gone = [k for k, e in by.items() if e.sha256 == event.sha256]
            if not gone:
                return False, None
            for k in gone:
                del by[k]
            if not by:
                self.pages.pop(event.page_no, None)
                self.site_dups.pop(event.page_no, None)
            if self.pending.get(event.page_no) == event.sha256:
                del self.pending[event.page_no]
            self.last_activity = now
            self._reopen_if_assembled()
            return True, None
        if isinstance(event, FileManifest):
            changed = False
            if event.fonds and event.fonds != self.fonds:
                self.fonds, changed = event.fonds, True
            if event.expected_pages is not None and event.expected_pages != self.expected_pages:
                self.expected_pages, changed = event.expected_pages, True
            if event.classification.value != self.classification:
                self.classification, changed = event.classification.value, True
            if changed and not self.assembled and self._count_reached():
                return True, self._maybe_assemble("expected_count", now)
            return changed, None
        if isinstance(event, FileClosed):
            if event.fonds and not self.fonds:
                self.fonds = event.fonds
            if event.expected_pages is not None and self.expected_pages is None:
                self.expected_pages = event.expected_pages
            self.closed = True
            if self.assembled:
                # Replay or repeated marker: the same revision again, same event id.
                return False, self.assembled_event("marker")
            trigger = "late_page" if self.revision > 1 else (
                "idle" if event.reason == "idle" else "marker")
            return True, self._maybe_assemble(trigger, now)
        return False, None

    def content_answer(self, page_no: int, sha256: str, other: tuple[str, int] | None,
                       now: float) -> tuple[bool, FileAssembled | None]:
        """The content index's answer for one page: ``other`` is (file_code, page_no) of the
        same content elsewhere in the site, or None."""
        if self.pending.get(page_no) != sha256:
            return False, None  # an answer about content this page no longer has
        del self.pending[page_no]
        if other is not None:
            self.site_dups[page_no] = other
        if not self.pending and self.deferred and not self.assembled:
            return True, self._assemble(self.deferred, now)
        return True, None

    def tick(self, now: float, idle_timeout_s: float,
             late_settle_s: float) -> FileAssembled | None:
        """Idle check, driven by a timer: assemble a file nobody closed."""
        if self.assembled or not self.pages:
            return None
        if self.deferred and now - self.last_activity >= late_settle_s:
            return self._assemble(self.deferred, now)  # the content index never answered
        if self.revision > 1 and now - self.last_activity >= late_settle_s:
            return self._assemble("late_page", now)
        if now - self.last_activity >= idle_timeout_s:
            return self._assemble("idle", now)
        return None

    def due(self, now: float, idle_timeout_s: float, late_settle_s: float) -> bool:
        if self.assembled or not self.pages:
            return False
        limit = late_settle_s if self.revision > 1 or self.deferred else idle_timeout_s
        return now - self.last_activity >= limit

    # --- internals -----------------------------------------------------------------------
    def _add_page(self, ev: PageScanned) -> bool:
        slot = ev.path or ev.uri
        by = self.pages.setdefault(ev.page_no, {})
        old = by.get(slot)
        if old is not None and old.sha256 == ev.sha256 and old.uri == ev.uri:
            if ev.revision > old.revision:
                old.revision = ev.revision
            return False
        if old is not None and ev.revision < old.revision:
            return False  # an older re-send arriving late never replaces the newer scan
        by[slot] = PageEntry(uri=ev.uri, sha256=ev.sha256, revision=ev.revision,
                             size=ev.size_bytes)
        if ev.fonds and not self.fonds:
            self.fonds = ev.fonds
        return True

    def _reopen_if_assembled(self) -> None:
        if self.assembled:
            self.assembled = False
            self.revision += 1

    def _count_reached(self) -> bool:
        return self.expected_pages is not None and len(self.pages) >= self.expected_pages

    def _maybe_assemble(self, trigger: str, now: float) -> FileAssembled | None:
        if self.pending:
            self.deferred = trigger
            return None
        return self._assemble(trigger, now)

    def _assemble(self, trigger: str, now: float) -> FileAssembled:
        self.deferred = None
        self.assembled = True
        self.assembled_at = now
        return self.assembled_event(trigger)

    def assembled_event(self, trigger: str) -> FileAssembled:
        refs: list[PageRef] = []
        by_sha: dict[str, list[int]] = defaultdict(list)
        dup_nos: list[int] = []
        for page_no in sorted(self.pages):
            entries = self.pages[page_no]
            if len(entries) > 1:
                dup_nos.append(page_no)
            for _slot, e in sorted(entries.items()):
                refs.append(PageRef(page_no=page_no, uri=e.uri, sha256=e.sha256,
                                    revision=e.revision))
                by_sha[e.sha256].append(page_no)
        nos = sorted(self.pages)
        top = max([*nos, self.expected_pages or 0])
        start = 0 if nos and nos[0] == 0 else 1
        gaps = [n for n in range(start, top + 1) if n not in self.pages]
        dup_content = [sorted(v) for v in by_sha.values() if len(v) > 1]
        mismatch = self.expected_pages is not None and len(nos) != self.expected_pages
        return FileAssembled(
            event_id=stable_event_id("FileAssembled", self.site_id, self.file_code,
                                     self.revision),
            site_id=self.site_id, fonds=self.fonds, file_code=self.file_code,
            revision=self.revision, trigger=trigger, pages=refs, gaps=gaps,
            duplicate_page_nos=dup_nos, duplicate_content=sorted(dup_content),
            expected_pages=self.expected_pages, count_mismatch=mismatch,
            classification=Classification(self.classification),
            duplicate_in_site=[
                SiteDuplicate(page_no=n, other_file_code=f, other_page_no=p)
                for n, (f, p) in sorted(self.site_dups.items()) if n in self.pages],
        )


class StateCache:
    """Decoded file states beside the table, least recently used dropped beyond ``size``.

    An entry is valid only while the table still holds the very dict it was decoded from (a
    rebalance or a recovery replaces that dict, and the state is decoded again). Bounded
    because the table already holds every file of the campaign: an unbounded copy grew the
    worker by about 350 bytes per page, while the files being scanned at any time are few.
    """

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._entries: OrderedDict[str, tuple[dict[str, Any], FileState]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, raw: dict[str, Any] | None) -> FileState | None:
        hit = self._entries.get(key)
        if hit is None or raw is None or hit[0] is not raw:
            return None
        self._entries.move_to_end(key)
        return hit[1]

    def put(self, key: str, raw: dict[str, Any], state: FileState) -> None:
        self._entries[key] = (raw, state)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
