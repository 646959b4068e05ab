"""Helpers for the site agent's tests: tiny valid pages, an agent environment, reading topics."""

from __future__ import annotations

import asyncio
import io
import json
import os
from pathlib import Path

from PIL import Image

from sohoa.events import Event, parse_event


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
    """Every event on ``topic``, from the beginning up to its end offsets at the time of the call.

    aiokafka, not kafka-python: kafka-python 3.0.12's consumer iterator was seen to block forever
    in its fetcher (an ``Event.wait()`` without timeout) on a topic with a few thousand records.
    Reading up to the end offsets also makes the result exact instead of timeout-dependent.
    """
    return asyncio.run(_read_topic(stack.settings.kafka, topic, timeout_ms / 1000))


async def _read_topic(cfg, topic: str, timeout_s: float) -> list[Event]:
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaError

    consumer = AIOKafkaConsumer(bootstrap_servers=cfg.bootstrap, enable_auto_commit=False,
                                isolation_level="read_committed", group_id=None)
    await consumer.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        parts = None
        while not parts and loop.time() < deadline:
            try:
                cluster = await consumer._client.fetch_all_metadata()  # no public call for this
            except KafkaError:
                # A broker just resumed (SIGCONT) may not answer its first request in time.
                await asyncio.sleep(0.2)
                continue
            parts = cluster.partitions_for_topic(topic)
            if not parts:
                await asyncio.sleep(0.2)
        tps = [TopicPartition(topic, p) for p in sorted(parts or ())]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[Event] = []
        deadline = loop.time() + max(timeout_s, 1.0) + 60
        while True:
            positions = [await consumer.position(tp) for tp in tps]
            if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                break
            if loop.time() > deadline:
                raise TimeoutError(f"could not read {topic} to its end offsets")
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for msgs in batch.values():
                out.extend(parse_event(m.value) for m in msgs)
        return out
    finally:
        await consumer.stop()


def of_type(events: list[Event], name: str) -> list:
    return [e for e in events if name == e.NAME]


# reason -> root-relative paths of the bad inputs that :func:`make_bad_inputs` creates
BAD_EXPECTED = {
    "empty": ["F/HS-1/010.png"],
    "corrupt": ["F/HS-1/011.png", "F/HS-1/012.jpg", "F/HS-1/013.tif", "F/HS-1/014.pdf"],
    "not_image": ["F/HS-1/ghi chu.docx", "F/HS-1/015.jpg"],
    "outside_file": ["F/020.png", "021.png"],
    "too_large": ["F/HS-1/016.tif"],
    "unreadable": ["F/HS-1/017.png"],
    "symlink": ["F/HS-1/018.png", "F/HS-LINK"],  # a linked folder is reported, not entered
    "bad_name": ["F/HS-1/con/019.png", "F/HS-1/b\x07ia.png"],
}
LITTER = ["F/HS-1/Thumbs.db", "F/HS-1/.DS_Store", "F/HS-1/desktop.ini", "F/HS-1/~$bien ban.docx"]
MAX_BYTES_FOR_BAD = 4000


def make_bad_inputs(root: Path, outside: Path) -> dict[str, bytes]:
    """Every kind of bad input next to two good pages; returns the good pages' bytes by path.

    Run the agent with ``watcher.max_file_bytes = MAX_BYTES_FOR_BAD``.
    """
    folder = root / "F" / "HS-1"
    folder.mkdir(parents=True)
    # A name with no number (a cover) is a document all the same; one holding a control
    # character is not a name the pipeline can carry.
    good = {"F/HS-1/001.png": tiny_image("PNG", 1), "F/HS-1/002.PNG": tiny_image("PNG", 2),
            "F/HS-1/bia.png": tiny_image("PNG", 12)}
    for rel, data in good.items():
        (root / rel).write_bytes(data)
    (folder / "010.png").write_bytes(b"")
    (folder / "011.png").write_bytes(tiny_image("PNG", 3)[:-20])
    jpeg = tiny_image("JPEG", 4)
    (folder / "012.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    tif = tiny_image("TIFF", 5, size=(32, 32))
    (folder / "013.tif").write_bytes(tif[: len(tif) // 2])
    (folder / "014.pdf").write_bytes(b"%PDF-1.7\n1 0 obj << >> endobj\n")
    (folder / "ghi chu.docx").write_bytes(b"PK\x03\x04 not a page")
    (folder / "015.jpg").write_bytes(b"this is text, not a JPEG")
    (root / "F" / "020.png").write_bytes(tiny_image("PNG", 6))
    (root / "021.png").write_bytes(tiny_image("PNG", 7))
    big = tiny_image("TIFF", 8, size=(64, 64))
    assert len(big) > MAX_BYTES_FOR_BAD
    (folder / "016.tif").write_bytes(big)
    locked = folder / "017.png"
    locked.write_bytes(tiny_image("PNG", 9))
    locked.chmod(0)
    outside.mkdir(parents=True, exist_ok=True)
    (outside / "secret.png").write_bytes(tiny_image("PNG", 10))
    (outside / "099.png").write_bytes(tiny_image("PNG", 11))
    (folder / "018.png").symlink_to(outside / "secret.png")
    (root / "F" / "HS-LINK").symlink_to(outside, target_is_directory=True)
    (folder / "b\x07ia.png").write_bytes(tiny_image("PNG", 14))
    (folder / "con").mkdir()
    (folder / "con" / "019.png").write_bytes(tiny_image("PNG", 13))
    for rel in LITTER:
        (root / rel).write_bytes(b"litter")
    return good


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """(size, mtime_ns, mode) of every entry under root, links not followed: proves no rewrite."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[p.relative_to(root).as_posix()] = (st.st_size, st.st_mtime_ns, st.st_mode)
    return out
