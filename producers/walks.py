"""The agent's reconcile walks: every folder under a root, compared with the outbox's rows.

A mixin of :class:`producers.agent.Agent`. A walk is a generator the loop advances a few steps
per turn, so filesystem events and hash results keep flowing during a walk of a large tree.
Paths are compared as spelled on disk: an NFD folder and its NFC twin are two folders.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

log = logging.getLogger(__name__)

SCAN_YIELD_EVERY = 256     # a walk hands control back to the loop every this many entries


class WalksMixin:
    """Needs the attributes :class:`producers.agent.Agent` sets up."""

    ob: Any
    roots: list[Path]
    root_keys: list[str]
    _scans: list[Iterator[None]]
    _commits: int

    if TYPE_CHECKING:
        def _litter(self, name: str) -> bool: ...
        def _rel(self, root: int, path: Path) -> str | None: ...
        def _schedule_removal(self, root: int, path: Path) -> None: ...
        def observe(self, root: int, path: Path, st: os.stat_result | None = None,
                    rel: str | None = None, unknown: bool = False) -> None: ...

    def _pump_scans(self, budget: int) -> None:
        while self._scans and budget > 0:
            try:
                next(self._scans[0])
                budget -= 1
            except StopIteration:
                self._scans.pop(0)

    def _scan_root(self, root: int) -> Iterator[None]:
        visited: set[str] = set()
        try:
            empty = not any(True for _ in os.scandir(self.roots[root]))
        except OSError:
            return
        if empty and self.ob.dirs_with_present(self.root_keys[root]):
            # An unmounted share often leaves an empty mount point: that is not the operator
            # deleting every page, so no removal is reported until the pages are seen again.
            log.error("root is empty but pages are known there; not reporting removals "
                      "(share unmounted?)", extra={"root": str(self.roots[root])})
            return
        yield from self._scan_dir(root, self.roots[root], visited)
        # Folders we knew documents in that are gone altogether.
        for d in self.ob.dirs_with_present(self.root_keys[root]):
            if d not in visited:
                yield from self._vanished_in(root, d)

    def _scan_dir(self, root: int, top: Path, visited: set[str] | None = None) -> Iterator[None]:
        stack = [top]
        rootk = self.root_keys[root]
        while stack:
            d = stack.pop()
            rel_dir = self._rel(root, d)
            if rel_dir is None:
                continue
            rel_dir = "" if rel_dir == "." else rel_dir
            if visited is not None:
                visited.add(rel_dir)
            known = self.ob.known_in_dir(rootk, rel_dir)
            snapshot = self._commits
            names: set[str] = set()
            try:
                it = os.scandir(d)
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("cannot list folder", extra={"path": str(d), "error": str(exc)})
                continue
            n = 0
            with it:
                for entry in it:
                    n += 1
                    if n % SCAN_YIELD_EVERY == 0:
                        yield
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(Path(entry.path))
                            continue
                        if self._litter(entry.name):
                            continue
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                    names.add(rel)
                    k = known.get(rel)
                    if k is not None and k[0] == st.st_size and k[1] == st.st_mtime_ns and \
                            k[2] != "removed":
                        continue  # the common case of every walk: no Path, no lookup
                    self.observe(root, Path(entry.path), st, rel,
                                 unknown=k is None and self._commits == snapshot)
            yield
            for rel, k in known.items():
                if rel not in names and k[2] in ("sent", "rejected"):
                    self._schedule_removal(root, self.roots[root] / rel)

    def _vanished_in(self, root: int, rel_dir: str) -> Iterator[None]:
        for rel, k in self.ob.known_in_dir(self.root_keys[root], rel_dir).items():
            yield
            if k[2] in ("sent", "rejected"):
                self._schedule_removal(root, self.roots[root] / rel)
