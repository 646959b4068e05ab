"""How a file's assembly state is written in the table, and the decoded states kept beside it.

Two forms, told apart by their first byte:
- **open** (the file is being scanned, not assembled): the JSON of
  :meth:`FileState.to_dict`, the form the table has always held, cheap to decode on every
  batch that touches the file;
- **compact** (the file is assembled: its FileAssembled is published): ``z`` + the same JSON
  deflated (zlib). About a quarter of the bytes (docs/scaling.md): what is left is mostly the
  SHA-256 digests, which do not compress. It is lossless on purpose: a late page reopens the
  file as the next revision, and that FileAssembled must list every page with its URI and both
  digests (the OCR worker reads every page of the new revision again), so nothing a page
  carries can be dropped.

Values in the open form written by Faust's JSON serializer are read as they are. What a file's
state must keep, and why it is not compacted further, is in docs/architecture.md ("State
store").
"""

from __future__ import annotations

import json
import zlib
from collections import OrderedDict

from streams.assembly import FileState, due_to_close

COMPACT = b"z"


def encode_state(state: FileState, compress_level: int = 6) -> bytes:
    """The table value of ``state``: compact once the file is assembled (``compress_level``
    0 keeps every file in the open form)."""
    text = json.dumps(state.to_dict(), ensure_ascii=False, separators=(",", ":")).encode()
    if state.assembled and compress_level > 0:
        return COMPACT + zlib.compress(text, compress_level)
    return text


def decode_state(raw: bytes | str | dict) -> FileState:
    """A table value (either form, or a dict decoded by an older table) as a FileState."""
    if isinstance(raw, dict):
        return FileState.from_dict(raw)
    if isinstance(raw, str):
        raw = raw.encode()
    if raw[:1] == COMPACT:
        raw = zlib.decompress(raw[1:])
    return FileState.from_dict(json.loads(raw))


def is_due(raw: bytes, now: float, idle_timeout_s: float, late_settle_s: float) -> bool:
    """``FileState.due`` of a table value without building its pages: the idle check asks it
    of every open file each minute (bench/bench_state_cache.py measures both)."""
    if is_compact(raw):
        return False                      # assembled
    d = json.loads(raw)
    if d.get("v") != 2:
        return decode_state(d).due(now, idle_timeout_s, late_settle_s)
    return due_to_close(bool(d.get("a")), bool(d.get("p")), int(d.get("r", 1)), d.get("df"),
                        float(d.get("t", 0.0)), now, idle_timeout_s, late_settle_s)


def is_compact(raw: bytes) -> bool:
    """The value is an assembled file's: no idle or settle timer can concern it."""
    return raw[:1] == COMPACT


class StateCache:
    """Decoded file states beside the table, least recently used dropped beyond ``files``
    files or ``pages`` pages in all.

    An entry is valid only while the table still holds the very bytes it was decoded from (a
    recovery, a rebalance or another worker's write replaces them, and the state is decoded
    again): comparing the stored bytes is exact and costs a memcmp, far less than decoding the
    file. Bounded because the table already holds every file of the campaign: an unbounded
    copy would grow the worker with every page, while the files being scanned at any time are
    few; bounded in pages too, because a file's decoded state grows with its pages (a few
    hundred bytes each), so a bound in files alone is none on memory when files are large.
    The newest entry is always kept.
    """

    def __init__(self, files: int, pages: int | None = None) -> None:
        self.size = max(1, files)
        self.max_pages = max(1, pages) if pages is not None else None
        self.pages = 0
        self._entries: OrderedDict[str, tuple[bytes, FileState, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, raw: bytes | None) -> FileState | None:
        hit = self._entries.get(key)
        if hit is None or raw is None or (hit[0] is not raw and hit[0] != raw):
            return None
        self._entries.move_to_end(key)
        return hit[1]

    def put(self, key: str, raw: bytes, state: FileState) -> None:
        old = self._entries.get(key)
        if old is not None:
            self.pages -= old[2]
        n = len(state.pages)
        self._entries[key] = (raw, state, n)
        self._entries.move_to_end(key)
        self.pages += n
        while len(self._entries) > 1 and (
                len(self._entries) > self.size
                or (self.max_pages is not None and self.pages > self.max_pages)):
            self.pages -= self._entries.popitem(last=False)[1][2]

    def clear(self) -> None:
        self._entries.clear()
        self.pages = 0
