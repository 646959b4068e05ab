"""Helpers for the site agent's tests: tiny valid pages, an agent environment, reading topics."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from PIL import Image

from sohoa.events import Event, parse_event
from sohoa.kafka_clients import make_consumer


def tiny_image(fmt: str = "PNG", seed: int = 0, size: tuple[int, int] = (8, 8)) -> bytes:
    """A small, valid image whose bytes differ with ``seed`` (so each page has its own hash)."""
    im = Image.new("RGB", size, ((seed * 37) % 256, (seed // 256) % 256, seed % 251))
    im.putpixel((0, 0), (seed % 256, (seed >> 8) % 256, (seed >> 16) % 256))
    buf = io.BytesIO()
    kwargs = {"compression": "raw"} if fmt == "TIFF" else {}
    im.save(buf, fmt, dpi=(200, 200), **kwargs)
    return buf.getvalue()


def write_atomic(path: Path, data: bytes) -> None:
    """Write under a temp name and rename, as a scanner's software does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def agent_env(stack, tmp_path: Path, site: str = "xa-test", **extra: str) -> dict[str, str]:
    topics = stack.new_topics()
    hot = tmp_path / "hot"
    hot.mkdir(exist_ok=True)
    env = {
        **stack.env,
        "SOHOA_TOPICS__SITE_EVENTS": topics.site_events,
        "SOHOA_TOPICS__FILE_EVENTS": topics.file_events,
        "SOHOA_TOPICS__DEAD_LETTERS": topics.dead_letters,
        "SOHOA_WATCHER__SITE_ID": site,
        "SOHOA_WATCHER__ROOTS": json.dumps([str(hot)]),
        "SOHOA_WATCHER__OUTBOX_PATH": str(tmp_path / "outbox" / "outbox.sqlite3"),
        "SOHOA_WATCHER__STABILITY_WINDOW_S": "0.5",
        "SOHOA_WATCHER__HEARTBEAT_INTERVAL_S": "2",
        "SOHOA_WATCHER__ONCE_TIMEOUT_S": "30",
        "SOHOA_LOGGING__LEVEL": "INFO",
    }
    env.update(extra)
    return env


def hot(env: dict[str, str]) -> Path:
    return Path(json.loads(env["SOHOA_WATCHER__ROOTS"])[0])


def read_topic(stack, topic: str, timeout_ms: int = 3000) -> list[Event]:
    """Every event on ``topic`` from the beginning (stops after ``timeout_ms`` without news)."""
    consumer = make_consumer(stack.settings.kafka, topic, group_id=None,
                             consumer_timeout_ms=timeout_ms)
    try:
        return [parse_event(m.value) for m in consumer]
    finally:
        consumer.close()


def of_type(events: list[Event], name: str) -> list:
    return [e for e in events if name == e.NAME]
