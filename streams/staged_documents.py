"""A document of the object store downloaded once for all the QC chunks that check it.

QC checks a long document's pages in chunks, in a spawn process pool (streams/qc_task.py).
Each chunk reading the object by itself meant one full download (and SHA-256 check) of the
whole document per chunk: a 300-page PDF checked 16 pages at a time came over the network 19
times. Here the OCR worker's own process downloads it once (:meth:`PageSources.stage_object`:
the same confinement, size cap, timeout and SHA-256 proof as every other read), into a private
file named after that SHA-256, and the chunks open that file instead.

What holds:

- a staged file exists under its name only once its bytes matched the SHA-256 its key names
  (written under a temporary name in a private directory of its own, renamed after the
  proof), and a chunk opens it only when
  its name is the SHA-256 of the URI the chunk was given: never served for another document;
- it lives while its document's chunks run, and is deleted when the last one ends, whatever
  the outcome (a classified file's scan included: the centre keeps no page bytes beyond that);
  the staging directory is inside the worker's scratch space, emptied at every start
  (``FileProcessor.clean_scratch``), so a killed worker leaves none behind for long;
- disk is bounded: at most ``qc.staged_documents`` documents staged at once, each at most
  ``sources.max_bytes``; the next document waits for a slot;
- a document of one chunk, a ``file://`` page, or a staging that fails (store down, refused,
  mismatch) is read by the chunks themselves as before, so every failure is judged exactly as
  it was (a store outage still makes QC wait rather than judge).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from streams.sources import PageSources, SourceError, SourceRefused, VerifiedFile

log = logging.getLogger(__name__)

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


class StagedDocuments:
    """The OCR worker's staging of object-store documents for the QC pool."""

    def __init__(self, sources: PageSources, directory: Path, slots: int) -> None:
        self.sources = sources
        self.directory = directory
        self._slots = asyncio.Semaphore(max(1, slots))

    @asynccontextmanager
    async def document(self, site_id: str, uri: str) -> AsyncIterator[str | None]:
        """The path of ``uri``'s staged copy while the context is open; None when it is not
        an object or could not be staged (the chunks then read it themselves)."""
        if not uri.startswith("s3:"):
            yield None
            return
        async with self._slots:
            loop = asyncio.get_running_loop()
            try:
                path = await loop.run_in_executor(None, self._stage, site_id, uri)
            except SourceError as exc:
                log.info("document not staged; each QC chunk reads it", extra={
                    "site_id": site_id, "uri": uri, "error": str(exc)[:300]})
                path = None
            try:
                yield path
            finally:
                if path is not None:
                    shutil.rmtree(os.path.dirname(path), ignore_errors=True)

    def _stage(self, site_id: str, uri: str) -> str:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)
        return self.sources.stage_object(site_id, uri, str(self.directory))


def open_staged(sources: PageSources, site_id: str, uri: str, path: str) -> VerifiedFile:
    """The staged copy of ``uri`` at ``path``, opened without following a link (the caller
    closes it); refused when the file's name is not the SHA-256 the URI names,
    FileNotFoundError once it is gone."""
    _bucket, _key, sha256 = sources.locate_object(site_id, uri)
    if os.path.basename(path) != sha256:
        raise SourceRefused("staged copy of another document")
    fd = os.open(path, _OPEN_FLAGS)
    return VerifiedFile(os.fdopen(fd, "rb"), f"/proc/self/fd/{fd}", os.fstat(fd).st_size)
