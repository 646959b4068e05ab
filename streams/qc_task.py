"""The QC pool's unit of work: some pages of one document, read once, checked one by one.

Runs in the OCR app's spawn process pool. The document is opened only where the event's site
may point (:class:`streams.sources.PageSources`), then each page is decoded and measured in
turn (:func:`streams.qc.check_document_pages`), so memory holds one page at a time whatever the
document's size. Each page is proven by its own content digest, so a chunk of a 500-page
document need not hash the whole file again. A document from the object store is downloaded
once for all its chunks (streams/staged_documents.py), not once per chunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from sohoa.config import QcConfig
from streams.qc import PageQc, check_document_pages, unreadable
from streams.sources import PageSources, SourceError, SourceUnavailable, VerifiedFile
from streams.staged_documents import open_staged


@dataclass(frozen=True)
class ChunkQc:
    """A chunk's results, and the object keys it had to read from an older version because
    their latest was not the document (counted by the parent, which exports the metrics)."""

    pages: list[PageQc]
    tampered: tuple[str, ...] = ()


def check_chunk_reporting(site_id: str, uri: str, media_type: str,
                          pages: list[tuple[int, str]], qc: QcConfig, sources: PageSources,
                          staged: str | None = None) -> ChunkQc:
    """:func:`check_chunk`, with what its reads found tampered with."""
    results = check_chunk(site_id, uri, media_type, pages, qc, sources, staged)
    return ChunkQc(results, tuple(sources.take_tampered()))


def check_chunk(site_id: str, uri: str, media_type: str, pages: list[tuple[int, str]],
                qc: QcConfig, sources: PageSources, staged: str | None = None
                ) -> list[PageQc]:
    """One result per page of ``pages`` ([(page_index, page digest)]), in order: its checks,
    whether it passed, and its physical size in millimetres when known. ``staged``: the
    document's copy already downloaded and proven for all its chunks
    (streams/staged_documents.py); read from the store when None or gone."""
    try:
        with _open(site_id, uri, sources, staged) as doc:
            return check_document_pages(doc.path, media_type, pages, qc)
    except SourceUnavailable:
        raise  # not the page's fault: the caller reads it again later
    except SourceError as exc:  # refused or unreadable: every page says so, and no more
        return [unreadable(i, str(exc)[:300]) for i, _ in pages]


@contextmanager
def _open(site_id: str, uri: str, sources: PageSources, staged: str | None
          ) -> Iterator[VerifiedFile]:
    doc = None
    if staged is not None:
        with suppress(FileNotFoundError):  # its document's check was cut short meanwhile
            doc = open_staged(sources, site_id, uri, staged)
    if doc is None:
        with sources.open_confined(site_id, uri) as doc:
            yield doc
        return
    try:
        yield doc
    finally:
        doc.file.close()
