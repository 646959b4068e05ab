"""Unit tests of the agent's parts that need no broker: layout, page checks, manifests, outbox."""

from __future__ import annotations

import hashlib
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from producers.layout import Layout, LayoutError, NameMismatch
from producers.manifest import manifest_event
from producers.outbox import Outbox, enqueue
from producers.pagecheck import Changed, Rejected, inspect_page
from sohoa.events import PageScanned
from tests.support.watch_helpers import tiny_image


def test_layout_default_and_page_numbers() -> None:
    lay = Layout("{fonds}/{file}/{page}")
    n = lay.parse(("UBND xã", "HS 2024 001", "trang 007.TIF"))
    assert (n.fonds, n.file_code, n.document, n.number, n.file_dir) == (
        "UBND xã", "HS 2024 001", "trang 007.TIF", 7, "UBND xã/HS 2024 001")
    nfd = unicodedata.normalize("NFD", "Hồ sơ")
    parsed = lay.parse(("F", nfd, "1.png"))
    assert parsed.file_code == unicodedata.normalize("NFC", "Hồ sơ")
    assert parsed.file_dir == f"F/{nfd}", "the folder keeps its spelling on disk"
    # A document need not claim a page number: a cover, a decision as one multi-page PDF.
    cover = lay.parse(("F", "HS", "bia.png"))
    assert (cover.document, cover.number) == ("bia.png", None)
    assert lay.parse(("F", "HS", "QD-15-UBND.pdf")).number is None
    with pytest.raises(NameMismatch) as e:
        lay.parse(("F", "001.png"))
    assert e.value.reason == "outside_file"
    with pytest.raises(NameMismatch) as e:
        lay.parse(("F", "HS", "x", "1.png"))
    assert e.value.reason == "bad_name"
    for bad in (("F", "HS", "a\nb.png"), ("F", "H\x07S", "1.png"), ("F", "HS", "\udcff.png")):
        with pytest.raises(NameMismatch) as e:
            lay.parse(bad)
        assert e.value.reason == "bad_name"


def test_layout_custom_patterns() -> None:
    lay = Layout("{fonds}/HS-{file}/p{page}")
    n = lay.parse(("P01", "HS-77", "p12.jpg"))
    assert (n.fonds, n.file_code, n.number) == ("P01", "77", 12)
    with pytest.raises(NameMismatch):
        lay.parse(("P01", "77", "p12.jpg"))
    flat = Layout("{file}/{page}")
    assert flat.parse(("HS1", "003.png")).fonds == ""
    assert flat.parse_file_dir(("HS1",)) == ("", "HS1")
    for bad in ("{fonds}/{page}", "{file}", "{file}/{page}/{fonds}", "{file}/{file}/{page}"):
        with pytest.raises(LayoutError):
            Layout(bad)


def _check(path: Path, data: bytes, limit: int = 1 << 30):
    path.write_bytes(data)
    st = path.stat()
    return inspect_page(path, st.st_size, st.st_mtime_ns, limit)


@pytest.mark.parametrize("fmt,media", [("PNG", "image/png"), ("JPEG", "image/jpeg"),
                                       ("TIFF", "image/tiff")])
def test_valid_images_hash_and_media_type(tmp_path: Path, fmt: str, media: str) -> None:
    data = tiny_image(fmt, 3, size=(40, 30))
    facts = _check(tmp_path / "1.img", data)
    assert facts.media_type == media and facts.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF"])
def test_truncated_images_are_corrupt(tmp_path: Path, fmt: str) -> None:
    data = tiny_image(fmt, 3, size=(40, 30))
    for cut in (len(data) // 3, len(data) - 10):
        with pytest.raises(Rejected) as e:
            _check(tmp_path / "1.img", data[:cut])
        assert e.value.reason == "corrupt", (fmt, cut)


def test_pdf_complete_and_truncated(tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (20, 20), "white").save(tmp_path / "a.pdf")
    data = (tmp_path / "a.pdf").read_bytes()
    assert _check(tmp_path / "b.pdf", data).media_type == "application/pdf"
    with pytest.raises(Rejected) as e:
        _check(tmp_path / "c.pdf", data[: len(data) // 2])
    assert e.value.reason == "corrupt"


def test_empty_too_large_and_not_image(tmp_path: Path) -> None:
    gif = tiny_image("GIF", 1)
    for data, limit, reason in ((b"", 100, "empty"), (tiny_image("PNG", 1), 10, "too_large"),
                                (b"hello world, plain text", 1000, "not_image"),
                                (gif, 1000, "not_image")):  # an image, but not a scan format
        with pytest.raises(Rejected) as e:
            _check(tmp_path / "x.png", data, limit)
        assert e.value.reason == reason


def test_file_changed_while_read_is_not_stable(tmp_path: Path) -> None:
    p = tmp_path / "1.png"
    p.write_bytes(tiny_image("PNG", 1))
    st = p.stat()
    p.write_bytes(tiny_image("PNG", 2, size=(9, 9)))
    with pytest.raises(Changed):
        inspect_page(p, st.st_size, st.st_mtime_ns, 1 << 20)


def test_multipage_documents_are_counted_with_a_digest_per_page(tmp_path: Path) -> None:
    from tests.support import pages

    tif = pages.multipage_tiff(tmp_path / "m.tif", [pages.PageSpec(seed=s) for s in range(3)])
    st = tif.stat()
    facts = inspect_page(tif, st.st_size, st.st_mtime_ns, 1 << 30)
    assert facts.media_type == "image/tiff" and len(facts.page_sha256) == 3
    assert facts.sha256 == hashlib.sha256(tif.read_bytes()).hexdigest()
    png = _check(tmp_path / "1.png", tiny_image("PNG", 3))
    assert png.page_sha256 == (png.sha256,)


def test_a_half_written_file_that_moved_is_not_stable_rather_than_corrupt(
        tmp_path: Path) -> None:
    """Cut short as a writer leaves it mid-copy, and changed since it was first seen: the
    agent waits for it instead of reporting it corrupt."""
    p = tmp_path / "1.jpg"
    p.write_bytes(tiny_image("JPEG", 3, size=(40, 30))[:200])
    st = p.stat()
    with pytest.raises(Changed):
        inspect_page(p, st.st_size, st.st_mtime_ns - 1, 1 << 20)


def test_manifest_validation_names_the_field() -> None:
    ev = manifest_event('{"title": "Hồ sơ", "expected_pages": 3, "so_to": 4}'.encode(),
                        "xa-a", "F", "HS")
    assert ev.expected_pages == 3 and ev.metadata == {"so_to": "4"}
    again = manifest_event('{"title": "Hồ sơ", "expected_pages": 3, "so_to": 4}'.encode(),
                           "xa-a", "F", "HS")
    assert again.event_id == ev.event_id, "same manifest, same fact, same id"
    secret = manifest_event('{"title": "T", "classification": "top_secret", "expected_pages": 2,'
                            ' "trich_yeu": "Nội dung mật", "documents": ["1.tif", "2.tif"]}'
                            .encode(), "xa-a", "F", "HS")
    # A classified file: only what counting needs leaves the site.
    assert secret.title is None and secret.metadata == {}
    assert "Nội dung mật" not in secret.model_dump_json()
    assert (secret.expected_pages, [d.name for d in secret.documents]) == (2, ["1.tif", "2.tif"])
    listed = manifest_event(b'{"documents": ["bia.jpg", {"name": "QD-15.pdf", "pages": 30, '
                            b'"language": "vie+fra"}]}', "xa-a", "F", "HS")
    assert [(d.name, d.pages, d.language) for d in listed.documents] == [
        ("bia.jpg", None, None), ("QD-15.pdf", 30, "vie+fra")]
    for raw, field in ((b'{"expected_pages": 0}', "expected_pages"),
                       (b'{"classification": "bi mat"}', "classification"),
                       (b'{"priority": 12}', "priority"),
                       (b'{"nested": {"a": 1}}', "nested"),
                       (b'{"documents": ["a.tif", "a.tif"]}', "listed twice"),
                       (b'{"documents": [{"name": "x/y.tif"}]}', "documents.0.name"),
                       (b"[1, 2]", "JSON object"), (b"{oops", "JSON")):
        with pytest.raises(ValueError) as e:
            manifest_event(raw, "xa-a", "F", "HS")
        assert field in str(e.value)


def test_outbox_depth_order_and_mark_sent(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite3")
    evs = [PageScanned.make(site_id="xa-a", file_code="HS", document=f"{i}.png", number=i,
                            uri=f"file:///x/{i}", sha256="a" * 64, size_bytes=1,
                            media_type="image/png")
           for i in (1, 2, 3)]
    with ob.transaction() as db:
        for e in evs:
            enqueue(db, "site_events", e)
    assert ob.depth()[0] == 3
    rows = ob.unsent(0, 10)
    assert [r.event_id for r in rows] == [e.event_id for e in evs]
    assert rows[0].value == evs[0].to_json() and rows[0].key == "xa-a//HS"
    ob.mark_sent([rows[0].seq])
    other = Outbox(tmp_path / "o.sqlite3")  # a second connection (the sender's) sees it
    assert other.depth()[0] == 2
    assert [r.seq for r in other.unsent(rows[0].seq, 10)] == [rows[1].seq, rows[2].seq]


def _agent(tmp_path: Path, root: Path, **kw):
    from producers.agent import Agent
    from producers.metrics import AgentMetrics
    from sohoa.config import Settings, WatcherConfig

    cfg = WatcherConfig(site_id="xa-u", roots=[root], stability_window_s=0.1,
                        outbox_path=tmp_path / "ob" / "outbox.sqlite3", **kw)
    return Agent(Settings(watcher=cfg), AgentMetrics("xa-u"))


def _queued(agent, etype: str) -> list[dict]:
    import json

    return [json.loads(v) for (v,) in agent.ob.db.execute(
        "SELECT value FROM outbox WHERE etype = ? ORDER BY seq", (etype,))]


def test_idle_file_is_closed_once(tmp_path: Path) -> None:
    import time

    root = tmp_path / "hot"
    (root / "F" / "HS").mkdir(parents=True)
    (root / "F" / "HS" / "1.png").write_bytes(tiny_image("PNG", 1))
    a = _agent(tmp_path, root, idle_timeout_s=1.0)
    a.run(once=True)
    assert _queued(a, "FileClosed") == []
    time.sleep(1.2)
    a.run(once=True)
    closed = _queued(a, "FileClosed")
    assert [(c["file_code"], c["reason"], c["pages_seen"]) for c in closed] == [("HS", "idle", 1)]
    a.run(once=True)
    assert len(_queued(a, "FileClosed")) == 1
    a.close()


def test_empty_root_is_not_every_page_deleted(tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "hot"
    (root / "F" / "HS").mkdir(parents=True)
    for n in (1, 2):
        (root / "F" / "HS" / f"{n}.png").write_bytes(tiny_image("PNG", n))
    a = _agent(tmp_path, root)
    a.run(once=True)
    (root / "F" / "HS" / "2.png").unlink()
    a.run(once=True)
    assert [r["document"] for r in _queued(a, "PageRemoved")] == ["2.png"]
    shutil.rmtree(root / "F")  # looks like an unmounted share: an empty mount point
    a.run(once=True)
    assert [r["document"] for r in _queued(a, "PageRemoved")] == ["2.png"]
    a.close()


def test_inotify_overflow_log_line_triggers_a_reconcile(tmp_path: Path) -> None:
    import logging
    import threading

    from producers.agent import _OverflowSpy

    flag = threading.Event()
    logger = logging.getLogger("watchdog.observers.inotify_c")
    spy = _OverflowSpy(flag)
    logger.addHandler(spy)
    try:
        logger.warning("Inotify queue overflowed; filesystem events were lost")
    finally:
        logger.removeHandler(spy)
    assert flag.is_set()


def test_outbox_queues_one_fact_once(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite3")
    ev = PageScanned.make(site_id="xa-a", file_code="HS", document="1.png", uri="file:///x/1",
                          sha256="b" * 64, size_bytes=1, media_type="image/png")
    again = PageScanned.make(site_id="xa-a", file_code="HS", document="1.png",
                             uri="file:///x/1", sha256="b" * 64, size_bytes=1,
                             media_type="image/png")
    assert again.event_id == ev.event_id
    with ob.transaction() as db:
        enqueue(db, "site_events", ev)
        enqueue(db, "site_events", again)
    assert ob.depth()[0] == 1


def test_full_outbox_disk_waits_and_loses_nothing(tmp_path: Path, caplog) -> None:
    """A full outbox disk (SQLITE_FULL, here from max_page_count) pauses detection with a clear
    error; once space is back every page is recorded, none lost, none twice."""
    import logging
    import threading
    import time

    root = tmp_path / "hot"
    (root / "F" / "HS").mkdir(parents=True)
    for n in range(1, 301):
        (root / "F" / "HS" / f"{n}.png").write_bytes(tiny_image("PNG", n))
    a = _agent(tmp_path, root)
    used = a.ob.db.execute("PRAGMA page_count").fetchone()[0]
    a.ob.db.execute(f"PRAGMA max_page_count = {used}")  # no room for a single new page
    caplog.set_level(logging.ERROR, logger="producers.agent")
    done = threading.Event()
    def run_once() -> None:
        a.run(once=True)
        done.set()

    t = threading.Thread(target=run_once, daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "disk is full" not in caplog.text:
        time.sleep(0.05)
    assert "outbox disk is full" in caplog.text
    assert not done.is_set(), "the agent gave up instead of waiting for space"
    assert a.ob.db.execute("SELECT count(*) FROM pages").fetchone()[0] < 300
    a.ob.db.execute("PRAGMA max_page_count = 1073741823")  # space is freed
    t.join(timeout=60)
    assert done.is_set()
    rows = a.ob.db.execute("SELECT count(*), count(DISTINCT event_id) FROM outbox "
                           "WHERE etype = 'PageScanned'").fetchone()
    assert tuple(rows) == (300, 300)
    a.close()


def test_fast_page_scanned_bytes_equal_the_validated_model() -> None:
    """The agent's pydantic-free PageScanned (producers/wire.py) is byte for byte the contract's
    own JSON, for every character a name can hold, and falls back to the model (and its
    errors) outside the bounds it is proven on."""
    from datetime import UTC, datetime

    from producers.wire import WireEvent, fast_event_id, page_scanned
    from sohoa.events import stable_event_id

    odd = "".join(chr(c) for c in range(0x20, 0x7f) if chr(c) != "/") + \
        "\u2028\u2029\ufeff Tiếng Việt 𝄞 "
    cases: list[dict[str, Any]] = []
    for i, text in enumerate(["HS-001", "Hồ sơ 2024", odd, 'a"b\\c', "x" * 200]):
        for at in (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
                   datetime(2026, 1, 2, 3, 4, 5, 120000, tzinfo=UTC),
                   datetime(1999, 12, 31, 23, 59, 59, 5, tzinfo=UTC)):
            pages = [1, 1, 3, 99_999, 100_000][i]
            cases.append(dict(site_id="xa-tan_phu-9", fonds=text[:200], file_code=text[:200],
                              document=f"{text[:250]}.tif", page_index=pages,
                              number=[0, 1, None, 99_999, None][i], document_pages=pages,
                              uri=Path(f"/r/{i}").as_uri(),
                              document_sha256=hashlib.sha256(b"d" + text.encode()).hexdigest(),
                              sha256=hashlib.sha256(text.encode()).hexdigest(),
                              size_bytes=i + 1, media_type="image/tiff", revision=i + 1,
                              path=f"F/{text}/{i}.tif", occurred_at=at))
    for d in cases:
        fast = page_scanned(**d)
        assert isinstance(fast, WireEvent)
        model = PageScanned.make(**d)
        assert fast.to_json() == model.to_json()
        assert (fast.event_id, fast.key(), fast.NAME) == (model.event_id, model.key(),
                                                          model.NAME)
        assert PageScanned.model_validate_json(fast.to_json()) == model
    assert fast_event_id("a", 1, "ố") == stable_event_id("a", 1, "ố")
    # Outside the proven bounds: the validated model, so the same errors as before.
    base = dict(cases[0], occurred_at=None)
    for bad in ({"site_id": "Bad Site"}, {"site_id": "xa\n"}, {"fonds": "f" * 201},
                {"number": 100_001}, {"sha256": "A" * 64}, {"size_bytes": 0},
                {"document_sha256": "x"}, {"page_index": 2}, {"file_code": "a/b"},
                {"document": "a\x01"}):
        with pytest.raises(ValueError):
            page_scanned(**{**base, **bad})
    # A decomposed name is not what the layout gives: the model's path normalises it.
    nfd = page_scanned(**{**base, "file_code": unicodedata.normalize("NFD", "Hồ sơ")})
    assert isinstance(nfd, PageScanned) and nfd.file_code == "Hồ sơ"


@pytest.mark.parametrize("extensions", [[".tif"], ["tif"], ["TIF"], [".TIF"]])
def test_the_agent_and_reconcile_share_one_page_name_rule(tmp_path: Path, extensions) -> None:
    """With extensions=["tif"] the agent detected nothing while reconcile matched every name
    ending in "tif" ("motif", "x.gif"-like names); both now ask sohoa.naming.FileNames."""
    from consumers.reconcile import disk_pages
    from sohoa.config import WatcherConfig
    from sohoa.naming import FileNames

    cfg = WatcherConfig(extensions=extensions)
    names = FileNames.of(cfg)
    folder = tmp_path / "F" / "HS"
    folder.mkdir(parents=True)
    for n in ("001.tif", "002.TIF", "motif", "x.tiff", ".003.tif", "004.tif.part", "Thumbs.db"):
        (folder / n).write_bytes(tiny_image("TIFF", 1))
    agent_pages = sorted(p.name for p in folder.iterdir() if names.is_document(p.name))
    assert agent_pages == ["001.tif", "002.TIF"]
    assert sorted(Path(r).name for r in disk_pages(tmp_path, cfg)) == agent_pages


def test_a_closing_marker_is_known_only_with_the_file_closed_it_causes(tmp_path: Path) -> None:
    """Each outbox transaction that records the DONE marker as seen also holds the FileClosed:
    an agent killed between two would find the marker known at restart and never close the
    file (kill -9 of the agent with a 300-page PDF in its outbox hit that window)."""
    root = tmp_path / "hot"
    (root / "F" / "HS").mkdir(parents=True)
    (root / "F" / "HS" / "1.png").write_bytes(tiny_image("PNG", 1))
    (root / "F" / "HS" / "DONE").touch()
    a = _agent(tmp_path, root)
    flushes: list[list[tuple[str, object]]] = []
    real = a._flush_writes_once

    def spy() -> None:
        flushes.append(list(a._writes))
        real()

    a._flush_writes_once = spy  # type: ignore[method-assign]
    a.run(once=True)

    def marker_known(ops: list[tuple[str, object]]) -> bool:
        return any(op == "document" and getattr(args, "path", "").endswith("/DONE")
                   for op, args in ops)

    def closes(ops: list[tuple[str, object]]) -> bool:
        return any(op == "event" and type(args[1]).__name__ == "FileClosed"  # type: ignore[index]
                   for op, args in ops)

    with_marker = [ops for ops in flushes if marker_known(ops)]
    assert with_marker, "the marker was never recorded"
    assert all(closes(ops) for ops in with_marker), [[op for op, _ in f] for f in flushes]
    assert len(_queued(a, "FileClosed")) == 1
    a.close()


def test_big_documents_are_hashed_one_per_task(tmp_path: Path) -> None:
    """A drop of big documents is not handed to the hash workers in halves: each big one is
    a task of its own, so it is recorded (and its upload begins) as soon as it is read, while
    small pages still go many to a task."""
    from producers.agent import HASH_BATCH_BYTES, Candidate

    root = tmp_path / "hot"
    root.mkdir()
    agent = _agent(tmp_path, root, hash_workers=2)
    try:
        def settle(n: int, size: int, tag: str) -> None:
            for i in range(n):
                path = root / "F" / "HS" / f"{tag}{i:03d}.pdf"  # never read: only batched
                key = f"0\x00F/HS/{path.name}"
                agent.hashing[key] = None
                agent._to_hash.append((key, Candidate(0, path, f"F/HS/{path.name}", size, 0,
                                                      "page")))

        settle(6, HASH_BATCH_BYTES + 1, "big")
        agent._submit_hashes()
        tasks = {id(f) for f in agent.hashing.values()}
        assert len(tasks) == 6
        agent.hashing.clear()
        settle(8, 100_000, "small")
        agent._submit_hashes()
        assert len({id(f) for f in agent.hashing.values()}) == 2  # one per worker
    finally:
        agent.pool.shutdown(wait=True)
        agent.close()
