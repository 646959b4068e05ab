"""Is this file a complete document? Structure, truncation, page count and hashes, off the
event loop.

The reading itself is :func:`sohoa.documents.inspect_document` (headers and structure, never
pixels; the hashes are the one full read); this module adds what the agent needs around it:
the size limit, the stability proof (the file is still the one first seen) and the outcome
per file of a batch. Originals are opened read-only and never written.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from sohoa.documents import DocumentRejected, inspect_document

# A file that is not a countable document; ``reason`` is the metric label.
Rejected = DocumentRejected


class Changed(Exception):
    """The file changed while it was read: it is not stable yet."""


@dataclass(frozen=True, slots=True)
class PageFacts:
    sha256: str                    # of the whole file
    size: int
    mtime_ns: int
    media_type: str
    page_sha256: tuple[str, ...]   # each page's content digest (sohoa.documents); len = pages


def inspect_page(path: Path, size: int, mtime_ns: int, max_bytes: int) -> PageFacts:
    """Check, count and hash one document that looked stable at (size, mtime_ns)."""
    if size == 0:
        raise Rejected("empty", "file is empty (0 bytes)")
    if size > max_bytes:
        raise Rejected("too_large", f"file is {size} bytes, over the limit of {max_bytes}")
    try:
        with open(path, "rb") as f:
            facts = inspect_document(f, size)
    except Rejected:
        # Rejected on what may be a half-written file: a file that changed meanwhile is not
        # stable yet, not corrupt.
        _still_as_seen(path, size, mtime_ns)
        raise
    except PermissionError as exc:
        raise Rejected("unreadable", f"cannot read: {exc.strerror}") from None
    except FileNotFoundError:
        raise Changed() from None
    except OSError as exc:
        raise Rejected("unreadable", f"read error: {exc.strerror or 'I/O error'}") from None
    _still_as_seen(path, size, mtime_ns)  # changed while it was hashed: not stable yet
    return PageFacts(sha256=facts.sha256, size=size, mtime_ns=mtime_ns,
                     media_type=facts.media_type, page_sha256=facts.page_sha256)


def inspect_settled(items: list[tuple[Path, int, int]], max_bytes: int,
                    ) -> list[PageFacts | BaseException]:
    """Check a batch of pages whose stability window has passed, one result per item.

    The window's closing stat is taken here, off the event loop: a page whose size or mtime
    moved since it was first seen is :class:`Changed` (not stable yet) and is not read.
    """
    out: list[PageFacts | BaseException] = []
    for path, size, mtime_ns in items:
        try:
            _still_as_seen(path, size, mtime_ns)
            out.append(inspect_page(path, size, mtime_ns, max_bytes))
        except Exception as exc:  # each page's outcome is reported on its own
            out.append(exc)
    return out


def _still_as_seen(path: Path, size: int, mtime_ns: int) -> None:
    """Raise :class:`Changed` unless ``path`` is still the regular file first seen at
    (size, mtime_ns); a file gone is a change too, an unstattable one is rejected."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        raise Changed() from None
    except OSError as exc:
        raise Rejected("unreadable", f"cannot stat: {exc.strerror or exc.__class__.__name__}"
                       ) from None
    if not stat.S_ISREG(st.st_mode) or st.st_size != size or st.st_mtime_ns != mtime_ns:
        raise Changed()
