"""What a document's new bytes change, page by page: pure logic, no I/O.

A document read again (a rescan, a copy over it, a re-save) is compared page by page with what
the outbox holds of it, by each page's content digest:
- a page whose content is new, or changed, is a PageScanned of the next revision;
- a page whose content is unchanged while the document's bytes changed is a PageScanned of the
  same revision that points at the new bytes (readers verify the document SHA-256, so the old
  reference would no longer read);
- a page index the document no longer has is a PageRemoved;
- a document whose bytes did not change changes nothing.
So a 40-page document rescanned with 41 pages adds one page and revises what differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from producers.layout import PageName
from producers.outbox import KnownPage
from producers.wire import WireEvent, page_scanned
from sohoa.events import PageRemoved, PageScanned, stable_event_id


class PageWrite(NamedTuple):
    """A row of ``doc_pages`` to write (a named tuple: one is built per page read)."""

    page_index: int
    sha256: str
    revision: int
    state: str  # sent | removed


class DocumentRead(NamedTuple):
    """A document as just read: where it is, what it is called, what its bytes are."""

    name: PageName
    document: str       # its identity in the file (name, or name|n for a spelling twin)
    path: str           # root-relative, as spelled on disk
    uri: str
    sha256: str
    size: int
    media_type: str
    page_sha256: tuple[str, ...]


@dataclass
class Changes:
    events: list[WireEvent | PageScanned | PageRemoved]
    pages: list[PageWrite]
    new_revisions: int = 0   # pages new or changed (what "detected" counts)


def document_changes(site_id: str, doc: DocumentRead, stored: dict[int, KnownPage],
                     stored_sha256: str | None, now: datetime | None = None) -> Changes:
    """The events and page rows that take the outbox from ``stored`` to ``doc``."""
    out = Changes([], [])
    n = len(doc.page_sha256)
    for index, digest in enumerate(doc.page_sha256, start=1):
        old = stored.get(index)
        if old is not None and old.state == "sent" and old.sha256 == digest:
            if doc.sha256 == stored_sha256:
                continue  # the same bytes: nothing to say
            revision = old.revision  # same content, new bytes: point at them
        else:
            revision = old.revision + 1 if old is not None else 1
            out.new_revisions += 1
        out.events.append(page_scanned(
            site_id=site_id, fonds=doc.name.fonds, file_code=doc.name.file_code,
            document=doc.document, page_index=index,
            number=doc.name.number, document_pages=n, uri=doc.uri,
            document_sha256=doc.sha256, sha256=digest, size_bytes=doc.size,
            media_type=doc.media_type, revision=revision, path=doc.path, occurred_at=now))
        out.pages.append(PageWrite(index, digest, revision, "sent"))
    for index in sorted(stored):
        old = stored[index]
        if index > n and old.state == "sent":
            out.events.append(page_removed(site_id, doc.name.fonds, doc.name.file_code,
                                           doc.document, old, doc.path))
            out.pages.append(PageWrite(index, old.sha256, old.revision, "removed"))
    return out


def page_removed(site_id: str, fonds: str, file_code: str, document: str, page: KnownPage,
                 path: str) -> PageRemoved:
    return PageRemoved(
        event_id=stable_event_id("PageRemoved", 2, site_id, fonds, file_code, document,
                                 page.page_index, page.sha256, page.revision),
        site_id=site_id, fonds=fonds, file_code=file_code, document=document,
        page_index=page.page_index, sha256=page.sha256, path=path)
