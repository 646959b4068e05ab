"""Helpers for the streams tests: per-test topics/app ids/ports, sending site events with
kafka-python, reading the file-events and dead-letter topics."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from infra.stack import run_env
from sohoa.events import (
    Event,
    FileClosed,
    FileManifest,
    PageScanned,
    parse_event,
)
from sohoa.kafka_clients import make_consumer, make_producer


def streams_env(stack, tmp_path: Path, ocr: bool = False, **extra: str) -> dict[str, str]:
    """The test's pages live under ``tmp_path``: the only folder its workers may read."""
    topics = stack.new_topics()
    env = {
        **stack.env,
        **run_env("t", tmp_path, ocr=ocr),
        "SOHOA_LOGGING__JSON": "true",
        "SOHOA_TOPICS__SITE_EVENTS": topics.site_events,
        "SOHOA_TOPICS__FILE_EVENTS": topics.file_events,
        "SOHOA_TOPICS__DEAD_LETTERS": topics.dead_letters,
        "SOHOA_STREAMS__COMMIT_INTERVAL_S": "0.5",
        "SOHOA_SOURCES__DEFAULT_ROOTS": json.dumps([str(tmp_path)]),
    }
    env.update(extra)
    return env


def pipeline_env(stack, tmp_path: Path, tag: str, site: str, *, ocr: bool = False,
                 **extra: str) -> dict[str, str]:
    """The environment of one whole run (agent, both Faust apps, consumer, CLI) on its own
    topics and database; the agent watches ``tmp_path/hot`` and keeps its outbox beside it."""
    topics = stack.new_topics()
    hot = tmp_path / "hot"
    hot.mkdir(exist_ok=True)
    env = {
        **stack.env,
        **run_env(tag, tmp_path, ocr=ocr),
        "SOHOA_LOGGING__JSON": "true",
        "SOHOA_TOPICS__SITE_EVENTS": topics.site_events,
        "SOHOA_TOPICS__FILE_EVENTS": topics.file_events,
        "SOHOA_TOPICS__DEAD_LETTERS": topics.dead_letters,
        "SOHOA_POSTGRES__DSN": stack.new_database(tag),
        "SOHOA_WATCHER__SITE_ID": site,
        "SOHOA_WATCHER__ROOTS": json.dumps([str(hot)]),
        "SOHOA_WATCHER__OUTBOX_PATH": str(tmp_path / "outbox.sqlite3"),
        "SOHOA_WATCHER__STABILITY_WINDOW_S": "0.5",
        "SOHOA_WATCHER__HEARTBEAT_INTERVAL_S": "2",
    }
    env.update(extra)
    return env


def send(stack, topic: str, events: Sequence[Event | tuple[str, bytes]]) -> None:
    producer = make_producer(stack.settings.kafka)
    try:
        for ev in events:
            if isinstance(ev, tuple):
                producer.send(topic, key=ev[0], value=ev[1])
            else:
                producer.send(topic, key=ev.key(), value=ev.to_json())
        producer.flush(30)
    finally:
        producer.close()


def read_all(stack, topic: str, timeout_ms: int = 1500) -> list[Event]:
    consumer = make_consumer(stack.settings.kafka, topic, group_id=None,
                             consumer_timeout_ms=timeout_ms)
    try:
        return [parse_event(m.value) for m in consumer]
    finally:
        consumer.close()


def page_event(site: str, file_code: str, page_no: int | None, path: Path,
               fonds: str = "UBND", revision: int = 1, page_index: int = 1,
               document_pages: int = 1, page_sha256: str | None = None) -> PageScanned:
    """The PageScanned the agent would send for ``path`` (one page of it: a multi-page
    document's page needs its content digest, ``page_sha256``)."""
    data = path.read_bytes()
    suffix = path.suffix.lower()
    media = {".tif": "image/tiff", ".tiff": "image/tiff", ".jpg": "image/jpeg",
             ".jpeg": "image/jpeg", ".png": "image/png", ".pdf": "application/pdf"}.get(
                 suffix, "application/octet-stream")
    doc_sha = hashlib.sha256(data).hexdigest()
    if page_sha256 is None:  # the page's content digest, as the agent computes it
        from sohoa.documents import DocumentRejected, inspect_document

        try:
            with path.open("rb") as fh:
                page_sha256 = inspect_document(fh, len(data)).page_sha256[page_index - 1]
        except (DocumentRejected, IndexError):
            page_sha256 = doc_sha  # a broken input: the agent would not have sent it
    return PageScanned.make(
        site_id=site, fonds=fonds, file_code=file_code, document=path.name,
        page_index=page_index, number=page_no,
        document_pages=document_pages, uri=path.resolve().as_uri(), document_sha256=doc_sha,
        sha256=page_sha256, size_bytes=max(1, len(data)), media_type=media,
        revision=revision, path=f"{fonds}/{file_code}/{path.name}")


def document_events(site: str, file_code: str, path: Path, fonds: str = "UBND",
                    number: int | None = None, revision: int = 1) -> list[PageScanned]:
    """Every PageScanned the agent would send for the document ``path``: its pages counted
    and digested as the agent does (sohoa.documents)."""
    from sohoa.documents import inspect_document

    with path.open("rb") as fh:
        facts = inspect_document(fh, path.stat().st_size)
    n = len(facts.page_sha256)
    return [PageScanned.make(
        site_id=site, fonds=fonds, file_code=file_code, document=path.name, page_index=i,
        number=number, document_pages=n, uri=path.resolve().as_uri(),
        document_sha256=facts.sha256, sha256=digest, size_bytes=path.stat().st_size,
        media_type=facts.media_type, revision=revision, path=f"{fonds}/{file_code}/{path.name}")
        for i, digest in enumerate(facts.page_sha256, start=1)]


def fake_page(site: str, file_code: str, page_no: int, content: str | None = None,
              revision: int = 1, *, document: str | None = None, page_index: int = 1,
              document_pages: int = 1, fonds: str = "UBND") -> PageScanned:
    """A page event whose bytes are never read (assembly-only tests): by default the
    single-page document ``NNN.tif`` claiming ``page_no``."""
    sha = hashlib.sha256((content or f"{site}/{file_code}/{page_no}/{document}/{page_index}")
                         .encode()).hexdigest()
    document = document or f"{page_no:03d}.tif"
    return PageScanned.make(
        site_id=site, fonds=fonds, file_code=file_code, document=document,
        page_index=page_index, number=page_no if document_pages == 1 else None,
        document_pages=document_pages, uri=f"file:///nonexistent/{file_code}/{document}",
        document_sha256=hashlib.sha256(f"doc/{document}/{content}".encode()).hexdigest(),
        sha256=sha, size_bytes=1000, media_type="image/tiff", revision=revision,
        path=f"{fonds}/{file_code}/{document}")


def manifest(site: str, file_code: str, expected: int | None, fonds: str = "UBND",
             **kw) -> FileManifest:
    return FileManifest(site_id=site, fonds=fonds, file_code=file_code,
                        expected_pages=expected, **kw)


def closed(site: str, file_code: str, fonds: str = "UBND") -> FileClosed:
    return FileClosed(site_id=site, fonds=fonds, file_code=file_code)


def assembled_from_store(site: str, file_code: str, sha: str, size: int,
                         bucket: str = "sohoa-pages"):
    """A one-page file whose page (``001.png``) is in the object store at its content address,
    folded by the assembly's own FileState and closed: (the state, its FileAssembled)."""
    from sohoa.objectstore import page_uri
    from streams.assembly import FileState

    scanned = PageScanned.make(
        site_id=site, fonds="UBND", file_code=file_code, document="001.png", page_index=1,
        number=1, document_pages=1, uri=page_uri(bucket, site, sha), document_sha256=sha,
        sha256=sha, size_bytes=size, media_type="image/png",
        path=f"UBND/{file_code}/001.png")
    state = FileState(site, file_code)
    state.apply(scanned, 1000.0)
    _changed, fa = state.apply(closed(site, file_code), 1000.0)
    assert fa is not None
    return state, fa
