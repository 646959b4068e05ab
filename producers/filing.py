"""The agent's file-level work: rejections, removals, manifests, closing markers, idle files.

A mixin of :class:`producers.agent.Agent` (it shares the agent's loop thread, outbox and queued
writes); kept apart so each module reads in one sitting.
"""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from producers.changes import page_removed
from producers.layout import NameMismatch
from producers.manifest import MANIFEST_MAX_BYTES, manifest_event
from sohoa.events import DeadLetter, FileClosed, stable_event_id

if TYPE_CHECKING:
    from producers.agent import Candidate, DocumentWrite  # noqa: F401

log = logging.getLogger(__name__)


def file_closed(site: str, fonds: str, file_code: str, reason: str, seen: int,
                expected: int | None, occurred_at: datetime | None = None) -> FileClosed:
    """The agent's FileClosed (``sohoa simulate --through-spine`` sends the same); its id is
    stable for what was seen, so a close sent again after a crash is the same event."""
    return FileClosed(
        event_id=stable_event_id("FileClosed", 2, site, fonds, file_code, reason, seen, expected),
        site_id=site, fonds=fonds, file_code=file_code, reason=reason,  # type: ignore[arg-type]
        expected_pages=expected, pages_seen=seen,
        **({} if occurred_at is None else {"occurred_at": occurred_at}))


class FilingMixin:
    """Needs the attributes :class:`producers.agent.Agent` sets up."""

    site: str
    cfg: Any
    ob: Any
    metrics: Any
    roots: list[Path]
    root_keys: list[str]
    layout: Any
    candidates: dict[str, Any]
    removals: dict[str, tuple[int, str]]
    busy_dirs: dict[tuple[int, str], int]
    _writes: list[tuple[str, Any]]
    _folders: dict[tuple[str, str], Any]
    _commits: int
    wake_sender: Any
    document_names: Any

    if TYPE_CHECKING:
        def _litter(self, name: str) -> bool: ...
        def _rel(self, root: int, path: Path) -> str | None: ...
        def _push(self, due: float, key: str) -> None: ...
        def _flush_writes(self) -> None: ...
        def _pending_doc(self, rootk: str, rel: str) -> Any: ...
        def _queue_document(self, row: Any) -> None: ...
        def _stored_pages(self, rootk: str, rel: str) -> Any: ...

    # --- rejections -------------------------------------------------------------------------

    def _reject_once(self, root: int, path: Path, rel: str, size: int, mtime_ns: int,
                     reason: str, detail: str) -> None:
        from producers.agent import DocumentWrite

        rootk = self.root_keys[root]
        known = self._pending_doc(rootk, rel) or self.ob.known(rootk, rel)
        if known is not None and known.state == "rejected" and known.size == size and \
                known.mtime_ns == mtime_ns:
            return
        log.warning("file rejected", extra={"path": str(path), "reason": reason,
                                            "detail": detail})
        self.metrics.rejected(reason)
        # The row keeps what was last sent (digests, identity), so a fixed file compares its
        # pages with them.
        self._queue_document(DocumentWrite(
            rootk, rel, size, mtime_ns, None, None, None, None, "rejected", reason, None,
            None, None))
        dl = DeadLetter(
            event_id=stable_event_id("DeadLetter", self.site, rootk, rel, size, mtime_ns, reason),
            site_id=self.site, source="watcher", reason=f"{reason}: {detail}",
            payload=json.dumps({"path": rel, "uri": path.as_uri(), "size_bytes": size},
                               ensure_ascii=False),
        )
        self._writes.append(("event", ("dead_letters", dl)))

    # --- removals ---------------------------------------------------------------------------

    def _schedule_removal(self, root: int, path: Path) -> None:
        if self._litter(path.name):
            return
        rel = self._rel(root, path)
        if rel is None:
            return
        key = f"{root}\x00{rel}"
        if key in self.candidates:
            return
        if key not in self.removals:
            self.removals[key] = (root, rel)
            # Wait a window: a replace-by-delete-and-create must not look like a removal.
            self._push(time.monotonic() + self.cfg.stability_window_s, key)

    def _schedule_removals_under(self, root: int, rel_dir: str) -> None:
        rows = self.ob.db.execute(
            "SELECT path FROM pages WHERE root = ? AND state = 'sent' AND "
            "(dir = ? OR substr(dir, 1, ?) = ?)",
            (self.root_keys[root], rel_dir, len(rel_dir) + 1, rel_dir + "/"))
        for (rel,) in rows.fetchall():
            self._schedule_removal(root, self.roots[root] / rel)

    def _check_removal(self, key: str) -> None:
        root, rel = self.removals.pop(key)
        path = self.roots[root] / rel
        self._flush_writes()
        rootk = self.root_keys[root]
        known = self.ob.known(rootk, rel)
        if known is None or known.state not in ("sent", "rejected"):
            return  # never counted (a temp name, a page that never settled): nothing to report
        if os.path.lexists(path):
            return
        self._folders.pop((rootk, rel.rpartition("/")[0]), None)
        if known.state == "rejected" and not any(
                p.state == "sent" for p in self.ob.pages_of(rootk, rel).values()):
            self.ob.db.execute("DELETE FROM pages WHERE root = ? AND path = ?", (rootk, rel))
            self.document_names.clear()  # written here, not through the loop's commit
            return
        if known.file_code is None or known.document is None:
            return
        gone = [p for p in self.ob.pages_of(rootk, rel).values() if p.state == "sent"]
        events = [page_removed(self.site, known.fonds or "", known.file_code, known.document,
                               p, rel) for p in sorted(gone, key=lambda p: p.page_index)]
        log.info("document removed by the operator", extra={"path": str(path),
                                                            "pages": len(events)})
        self._commits += 1
        with self.ob.transaction() as db:
            db.execute("UPDATE pages SET state='removed' WHERE root = ? AND path = ?",
                       (rootk, rel))
            db.execute("UPDATE doc_pages SET state='removed' WHERE root = ? AND path = ?",
                       (rootk, rel))
            from producers.outbox import enqueue

            for ev in events:
                enqueue(db, "site_events", ev)
        self.document_names.clear()
        if self.wake_sender is not None:
            self.wake_sender.set()

    # --- manifests, markers, idle files ---------------------------------------------------

    def _file_of(self, c: Candidate, parts: tuple[str, ...]) -> tuple[str, str] | None:
        try:
            return self.layout.parse_file_dir(parts[:-1])
        except NameMismatch as exc:
            self._reject_once(c.root, c.path, c.rel, c.size, c.mtime_ns, exc.reason, str(exc))
            return None

    def _mark_aux(self, c: Candidate, fonds: str, file_code: str) -> None:
        from producers.agent import DocumentWrite

        self._queue_document(DocumentWrite(
            self.root_keys[c.root], c.rel, c.size, c.mtime_ns, None, fonds, file_code, None,
            "aux", None, None, None, None))

    def _on_manifest(self, c: Candidate, parts: tuple[str, ...]) -> None:
        where = self._file_of(c, parts)
        if where is None:
            return
        fonds, file_code = where
        try:
            with open(c.path, "rb") as fh:
                raw = fh.read(MANIFEST_MAX_BYTES + 1)
        except OSError as exc:
            self._reject_once(c.root, c.path, c.rel, c.size, c.mtime_ns, "unreadable",
                              exc.strerror or "cannot read")
            return
        try:
            ev = manifest_event(raw, self.site, fonds, file_code)
        except ValueError as exc:
            self._reject_once(c.root, c.path, c.rel, c.size, c.mtime_ns, "bad_manifest", str(exc))
            return
        self._mark_aux(c, fonds, file_code)
        self._writes.append(("file_set", ((fonds, file_code), "manifest", ev.model_dump_json())))
        self._writes.append(("event", ("site_events", ev)))
        log.info("manifest read", extra={"path": str(c.path), "file_code": file_code})

    def _on_marker(self, c: Candidate, parts: tuple[str, ...]) -> None:
        where = self._file_of(c, parts)
        if where is None:
            return
        fonds, file_code = where
        self._close_file(fonds, file_code, "marker", marker=c)

    def _close_file(self, fonds: str, file_code: str, reason: str,
                    marker: Candidate | None = None) -> None:
        self._flush_writes()  # the pages seen must include those still queued
        if marker is not None:
            # Known only together with the FileClosed it causes: an agent killed in between
            # would otherwise find the marker known at restart and never close the file.
            self._mark_aux(marker, fonds, file_code)
        row = self.ob.file_row(fonds, file_code)
        expected = None
        if row and row[1]:
            expected = json.loads(row[1]).get("expected_pages")
        seen = self.ob.pages_in_file(fonds, file_code)
        ev = file_closed(self.site, fonds, file_code, reason, seen, expected)
        self._writes.append(("file_set", ((fonds, file_code), "closed", 1)))
        self._writes.append(("event", ("site_events", ev)))
        log.info("file closed", extra={"fonds": fonds, "file_code": file_code,
                                       "reason": reason, "pages_seen": seen,
                                       "expected_pages": expected})
        self._flush_writes()

    def _close_idle_files(self) -> None:
        cutoff = time.time() - self.cfg.idle_timeout_s
        for fonds, file_code in self.ob.open_files_idle_since(cutoff):
            dirs = self.ob.file_dirs(fonds, file_code)
            if any(self.busy_dirs.get((self.root_keys.index(r), d))
                   for r, d in dirs if r in self.root_keys):
                continue  # a document of it is still being written or read
            self._close_file(fonds, file_code, "idle")
