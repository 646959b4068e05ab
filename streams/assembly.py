"""Assembly state of one archival file (hồ sơ): pure logic, no Faust.

The Faust agent keeps one :class:`FileState` per ``site_id/fonds/file_code`` in a changelog-backed
table (as a plain JSON dict, see :meth:`FileState.to_dict`), feeds it every site event, and
publishes the :class:`~sohoa.events.FileAssembled` that :meth:`FileState.apply` returns.

Rules:
- a file's pages are keyed by document and page index; they are ordered by document (the
  manifest's order, else the names' natural order), then page;
- a file is assembled on its closing marker, when its pages reach the manifest's expected
  count, or after an idle timeout;
- the same page content in new document bytes (a document re-saved, or another page of it
  rescanned) updates the page's reference without reopening the file;
- a page that arrives (or changes) after assembly reopens the file as the next revision; the
  reopened file is assembled again when the count is reached, on a marker, or after a short
  settle time (trigger ``late_page``); nothing is dropped;
- replaying an event that the state already reflects changes nothing (the table may be ahead of
  the committed offsets after a crash); a replayed marker re-emits the same FileAssembled,
  whose event id is stable, so a FileAssembled lost in the crash is never missing.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sohoa.events import (
    Classification,
    Event,
    FileAssembled,
    FileClosed,
    FileManifest,
    PageKey,
    PageRef,
    PageRemoved,
    PageScanned,
    SiteDuplicate,
    stable_event_id,
)
from sohoa.naming import natural_key, nfc

# A page's key in the state and its changelog: its document and its page in it ("/" never
# occurs in a document name).
Key = tuple[str, int]


def _enc(k: Key) -> str:
    return f"{k[1]}/{k[0]}"


def _dec(s: str) -> Key:
    idx, _, doc = s.partition("/")
    # A document's name repeats in each of its pages' keys: one string for all of them
    return sys.intern(doc), int(idx)


def due_to_close(assembled: bool, has_pages: bool, revision: int, deferred: str | None,
                 last_activity: float, now: float, idle_timeout_s: float,
                 late_settle_s: float) -> bool:
    """Whether a file is due to be assembled by the timer: quiet for the idle timeout, or for
    the settle time once reopened (revision > 1) or waiting on content answers."""
    if assembled or not has_pages:
        return False
    limit = late_settle_s if revision > 1 or deferred else idle_timeout_s
    return now - last_activity >= limit


# The decoded states of the files being scanned are cached beside the table
# (streams.state_cache_*), so a page's size in memory is what that cache costs: slots, and
# the strings most pages repeat (media type, a one-page document's digest) shared.
@dataclass(slots=True)
class PageEntry:
    uri: str
    sha256: str            # the page's content digest
    revision: int
    size: int = 0
    document_sha256: str = ""
    number: int | None = None
    document_pages: int = 1
    media_type: str = "application/octet-stream"

    def to_list(self) -> list[Any]:
        return [self.uri, self.sha256, self.revision, self.size, self.document_sha256,
                self.number, self.document_pages, self.media_type]

    @classmethod
    def from_list(cls, v: list[Any]) -> PageEntry:
        sha = v[1]
        if len(v) < 8:
            return cls(v[0], sha, int(v[2]), int(v[3]), sha)
        doc_sha = sha if v[4] == sha else v[4]
        return cls(v[0], sha, int(v[2]), int(v[3]), doc_sha, v[5], int(v[6]),
                   sys.intern(v[7]))


@dataclass
class FileState:
    site_id: str
    file_code: str
    fonds: str = ""
    pages: dict[Key, PageEntry] = field(default_factory=dict)
    expected_pages: int | None = None
    classification: str = Classification.PUBLIC.value
    # The manifest's documents, in order: name -> (expected pages or None, language or None).
    listed: dict[str, tuple[int | None, str | None]] = field(default_factory=dict)
    # The manifest's document types (tên loại), where it gives them: QC's dpi floor.
    types: dict[str, str] = field(default_factory=dict)
    revision: int = 1
    assembled: bool = False      # the current revision has been published
    closed: bool = False         # the site sent its closing marker at some point
    last_activity: float = 0.0   # wall clock (s) of the last change, for the idle timeout
    assembled_at: float | None = None
    # Site-wide content check: pages (key -> sha256) whose answer from the content index
    # has not come back yet; assembly waits for them (the idle timeout does not).
    pending: dict[Key, str] = field(default_factory=dict)
    # key -> (other fonds, other file code, other document, other page index)
    site_dups: dict[Key, tuple[str, str, str, int]] = field(default_factory=dict)
    deferred: str | None = None  # trigger of an assembly waiting for pending answers
    # The pending questions were asked again once the settle time passed without answers
    # (an answer can be lost on a rebalance); the next settle time assembles without them.
    reasked: bool = False

    # --- (de)serialisation: compact JSON for the table's changelog -----------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "v": 2, "s": self.site_id, "f": self.file_code, "fo": self.fonds,
            "p": {_enc(k): e.to_list() for k, e in self.pages.items()},
            "e": self.expected_pages, "c": self.classification,
            "l": [[n, p, lang] for n, (p, lang) in self.listed.items()], "r": self.revision,
            "a": self.assembled, "cl": self.closed, "t": self.last_activity,
            "at": self.assembled_at,
            "pd": {_enc(k): sha for k, sha in self.pending.items()},
            "sd": {_enc(k): list(v) for k, v in self.site_dups.items()},
            "df": self.deferred, "ty": self.types, "rq": self.reasked,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FileState:
        if d.get("v") != 2:
            return cls._from_v1(d)
        return cls(
            site_id=d["s"], file_code=d["f"], fonds=d.get("fo", ""),
            pages={_dec(k): PageEntry.from_list(v) for k, v in d.get("p", {}).items()},
            expected_pages=d.get("e"), classification=d.get("c", "public"),
            listed={n: (p, lang) for n, p, lang in d.get("l", [])},
            revision=int(d.get("r", 1)), assembled=bool(d.get("a")), closed=bool(d.get("cl")),
            last_activity=float(d.get("t", 0.0)), assembled_at=d.get("at"),
            pending={_dec(k): sha for k, sha in d.get("pd", {}).items()},
            site_dups={_dec(k): (v[0], v[1], v[2], int(v[3]))
                       for k, v in d.get("sd", {}).items()},
            deferred=d.get("df"), types=dict(d.get("ty") or {}), reasked=bool(d.get("rq")),
        )

    @classmethod
    def _from_v1(cls, d: dict[str, Any]) -> FileState:
        """A state written before documents: each page slot becomes the document its path
        names (the rule of sohoa.events' version-1 upgrade)."""
        pages: dict[Key, PageEntry] = {}
        for n, by in d.get("p", {}).items():
            for slot, v in by.items():
                doc = nfc(slot.rsplit("/", 1)[-1]) or str(n)
                e = PageEntry.from_list(v)
                e.number = int(n)
                pages[(doc, 1)] = e
        return cls(site_id=d["s"], file_code=d["f"], fonds=d.get("fo", ""), pages=pages,
                   expected_pages=d.get("e"), classification=d.get("c", "public"),
                   revision=int(d.get("r", 1)), assembled=bool(d.get("a")),
                   closed=bool(d.get("cl")), last_activity=float(d.get("t", 0.0)),
                   assembled_at=d.get("at"))

    # --- event handling ------------------------------------------------------------------
    def apply(self, event: Event, now: float, idle_timeout_s: float = 3600.0,
              late_settle_s: float = 60.0,
              content_check: bool = False) -> tuple[bool, FileAssembled | None]:
        """Fold one event in. Returns (state changed, FileAssembled to publish or None).
        With ``content_check`` a new page waits for the site-wide content index's answer
        (:meth:`content_answer`) before the file is assembled."""
        if isinstance(event, PageScanned):
            change = self._add_page(event)
            if change is None:
                return False, None
            if change == "moved":
                return True, None  # same content, new bytes: the assembly stands
            key = (event.document, event.page_index)
            self.last_activity = now
            self.site_dups.pop(key, None)
            if content_check:
                self.pending[key] = event.sha256
                self.reasked = False  # a new question: the next wait re-asks again
            self._reopen_if_assembled()
            if self._count_reached():
                trigger = "late_page" if self.revision > 1 else "expected_count"
                return True, self._maybe_assemble(trigger, now)
            return True, None
        if isinstance(event, PageRemoved):
            key = (event.document, event.page_index)
            entry = self.pages.get(key)
            if entry is None or entry.sha256 != event.sha256:
                return False, None
            del self.pages[key]
            self.site_dups.pop(key, None)
            if self.pending.get(key) == event.sha256:
                del self.pending[key]
            self.last_activity = now
            self._reopen_if_assembled()
            return True, None
        if isinstance(event, FileManifest):
            changed = False
            if event.fonds and event.fonds != self.fonds:
                self.fonds, changed = event.fonds, True
            if event.expected_pages is not None and event.expected_pages != self.expected_pages:
                self.expected_pages, changed = event.expected_pages, True
            newly_classified = (event.classification.is_classified
                                and not Classification(self.classification).is_classified)
            if event.classification.value != self.classification:
                self.classification, changed = event.classification.value, True
            listed = {d.name: (d.pages, d.language) for d in event.documents}
            if listed and listed != self.listed:
                self.listed, changed = listed, True
            types = {d.name: d.record.ten_loai for d in event.documents
                     if d.record is not None and d.record.ten_loai}
            if types != self.types:
                self.types, changed = types, True
            if newly_classified and self.assembled:
                # A manifest that arrives late makes the file classified: assembled again at
                # once, so the OCR worker skips it and removes what it made before.
                self._reopen_if_assembled()
                return True, self._assemble("reclassified", now)
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

    def content_answer(self, key: Key, sha256: str, other: tuple[str, str, str, int] | None,
                       now: float) -> tuple[bool, FileAssembled | None]:
        """The content index's answer for one page: ``other`` is (fonds, file_code, document,
        page_index) of the same content elsewhere in the site, or None."""
        if self.pending.get(key) != sha256:
            return False, None  # an answer about content this page no longer has
        del self.pending[key]
        if other is not None:
            self.site_dups[key] = other
        if not self.pending and self.deferred and not self.assembled:
            return True, self._assemble(self.deferred, now)
        return True, None

    def tick(self, now: float, idle_timeout_s: float,
             late_settle_s: float) -> FileAssembled | None:
        """Idle check, driven by a timer: assemble a file nobody closed. A file waiting on
        content answers past the settle time has its questions asked again first (``reasked``
        set: the caller sends them); it is assembled without them only after a second settle
        time."""
        if self.assembled or not self.pages:
            return None
        if self.deferred and now - self.last_activity >= late_settle_s:
            if self.pending and not self.reasked:
                self.reasked = True
                self.last_activity = now
                return None
            return self._assemble(self.deferred, now)  # the content index never answered
        if self.revision > 1 and now - self.last_activity >= late_settle_s:
            return self._assemble("late_page", now)
        if now - self.last_activity >= idle_timeout_s:
            return self._assemble("idle", now)
        return None

    def due(self, now: float, idle_timeout_s: float, late_settle_s: float) -> bool:
        return due_to_close(self.assembled, bool(self.pages), self.revision, self.deferred,
                            self.last_activity, now, idle_timeout_s, late_settle_s)

    # --- internals -----------------------------------------------------------------------
    def _add_page(self, ev: PageScanned) -> str | None:
        """None: nothing new; "moved": the same content in new document bytes; "page": a
        page new or changed."""
        key = (ev.document, ev.page_index)
        old = self.pages.get(key)
        if old is not None and ev.revision < old.revision:
            return None  # an older re-send arriving late never replaces the newer scan
        if old is not None and old.sha256 == ev.sha256 and old.revision == ev.revision:
            if old.document_sha256 == ev.document_sha256 and old.uri == ev.uri:
                return None
            kind = "moved"
        elif old is not None and old.sha256 == ev.sha256:
            old.revision = max(old.revision, ev.revision)
            return None
        else:
            kind = "page"
        self.pages[key] = PageEntry(
            uri=ev.uri, sha256=ev.sha256, revision=ev.revision, size=ev.size_bytes,
            document_sha256=ev.document_sha256, number=ev.number,
            document_pages=ev.document_pages, media_type=ev.media_type)
        if ev.fonds and not self.fonds:
            self.fonds = ev.fonds
        return kind

    def _reopen_if_assembled(self) -> None:
        if self.assembled:
            self.assembled = False
            self.revision += 1

    def _count_reached(self) -> bool:
        """The manifest's count is reached, with no document half received (the agent sends
        a document's pages together: its last page is close behind)."""
        if self.expected_pages is None or len(self.pages) < self.expected_pages:
            return False
        have: dict[str, int] = defaultdict(int)
        want: dict[str, int] = defaultdict(int)
        for (doc, _i), e in self.pages.items():
            have[doc] += 1
            want[doc] = max(want[doc], e.document_pages)
        return all(have[d] >= want[d] for d in have)

    def _maybe_assemble(self, trigger: str, now: float) -> FileAssembled | None:
        if self.pending:
            self.deferred = trigger
            return None
        return self._assemble(trigger, now)

    def _assemble(self, trigger: str, now: float) -> FileAssembled:
        self.deferred = None
        self.reasked = False
        self.assembled = True
        self.assembled_at = now
        return self.assembled_event(trigger)

    def documents(self) -> list[str]:
        """The file's documents in order: the manifest's order, then by name."""
        names = {doc for doc, _ in self.pages}
        listed = [n for n in self.listed if n in names]
        rest = sorted(names - set(listed), key=natural_key)
        return listed + rest

    def assembled_event(self, trigger: str) -> FileAssembled:
        by_doc: dict[str, list[int]] = defaultdict(list)
        for doc, idx in self.pages:
            by_doc[doc].append(idx)
        refs: list[PageRef] = []
        by_sha: dict[str, list[PageKey]] = defaultdict(list)
        claims: dict[int, int] = defaultdict(int)
        missing: list[PageKey] = []
        numbered_only = True
        for doc in self.documents():
            indices = sorted(by_doc[doc])
            entries = [self.pages[(doc, i)] for i in indices]
            listed_pages = self.listed.get(doc, (None, None))[0] or 0
            pages_in_doc = max([e.document_pages for e in entries] + [listed_pages])
            have = set(indices)
            missing += [PageKey(document=doc, page_index=i)
                        for i in range(1, pages_in_doc + 1) if i not in have]
            number = entries[-1].number
            if pages_in_doc != 1 or number is None:
                numbered_only = False
            if number is not None:
                claims[number] += 1
            for i, e in zip(indices, entries, strict=True):
                refs.append(PageRef(document=doc, page_index=i, number=e.number, uri=e.uri,
                                    document_sha256=e.document_sha256 or e.sha256,
                                    sha256=e.sha256, media_type=e.media_type,
                                    revision=e.revision))
                by_sha[e.sha256].append(PageKey(document=doc, page_index=i))
        if self.listed:
            claims.clear()  # the manifest lists the documents: its list is what is judged
        nos = sorted(claims)
        # Numbers the documents' names claim: a missing one is a missing document (a missing
        # page, where every document is one page: then the manifest's count bounds them too).
        top = max([*nos, (self.expected_pages or 0) if numbered_only else 0], default=0)
        start = 0 if nos and nos[0] == 0 else 1
        gaps = [n for n in range(start, top + 1) if n not in claims] if nos else []
        mismatch = self.expected_pages is not None and len(refs) != self.expected_pages
        present = set(by_doc)
        return FileAssembled(
            event_id=stable_event_id("FileAssembled", 2, self.site_id, self.fonds,
                                     self.file_code, self.revision),
            site_id=self.site_id, fonds=self.fonds, file_code=self.file_code,
            revision=self.revision, trigger=trigger, pages=refs, gaps=gaps,
            duplicate_page_nos=[n for n in nos if claims[n] > 1],
            duplicate_content=sorted(([*g] for g in by_sha.values() if len(g) > 1),
                                     key=lambda g: (natural_key(g[0].document),
                                                    g[0].page_index)),
            missing_pages=missing,
            missing_documents=[n for n in self.listed if n not in present],
            expected_pages=self.expected_pages, count_mismatch=mismatch,
            classification=Classification(self.classification),
            duplicate_in_site=[
                SiteDuplicate(document=k[0], page_index=k[1], other_fonds=o[0],
                              other_file_code=o[1], other_document=o[2], other_page_index=o[3])
                for k, o in sorted(self.site_dups.items()) if k in self.pages],
            languages={n: lang for n, (_p, lang) in self.listed.items()
                       if lang and n in present},
            document_types={n: t for n, t in self.types.items() if n in present},
        )

