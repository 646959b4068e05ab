"""The object store for real (SeaweedFS of the `objects` fixture): each key's rights, objects
never overwritten, and the site agent's uploader — one PUT, parts, a resume after a cut, a
re-upload that sends nothing, bytes that vanished or changed — and the workers' s3 reads."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from producers.outbox import ENQUEUE_SQL, UPLOAD_SQL, Outbox
from producers.uploader import Uploader, UploadQueue
from sohoa.config import Settings, UploadConfig, WatcherConfig
from sohoa.events import PageScanned
from sohoa.objectstore import (
    ChecksumMismatch,
    ObjectStore,
    StoreError,
    page_key,
    page_uri,
)
from streams.sources import PageSources, SourceError, SourceRefused

PAGES, OUTPUTS = "sohoa-pages", "sohoa-outputs"
SITE = "xa-obj"
MIB = 1024 * 1024


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _err(call) -> StoreError:
    with pytest.raises(StoreError) as e:
        call()
    return e.value


def test_each_key_does_only_its_part_and_nothing_is_overwritten(objects) -> None:
    site = ObjectStore(objects.store(f"site:{SITE}"), retries=0)
    other = ObjectStore(objects.store("site:xa-khac"), retries=0)
    workers = ObjectStore(objects.store("workers"), retries=0)
    reader = ObjectStore(objects.store("reader"), retries=0)
    admin = ObjectStore(objects.store("admin"), retries=0)
    data = os.urandom(3000)
    key = page_key(SITE, _sha(data))
    site.put(PAGES, key, data, _sha(data))
    # A second PUT of the same key is refused (If-None-Match), the object is unchanged.
    assert _err(lambda: site.put(PAGES, key, data, _sha(data))).code == "PreconditionFailed"
    # Another site can neither read nor write this site's prefix.
    assert _err(lambda: other.head(PAGES, key)).code in ("403", "AccessDenied")
    x = b"forged"
    assert _err(lambda: other.put(PAGES, page_key(SITE, _sha(x)), x, _sha(x))).code == \
        "AccessDenied"
    # Workers read pages and write outputs, never pages; the reader reads outputs only.
    buf = io.BytesIO()
    assert workers.get_into(PAGES, key, buf, 10**6) == (_sha(data), len(data))
    assert buf.getvalue() == data
    assert _err(lambda: workers.put(PAGES, page_key(SITE, _sha(x)), x, _sha(x))).code == \
        "AccessDenied"
    out = f"{SITE}/report-{os.urandom(4).hex()}.pdf"
    workers.put(OUTPUTS, out, x, _sha(x))
    assert reader.get_into(OUTPUTS, out, io.BytesIO(), 100)[0] == _sha(x)
    assert _err(lambda: reader.get_into(PAGES, key, io.BytesIO(), 10**6)).code == \
        "AccessDenied"
    assert _err(lambda: reader.put(OUTPUTS, out + "2", x, _sha(x))).code == "AccessDenied"
    # Bytes that are not what the checksum says are refused by the store itself.
    with pytest.raises(ChecksumMismatch):
        site._call("put_object", Bucket=PAGES, Key=page_key(SITE, "0" * 64), Body=b"abc",
                   ChecksumSHA256="ungA/9ypO2IIBBuDw+RHvbgW3ilYy+3PC7Hd5d44PnY=")
    # Even the admin's PUT over the key only adds a version; no version can be deleted
    # while its retention runs (object lock, COMPLIANCE).
    admin._call("put_object", Bucket=PAGES, Key=key, Body=b"other bytes")
    versions = admin._call("list_object_versions", Bucket=PAGES, Prefix=key)["Versions"]
    assert sorted(v["Size"] for v in versions) == sorted([len(data), 11])
    oldest = next(v for v in versions if v["Size"] == len(data))
    assert _err(lambda: admin._call("delete_object", Bucket=PAGES, Key=key,
                                    VersionId=oldest["VersionId"])).code == "AccessDenied"
    got = admin._call("get_object", Bucket=PAGES, Key=key, VersionId=oldest["VersionId"])
    assert got["Body"].read() == data


def test_a_site_key_uploads_but_cannot_hide_a_page_under_a_delete_marker(objects) -> None:
    site = ObjectStore(objects.store(f"site:{SITE}"), retries=0)
    admin = ObjectStore(objects.store("admin"), retries=0)
    data = os.urandom(4000)
    sha = _sha(data)
    key = page_key(SITE, sha)
    site.put(PAGES, key, data, _sha(data))
    # A multipart upload with a resume (its parts listed), and one given up, still work.
    big = os.urandom(5 * MIB + 1000)
    big_key = page_key(SITE, _sha(big))
    upload_id = site.create_multipart(PAGES, big_key, _sha(big))
    first = site.upload_part(PAGES, big_key, upload_id, 1, big[:5 * MIB])
    assert site.list_parts(PAGES, big_key, upload_id)[1].etag == first.etag
    second = site.upload_part(PAGES, big_key, upload_id, 2, big[5 * MIB:])
    site.complete(PAGES, big_key, upload_id, [first, second])
    dropped = page_key(SITE, "ab" * 32)
    site.abort(PAGES, dropped, site.create_multipart(PAGES, dropped, "ab" * 32))
    # Every way of deleting is refused: a plain DELETE (a delete marker), a version's
    # DELETE, a multi-object delete.
    version = admin._call("list_object_versions", Bucket=PAGES, Prefix=key)["Versions"][0]
    assert _err(lambda: site._call("delete_object", Bucket=PAGES, Key=key)).code == \
        "AccessDenied"
    assert _err(lambda: site._call("delete_object", Bucket=PAGES, Key=key,
                                   VersionId=version["VersionId"])).code == "AccessDenied"
    multi = site._call("delete_objects", Bucket=PAGES,
                       Delete={"Objects": [{"Key": key}, {"Key": big_key}]})
    assert not multi.get("Deleted")
    assert {e["Key"] for e in multi["Errors"]} == {key, big_key}
    assert {e["Code"] for e in multi["Errors"]} == {"AccessDenied"}
    # Nothing was hidden: no delete marker, both pages read as stored.
    listed = admin._call("list_object_versions", Bucket=PAGES, Prefix=f"{SITE}/")
    assert not [m for m in listed.get("DeleteMarkers", []) if m["Key"] in (key, big_key)]
    assert _stored(objects, sha) == data and _stored(objects, _sha(big)) == big
    # The site still reads (HEAD) its own pages, and nothing of another site's prefix.
    own = site.head(PAGES, key)
    assert own is not None and own.sha256_meta == sha
    x = b"elsewhere"
    assert _err(lambda: site.put(PAGES, page_key("xa-khac", _sha(x)), x, _sha(x))).code == \
        "AccessDenied"


def test_site_identity_holds_no_write_action() -> None:
    from infra.objects import identities

    keys: dict[str, Any] = {r: {"access_key_id": r, "secret_access_key": "s"}
                            for r in ("admin", "workers", "reader")}
    keys["sites"] = {"xa-a": {"access_key_id": "a", "secret_access_key": "s"}}
    conf = identities(keys, PAGES, OUTPUTS)
    site = next(i for i in conf["identities"] if i["name"] == "site-xa-a")
    assert site["actions"] == [] and site["policyNames"] == ["site-xa-a"]
    policy = json.loads(next(p for p in conf["policies"] if p["name"] == "site-xa-a")["content"])
    allowed = {a for st in policy["Statement"] if st["Effect"] == "Allow" for a in st["Action"]}
    denied = {a for st in policy["Statement"] if st["Effect"] == "Deny" for a in st["Action"]}
    assert "s3:DeleteObject" not in allowed and "s3:DeleteObject" in denied
    assert all(r == f"arn:aws:s3:::{PAGES}/xa-a/*" for st in policy["Statement"]
               if st["Effect"] == "Allow" for r in st["Resource"])


def test_object_store_listens_on_loopback_only_and_sends_nothing_out(objects) -> None:
    import subprocess

    out = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True, check=True).stdout
    mine = [line.split()[3] for line in out.splitlines() if f"pid={objects.node.pid}," in line]
    assert len(mine) >= 8 and all(a.startswith("127.0.0.1:") for a in mine), mine
    argv = objects.node.argv(Path("weed"))
    assert "-master.telemetry=false" in argv  # no usage statistics to the internet
    assert {"-s3.port.iceberg=0", "-s3.port.lance=0"} <= set(argv)


# --- the uploader ------------------------------------------------------------------------------

def _settings(objects, tmp_path: Path, **upload) -> Settings:
    return Settings(
        watcher=WatcherConfig(site_id=SITE, roots=[tmp_path / "hot"],
                              outbox_path=tmp_path / "outbox.sqlite3"),
        store=objects.store(f"site:{SITE}"),
        upload=UploadConfig(enabled=True, **{"part_size_bytes": 5 * MIB,
                                             "multipart_threshold_bytes": 6 * MIB, **upload}))


def _document(tmp_path: Path, name: str, size: int) -> tuple[Path, str]:
    path = tmp_path / "hot" / "F" / "HS" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path, _sha(path.read_bytes())


def _queue(settings: Settings, path: Path, sha: str) -> Outbox:
    ob = Outbox(settings.watcher.outbox_path)
    root = str(settings.watcher.roots[0])
    ev = PageScanned.make(site_id=SITE, file_code="HS", document=path.name,
                          uri=page_uri(PAGES, SITE, sha), sha256=sha,
                          size_bytes=path.stat().st_size, media_type="application/pdf")
    with ob.transaction() as db:
        db.execute(UPLOAD_SQL, (sha, root, path.relative_to(root).as_posix(),
                                path.stat().st_size, time.time()))
        db.execute(ENQUEUE_SQL, (ev.event_id, "site_events", ev.NAME, ev.key(), ev.to_json(),
                                 time.time(), sha))
    return ob


class CountingStore(ObjectStore):
    """The real client, counting the parts it sends; ``die_at`` ends the 'process' there."""

    def __init__(self, cfg, die_at: int | None = None) -> None:
        super().__init__(cfg, retries=0)
        self.parts: list[int] = []
        self.puts = 0
        self.die_at = die_at

    def upload_part(self, *a, **kw):
        if self.die_at is not None and len(self.parts) + 1 == self.die_at:
            raise SystemExit("killed mid-upload")
        p = super().upload_part(*a, **kw)
        self.parts.append(p.number)
        return p

    def put(self, *a, **kw):
        self.puts += 1
        return super().put(*a, **kw)


def _drain(settings: Settings, store: ObjectStore | None = None) -> Uploader:
    """One uploader pass over the queue, in this thread."""
    up = Uploader(settings, on_stored=lambda: None, store=store)
    ob = Outbox(settings.watcher.outbox_path)
    q = UploadQueue(ob)
    try:
        while (job := q.next()) is not None:
            up._upload(q, job)
    finally:
        ob.close()
    return up


def _stored(objects, sha: str) -> bytes:
    buf = io.BytesIO()
    ObjectStore(objects.store("workers")).get_into(PAGES, page_key(SITE, sha), buf, 10**9)
    return buf.getvalue()


def test_small_document_one_put_then_events_go(objects, tmp_path: Path) -> None:
    settings = _settings(objects, tmp_path)
    path, sha = _document(tmp_path, "001.jpg", 200_000)
    ob = _queue(settings, path, sha)
    assert ob.unsent(0, 10) == []
    store = CountingStore(settings.store)
    up = _drain(settings, store)
    assert store.puts == 1 and up.sent_bytes == 200_000
    assert len(ob.unsent(0, 10)) == 1
    assert _stored(objects, sha) == path.read_bytes()
    # The same bytes queued again (another path, or after a lost outbox): HEAD, nothing sent.
    other = tmp_path / "again"
    other.mkdir()
    settings2 = _settings(objects, other)
    copy, _ = _document(other, "002.jpg", 1)
    copy.write_bytes(path.read_bytes())
    _queue(settings2, copy, sha)
    store2 = CountingStore(settings2.store)
    assert _drain(settings2, store2).sent_bytes == 0 and store2.puts == 0
    assert Outbox(settings2.watcher.outbox_path).db.execute(
        "SELECT state FROM uploads").fetchone()[0] == "stored"


def test_large_document_in_parts_resumes_after_a_cut(objects, tmp_path: Path) -> None:
    settings = _settings(objects, tmp_path)
    path, sha = _document(tmp_path, "QD-15.pdf", 17 * MIB)  # 4 parts of 5 MiB (last 2)
    _queue(settings, path, sha)
    # The process dies while sending part 3: parts 1-2 are acknowledged and recorded.
    with pytest.raises(SystemExit):
        _drain(settings, CountingStore(settings.store, die_at=3))
    ob = Outbox(settings.watcher.outbox_path)
    row = ob.db.execute("SELECT upload_id, state FROM uploads").fetchone()
    assert row[0] and row[1] == "pending"
    assert [r[0] for r in ob.db.execute("SELECT number FROM upload_parts ORDER BY 1")] == [1, 2]
    # The next run keeps parts 1-2 (the store still lists them with the same digest).
    store = CountingStore(settings.store)
    up = _drain(settings, store)
    assert store.parts == [3, 4] and up.sent_bytes == 7 * MIB
    assert _stored(objects, sha) == path.read_bytes()
    head = ObjectStore(objects.store(f"site:{SITE}")).head(PAGES, page_key(SITE, sha))
    assert head is not None and head.checksum_sha256 is not None
    assert head.sha256_meta == sha and head.checksum_sha256.endswith("-4")
    assert ob.db.execute("SELECT count(*) FROM upload_parts").fetchone()[0] == 0
    assert len(ob.unsent(0, 10)) == 1


def test_upload_id_the_store_forgot_starts_over(objects, tmp_path: Path) -> None:
    settings = _settings(objects, tmp_path)
    path, sha = _document(tmp_path, "big.tif", 11 * MIB)
    ob = _queue(settings, path, sha)
    ob.db.execute("UPDATE uploads SET upload_id = 'gone-upload', part_size = ?", (5 * MIB,))
    ob.db.execute("INSERT INTO upload_parts VALUES (?, 1, '\"x\"', 'eA==', ?)", (sha, 5 * MIB))
    store = CountingStore(settings.store)
    _drain(settings, store)
    assert store.parts == [1, 2, 3]
    assert _stored(objects, sha) == path.read_bytes()


def test_vanished_or_changed_bytes_are_lost_not_stored(objects, tmp_path: Path) -> None:
    settings = _settings(objects, tmp_path)
    gone, sha_gone = _document(tmp_path, "001.jpg", 5000)
    changed, sha_changed = _document(tmp_path, "002.jpg", 7 * MIB)
    _queue(settings, gone, sha_gone)
    ob = _queue(settings, changed, sha_changed)
    gone.unlink()
    changed.write_bytes(os.urandom(7 * MIB))  # same size, other bytes: found only by hashing
    _drain(settings)
    states = dict(ob.db.execute("SELECT sha256, state FROM uploads").fetchall())
    assert states == {sha_gone: "lost", sha_changed: "lost"}
    admin = ObjectStore(objects.store("admin"))
    assert admin.head(PAGES, page_key(SITE, sha_changed)) is None
    assert len(ob.unsent(0, 10)) == 2  # sent anyway: the centre reports them unreadable


class ChangingStore(CountingStore):
    """Changes the document's last bytes while part ``at`` is on the wire (the same size: only
    the hash can tell)."""

    def __init__(self, cfg, path: Path, at: int) -> None:
        super().__init__(cfg)
        self.path, self.at, self.changed = path, at, False

    def upload_part(self, *a, **kw):
        p = super().upload_part(*a, **kw)
        if p.number == self.at:
            with open(self.path, "r+b") as f:
                f.seek(-4096, os.SEEK_END)
                f.write(os.urandom(4096))
            self.changed = True
        return p


def test_bytes_changed_while_parts_are_read_ahead_are_lost(objects, tmp_path: Path) -> None:
    """Part 3 is read only once part 1 is sent (one part ahead): new bytes there are caught by
    the whole document's SHA-256 before the upload completes."""
    settings = _settings(objects, tmp_path)
    path, sha = _document(tmp_path, "QD-16.pdf", 13 * MIB)  # parts of 5, 5 and 3 MiB
    ob = _queue(settings, path, sha)
    store = ChangingStore(settings.store, path, at=1)
    _drain(settings, store)
    assert store.changed and _sha(path.read_bytes()) != sha
    assert store.parts == [1, 2, 3]  # all sent: the change was seen only at the end
    assert ob.db.execute("SELECT state FROM uploads").fetchone()[0] == "lost"
    admin = ObjectStore(objects.store("admin"))
    assert admin.head(PAGES, page_key(SITE, sha)) is None
    # The multipart upload begun in this run is aborted, not left to the store's expiry.
    listed = admin.client.list_multipart_uploads(Bucket=PAGES, Prefix=page_key(SITE, sha))
    assert listed.get("Uploads", []) == []
    assert len(ob.unsent(0, 10)) == 1


def test_uploader_killed_while_reading_ahead_resumes_both_documents(objects,
                                                                     tmp_path: Path) -> None:
    """The uploader thread dies sending the first document's last part, while the next
    document is already being read: the next run keeps the first one's stored parts and sends
    the rest of both, each checked."""
    settings = _settings(objects, tmp_path)
    a, sha_a = _document(tmp_path, "001.pdf", 12 * MIB)  # 3 parts
    b, sha_b = _document(tmp_path, "002.pdf", 11 * MIB)  # 3 parts
    _queue(settings, a, sha_a).close()
    ob = _queue(settings, b, sha_b)
    up = Uploader(settings, on_stored=lambda: None,
                  store=CountingStore(settings.store, die_at=3))
    up.start()
    up.join(60)
    assert not up.is_alive() and isinstance(up.error, SystemExit)  # the cut happened
    rows = dict(ob.db.execute("SELECT sha256, upload_id IS NOT NULL FROM uploads").fetchall())
    assert rows == {sha_a: 1, sha_b: 0}
    assert [r[0] for r in ob.db.execute("SELECT number FROM upload_parts WHERE sha256 = ? "
                                        "ORDER BY 1", (sha_a,))] == [1, 2]
    store = CountingStore(settings.store)
    up = Uploader(settings, on_stored=lambda: None, store=store)
    up.start()
    deadline = time.monotonic() + 60
    while len(ob.unsent(0, 10)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    up.stop()
    up.join(10)
    assert up.error is None
    assert store.parts == [3, 1, 2, 3] and up.sent_bytes == 2 * MIB + 11 * MIB
    assert _stored(objects, sha_a) == a.read_bytes()
    assert _stored(objects, sha_b) == b.read_bytes()
    assert len(ob.unsent(0, 10)) == 2


def test_a_stored_document_gone_from_the_disk_is_stored_not_lost(objects,
                                                                  tmp_path: Path) -> None:
    """The HEAD answers before the missing file counts: queued again after it was stored (a
    lost outbox, a copy), a document no longer on the disk is not reported unreadable."""
    settings = _settings(objects, tmp_path)
    path, sha = _document(tmp_path, "001.pdf", 7 * MIB)
    _queue(settings, path, sha)
    _drain(settings)
    other = tmp_path / "again"
    other.mkdir()
    settings2 = _settings(objects, other)
    copy, _ = _document(other, "001.pdf", 1)
    copy.write_bytes(path.read_bytes())
    ob = _queue(settings2, copy, sha)
    copy.unlink()
    store = CountingStore(settings2.store)
    assert _drain(settings2, store).sent_bytes == 0 and store.parts == []
    assert ob.db.execute("SELECT state FROM uploads").fetchone()[0] == "stored"


def test_another_copy_of_the_bytes_serves(objects, tmp_path: Path) -> None:
    settings = _settings(objects, tmp_path)
    first, sha = _document(tmp_path, "001.jpg", 4000)
    ob = _queue(settings, first, sha)
    copy = first.with_name("copy-001.jpg")
    copy.write_bytes(first.read_bytes())
    ob.db.execute("INSERT INTO pages (root, path, dir, size, mtime_ns, sha256, state) "
                  "VALUES (?, 'F/HS/copy-001.jpg', 'F/HS', 4000, 0, ?, 'sent')",
                  (str(tmp_path / "hot"), sha))
    first.unlink()
    _drain(settings)
    assert _stored(objects, sha) == copy.read_bytes()


def test_workers_read_s3_confined_and_verified(objects, tmp_path: Path) -> None:
    site = ObjectStore(objects.store(f"site:{SITE}"))
    data = os.urandom(50_000)
    sha = _sha(data)
    site.put(PAGES, page_key(SITE, sha), data, sha)
    settings = Settings(store=objects.store("workers"),
                        sources={"watcher_roots": False})
    src = PageSources.from_settings(settings)
    import pickle

    src = pickle.loads(pickle.dumps(src))  # as the QC pool gets it
    uri = page_uri(PAGES, SITE, sha)
    assert src.read_verified(SITE, uri, sha) == data
    with src.open_verified(SITE, uri, sha) as vf:
        assert vf.size == len(data) and Path(vf.path).read_bytes() == data
    with src.open_confined(SITE, uri) as vf:
        assert vf.file.read() == data
    # Another site naming this object, a key that is not the document's address, another
    # bucket: refused before any request.
    for site_id, u, s in ((("xa-khac"), uri, sha), (SITE, uri, "f" * 64),
                          (SITE, f"s3://{OUTPUTS}/{page_key(SITE, sha)}", sha),
                          (SITE, f"s3://{PAGES}/{SITE}/ff/{sha}", sha)):
        with pytest.raises(SourceRefused):
            src.read_verified(site_id, u, s)
    missing = "e" * 64
    with pytest.raises(SourceError, match="not in the object store"):
        src.read_verified(SITE, page_uri(PAGES, SITE, missing), missing)
    # A store that holds other bytes under a key (written around the uploader): caught.
    forged = os.urandom(100)
    fake_sha = "d" * 64
    ObjectStore(objects.store("admin"))._call(
        "put_object", Bucket=PAGES, Key=page_key(SITE, fake_sha), Body=forged)
    with pytest.raises(SourceError, match="sha256 mismatch"):
        src.read_verified(SITE, page_uri(PAGES, SITE, fake_sha), fake_sha)
    with pytest.raises(SourceError, match="sha256 mismatch"), \
            src.open_confined(SITE, page_uri(PAGES, SITE, fake_sha)):
        pass


def test_a_page_overwritten_or_hidden_is_still_read_from_its_stored_version(
        objects, tmp_path: Path, caplog) -> None:
    import logging

    site = ObjectStore(objects.store(f"site:{SITE}"), retries=0)
    admin = ObjectStore(objects.store("admin"), retries=0)
    data = os.urandom(20_000)
    sha = _sha(data)
    key = page_key(SITE, sha)
    site.put(PAGES, key, data, sha)
    src = PageSources.from_settings(Settings(store=objects.store("workers"),
                                             sources={"watcher_roots": False}))
    uri = page_uri(PAGES, SITE, sha)
    # A stolen site key PUTs other bytes over the page (no If-None-Match: nothing in the
    # store's policies can require it). The fault is real: a plain GET gives those bytes.
    site._call("put_object", Bucket=PAGES, Key=key, Body=b"not the scan",
               Metadata={"sha256": sha})
    assert _err(lambda: site.put(PAGES, key, data, sha)).code == "PreconditionFailed"
    plain = io.BytesIO()
    assert admin.get_into(PAGES, key, plain, 10**6)[0] != sha
    with caplog.at_level(logging.WARNING, logger="streams.sources"):
        assert src.read_verified(SITE, uri, sha) == data
        with src.open_confined(SITE, uri) as vf:
            assert vf.file.read() == data
    assert any("tampered" in r.getMessage() for r in caplog.records)
    # Each read is handed to whoever counts them (the worker's metric), once.
    assert src.take_tampered() == [key, key] and src.take_tampered() == []
    # A delete marker over it (only the admin's key can still put one): read all the same.
    admin._call("delete_object", Bucket=PAGES, Key=key)
    assert _err(lambda: admin.get_into(PAGES, key, io.BytesIO(), 10**6)).code in (
        "NoSuchKey", "404")
    assert src.read_verified(SITE, uri, sha) == data
    # A key none of whose versions is the document is still a mismatch.
    fake = "9" * 64
    admin._call("put_object", Bucket=PAGES, Key=page_key(SITE, fake), Body=b"a")
    admin._call("put_object", Bucket=PAGES, Key=page_key(SITE, fake), Body=b"b")
    with pytest.raises(SourceError, match="sha256 mismatch"):
        src.read_verified(SITE, page_uri(PAGES, SITE, fake), fake)


def test_ocr_outputs_stored_once_and_read_by_the_reader(objects, tmp_path: Path) -> None:
    from streams.outputs import output_key, store_outputs

    pdf = tmp_path / "r1.pdf"
    txt = tmp_path / "r1.txt"
    pdf.write_bytes(b"%PDF-1.7 " + os.urandom(2000))
    txt.write_text("Quyết định số 15", encoding="utf-8")
    cfg = objects.store("workers")
    uris = store_outputs(cfg, SITE, "PHONG-A", "HS 01", 1, [pdf, txt])
    key = output_key(SITE, "PHONG-A", "HS 01", 1, _sha(pdf.read_bytes()), ".pdf")
    assert uris[0] == f"s3://{OUTPUTS}/{key}"
    # A replay stores nothing new; other bytes under the same key are refused.
    assert store_outputs(cfg, SITE, "PHONG-A", "HS 01", 1, [pdf, txt]) == uris
    workers = ObjectStore(cfg)
    with pytest.raises(StoreError, match="other bytes"):
        workers.put_file(OUTPUTS, key, io.BytesIO(b"forged"), _sha(b"forged"))
    buf = io.BytesIO()
    ObjectStore(objects.store("reader")).get_into(OUTPUTS, key, buf, 10**6)
    assert buf.getvalue() == pdf.read_bytes()


def test_a_large_centre_file_goes_in_parts_and_is_checked(objects, tmp_path: Path) -> None:
    """A package bigger than one part: streamed in parts, composite checksum compared."""
    big = tmp_path / "goi.zip"
    big.write_bytes(os.urandom(11 * MIB))
    sha = _sha(big.read_bytes())
    workers = ObjectStore(objects.store("workers"))
    key = f"{SITE}/_/HS/r1/{sha}.zip"
    with big.open("rb") as f:
        workers.put_file(OUTPUTS, key, f, sha, part_size=5 * MIB)
    head = workers.head(OUTPUTS, key)
    assert head is not None and head.checksum_sha256 is not None
    assert head.sha256_meta == sha and head.checksum_sha256.endswith("-3")
    with big.open("rb") as f:  # a replay: nothing new
        workers.put_file(OUTPUTS, key, f, sha, part_size=5 * MIB)
    with pytest.raises(ChecksumMismatch), big.open("rb") as f:  # not the SHA-256 given
        workers.put_file(OUTPUTS, f"{SITE}/_/HS/r1/x.zip", f, "0" * 64, part_size=5 * MIB)
    assert workers.head(OUTPUTS, f"{SITE}/_/HS/r1/x.zip") is None
