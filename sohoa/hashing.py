"""The SHA-256 of a whole file, the one way every package computes it.

Kernel module: only the standard library. Reads that must also enforce something while the
bytes go by (a size cap, a confined or no-follow open, per-page digests, an upload) hash in
their own loop: they are not this.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 20


def file_sha256(source: Path | bytes) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks (or of ``source`` itself when it
    is the bytes)."""
    if isinstance(source, bytes):
        return hashlib.sha256(source).hexdigest()
    h = hashlib.sha256()
    with open(source, "rb") as f:
        buf = bytearray(_CHUNK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()
