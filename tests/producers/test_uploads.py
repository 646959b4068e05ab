"""Uploads through the outbox, without a server: the outbox's schema 3 and its migration, the
barrier that holds events back until their document is stored, the agent's s3 URIs, the
working-hours schedule, the rate limit and the heartbeat's new fields."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import pytest

from producers.outbox import ENQUEUE_SQL, SCHEMA_VERSION, UPLOAD_SQL, Outbox, enqueue
from producers.uploader import UploadQueue, open_now
from sohoa.config import Settings, UploadConfig
from sohoa.errors import ConfigError
from sohoa.events import PageScanned, SiteHeartbeat, parse_event
from sohoa.objectstore import RateLimit, composite_sha256, page_key, page_uri, parse_uri
from tests.support.typed_events import parsed

SHA_A, SHA_B = "a" * 64, "b" * 64


def _page(i: int, sha: str) -> PageScanned:
    return PageScanned.make(site_id="xa-u", file_code="HS", document=f"{i}.png", number=i,
                            uri=page_uri("sohoa-pages", "xa-u", sha), sha256=sha,
                            size_bytes=10, media_type="image/png")


def _queue(ob: Outbox, rows: list[tuple[PageScanned | None, str | None]]) -> None:
    now = time.time()
    with ob.transaction() as db:
        for ev, blob in rows:
            if blob is not None:
                db.execute(UPLOAD_SQL, (blob, "/r", f"{blob[:4]}.png", 10, now))
            if ev is not None:
                db.execute(ENQUEUE_SQL, (ev.event_id, "site_events", ev.NAME, ev.key(),
                                         ev.to_json(), now, blob))


def test_events_wait_for_their_document_in_order(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite3")
    e1, e2, e3 = _page(1, SHA_A), _page(2, SHA_B), _page(3, SHA_A)
    _queue(ob, [(e1, SHA_A), (e2, SHA_B), (e3, SHA_A)])
    closing = PageScanned.make(site_id="xa-u", file_code="HS", document="x.png", number=9,
                               uri="file:///x", sha256="c" * 64, size_bytes=1,
                               media_type="image/png")
    with ob.transaction() as db:
        enqueue(db, "site_events", closing)  # waits for nothing, but comes after them
    assert ob.unsent(0, 10) == []
    depth = ob.upload_depth()
    assert (depth.documents, depth.pages, depth.bytes) == (2, 3, 20)
    q = UploadQueue(ob)
    first = q.next()
    assert first is not None and first.sha256 == SHA_A  # first detected, first stored
    q.finish(SHA_A, "stored")
    # e1 goes; e2 waits for B and holds back e3 and the last one (order is kept).
    assert [r.event_id for r in ob.unsent(0, 10)] == [e1.event_id]
    q.finish(SHA_B, "lost", "gone")  # lost bytes do not hold the outbox forever
    assert [r.event_id for r in ob.unsent(0, 10)] == [e1.event_id, e2.event_id, e3.event_id,
                                                      closing.event_id]
    assert ob.upload_depth().pages == 0


def test_documents_upload_in_the_order_their_events_wait(tmp_path: Path) -> None:
    """Documents queued in one commit share their time: the first event's goes first, or a
    stored document's events would wait behind an unstored one's."""
    ob = Outbox(tmp_path / "o.sqlite3")
    _queue(ob, [(_page(1, SHA_B), SHA_B), (_page(2, SHA_A), SHA_A)])
    q = UploadQueue(ob)
    first = q.next()
    assert first is not None and first.sha256 == SHA_B
    q.finish(SHA_B, "stored")
    assert len(ob.unsent(0, 10)) == 1


def test_the_next_document_after_the_current_one(tmp_path: Path) -> None:
    """What the uploader reads ahead: the document after the one being stored (still pending
    meanwhile), in the same order."""
    ob = Outbox(tmp_path / "o.sqlite3")
    sha_c = "c" * 64
    _queue(ob, [(_page(1, SHA_B), SHA_B), (_page(2, SHA_A), SHA_A), (_page(3, sha_c), sha_c)])
    q = UploadQueue(ob)
    current = q.next()
    assert current is not None and current.sha256 == SHA_B
    nxt = q.next(after=current)
    assert nxt is not None and nxt.sha256 == SHA_A
    q.finish(SHA_B, "stored")
    last = q.next(after=nxt)
    assert q.next() == nxt and last is not None and last.sha256 == sha_c
    q.finish(SHA_A, "stored")
    assert q.next(after=q.next()) is None


def test_a_lost_document_found_again_is_uploaded(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite3")
    _queue(ob, [(_page(1, SHA_A), SHA_A)])
    UploadQueue(ob).finish(SHA_A, "lost", "gone")
    _queue(ob, [(_page(2, SHA_A), SHA_A)])
    assert ob.db.execute("SELECT state FROM uploads").fetchone()[0] == "pending"
    UploadQueue(ob).finish(SHA_A, "stored")
    _queue(ob, [(_page(3, SHA_A), SHA_A)])  # the same bytes again: stored stays stored
    assert ob.db.execute("SELECT state FROM uploads").fetchone()[0] == "stored"


def test_outbox_v2_migrates_to_v3_and_resends_nothing(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    ob = Outbox(path)
    ev = _page(1, SHA_A)
    with ob.transaction() as db:
        enqueue(db, "site_events", ev)
    ob.mark_sent([ob.unsent(0, 10)[0].seq])
    pending = _page(2, SHA_B)
    with ob.transaction() as db:
        enqueue(db, "site_events", pending)
    # Back to what a version-2 agent left behind.
    ob.db.executescript("DROP INDEX outbox_blob; ALTER TABLE outbox DROP COLUMN blob; "
                        "DROP TABLE uploads; DROP TABLE upload_parts; PRAGMA user_version = 2;")
    ob.close()
    ob = Outbox(path)
    assert ob.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    assert [r.event_id for r in ob.unsent(0, 10)] == [pending.event_id]
    assert ob.depth()[0] == 1 and ob.upload_depth().documents == 0
    ob.close()
    Outbox(path).close()  # opening a migrated file again changes nothing


def _agent(tmp_path: Path, root: Path, upload: bool):
    from producers.agent import Agent
    from producers.metrics import AgentMetrics
    from sohoa.config import StoreConfig, WatcherConfig

    store = StoreConfig(endpoint="http://127.0.0.1:9", access_key_id="k",
                        secret_access_key="s" * 20)
    cfg = WatcherConfig(site_id="xa-u", roots=[root], stability_window_s=0.1,
                        outbox_path=tmp_path / "ob" / "outbox.sqlite3")
    return Agent(Settings(watcher=cfg, store=store, upload=UploadConfig(enabled=upload)),
                 AgentMetrics("xa-u"))


@pytest.mark.parametrize("upload", [True, False])
def test_agent_names_the_object_and_queues_the_upload(tmp_path: Path, upload: bool) -> None:
    from sohoa.samples import PageSpec, write_page

    root = tmp_path / "hot"
    page = write_page(root / "F" / "HS-01" / "001.png", PageSpec(seed=1))
    agent = _agent(tmp_path, root, upload)
    try:
        agent.run(once=True)
        rows = agent.ob.db.execute("SELECT value, blob FROM outbox WHERE etype = "
                                   "'PageScanned'").fetchall()
        assert len(rows) == 1
        ev = parsed(rows[0][0], PageScanned)
        uploads = agent.ob.db.execute("SELECT sha256, root, path, size, state "
                                      "FROM uploads").fetchall()
        if upload:
            assert ev.uri == f"s3://sohoa-pages/{page_key('xa-u', ev.document_sha256)}"
            assert rows[0][1] == ev.document_sha256
            assert uploads == [(ev.document_sha256, str(root), "F/HS-01/001.png",
                                page.stat().st_size, "pending")]
            assert agent.ob.unsent(0, 10) == []  # held until stored
        else:
            assert ev.uri == page.as_uri() and rows[0][1] is None and uploads == []
            assert len(agent.ob.unsent(0, 10)) == 1
    finally:
        agent.close()


def test_upload_needs_the_store_and_a_key() -> None:
    with pytest.raises(ConfigError, match=r"upload\.enabled needs"):
        from sohoa.config import load_config

        load_config(upload={"enabled": True})
    with pytest.raises(ConfigError, match="hours"):
        from sohoa.config import load_config

        load_config(upload={"hours": ["17:00-07:30"]})


def test_store_secret_is_masked() -> None:
    s = Settings(store={"endpoint": "http://127.0.0.1:8333", "access_key_id": "SOHOAKEY",
                        "secret_access_key": "very-secret-value-123"})
    shown = json.dumps(s.masked())
    assert "very-secret-value-123" not in shown and "SOHOAKEY" in shown


def test_working_hours() -> None:
    cfg = UploadConfig(hours=["07:30-11:30", "13:30-17:00"], days=[0, 1, 2, 3, 4])
    monday = datetime(2026, 11, 2)
    assert open_now(cfg, monday.replace(hour=8))
    assert not open_now(cfg, monday.replace(hour=12))
    assert open_now(cfg, monday.replace(hour=16, minute=59))
    assert not open_now(cfg, monday.replace(hour=17))
    assert not open_now(cfg, datetime(2026, 11, 7, 9))  # Saturday
    assert open_now(UploadConfig(), datetime(2026, 11, 7, 3))


def test_rate_limit_holds_the_average() -> None:
    limit = RateLimit(400_000)
    start = time.monotonic()
    for _ in range(100):
        limit.take(4096)  # 409,600 bytes: a quarter second of burst, the rest paced
    assert time.monotonic() - start >= 0.7
    RateLimit(0).take(10**9)  # no cap: returns at once


def test_uri_and_checksum_helpers() -> None:
    assert parse_uri("s3://b/xa/aa/" + "a" * 64) == ("b", "xa/aa/" + "a" * 64)
    for bad in ("file:///x", "s3:///k", "s3://b/k?x=1"):
        with pytest.raises(ValueError):
            parse_uri(bad)
    with pytest.raises(ValueError):
        page_key("xa", "nothex")
    # S3's checksum of a multipart object: the parts' digests hashed again, "-N".
    import base64
    import hashlib

    d = [hashlib.sha256(b"a").digest(), hashlib.sha256(b"b").digest()]
    assert composite_sha256(d) == base64.b64encode(
        hashlib.sha256(d[0] + d[1]).digest()).decode() + "-2"


def test_heartbeat_upload_fields_are_optional() -> None:
    old = SiteHeartbeat(site_id="xa-u", agent_version="0.1", outbox_depth=1)
    assert old.upload_pending_pages == 0 and old.upload_error is None
    raw = json.loads(old.to_json())
    for k in ("upload_pending_pages", "upload_pending_bytes", "oldest_unuploaded_age_s",
              "upload_error"):
        raw.pop(k)
    assert parsed(json.dumps(raw).encode(), SiteHeartbeat).upload_pending_bytes == 0  # older agents
    new = SiteHeartbeat(site_id="xa-u", agent_version="0.2", outbox_depth=5,
                        upload_pending_pages=3, upload_pending_bytes=9_000_000,
                        oldest_unuploaded_age_s=61.5, upload_error="unreachable")
    assert parse_event(new.to_json()) == new


def test_uploader_builds_its_client_before_the_first_document(tmp_path: Path) -> None:
    """botocore's import and S3 model are loaded when the uploader starts, with nothing
    queued and no request sent (the endpoint does not even listen), not on the clock of the
    first document."""
    from producers.uploader import Uploader
    from sohoa.config import WatcherConfig
    from sohoa.objectstore import ObjectStore

    settings = Settings(
        watcher=WatcherConfig(site_id="xa-u", roots=[tmp_path],
                              outbox_path=tmp_path / "outbox.sqlite3"),
        store={"endpoint": "http://127.0.0.1:9", "access_key_id": "k",
               "secret_access_key": "s"},
        upload=UploadConfig(enabled=True))
    store = ObjectStore(settings.store, retries=0)
    up = Uploader(settings, on_stored=lambda: None, store=store)
    up.start()
    try:
        deadline = time.monotonic() + 30
        while store._client is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store._client is not None
        model = store._client.meta.service_model
        assert "UploadPart" in model.operation_names
    finally:
        up.stop()
        up.join(10)
    assert up.error is None and up.stored_docs == 0
