"""Helpers for the streams tests: per-test topics/app ids/ports, sending site events with
kafka-python, reading the file-events and dead-letter topics."""

from __future__ import annotations

import hashlib
import json
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


def send(stack, topic: str, events: list[Event | tuple[str, bytes]]) -> None:
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


def page_event(site: str, file_code: str, page_no: int, path: Path, fonds: str = "UBND",
               revision: int = 1) -> PageScanned:
    data = path.read_bytes()
    suffix = path.suffix.lower()
    media = {".tif": "image/tiff", ".tiff": "image/tiff", ".jpg": "image/jpeg",
             ".jpeg": "image/jpeg", ".png": "image/png", ".pdf": "application/pdf"}.get(
                 suffix, "application/octet-stream")
    return PageScanned.make(
        site_id=site, fonds=fonds, file_code=file_code, page_no=page_no,
        uri=path.resolve().as_uri(), sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=max(1, len(data)), media_type=media, revision=revision,
        path=f"{fonds}/{file_code}/{path.name}")


def fake_page(site: str, file_code: str, page_no: int, content: str | None = None,
              revision: int = 1) -> PageScanned:
    """A page event whose bytes are never read (assembly-only tests)."""
    sha = hashlib.sha256((content or f"{site}/{file_code}/{page_no}").encode()).hexdigest()
    return PageScanned.make(
        site_id=site, fonds="UBND", file_code=file_code, page_no=page_no,
        uri=f"file:///nonexistent/{file_code}/{page_no:03d}.tif", sha256=sha, size_bytes=1000,
        media_type="image/tiff", revision=revision, path=f"UBND/{file_code}/{page_no:03d}.tif")


def manifest(site: str, file_code: str, expected: int | None, **kw) -> FileManifest:
    return FileManifest(site_id=site, fonds="UBND", file_code=file_code,
                        expected_pages=expected, **kw)


def closed(site: str, file_code: str) -> FileClosed:
    return FileClosed(site_id=site, fonds="UBND", file_code=file_code)
