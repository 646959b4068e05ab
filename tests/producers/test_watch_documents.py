"""The agent's document model without a broker: what a document's new bytes change page by
page, the identity of NFD/NFC twin folders, and an outbox written before documents."""

from __future__ import annotations

import json
import sqlite3
import unicodedata
from pathlib import Path

from producers.changes import DocumentRead, document_changes
from producers.layout import Layout
from producers.outbox import KnownPage, Outbox
from tests.support.watch_helpers import tiny_image

LAYOUT = Layout("{fonds}/{file}/{page}")


def _digests(n: int, changed: dict[int, str] | None = None) -> tuple[str, ...]:
    changed = changed or {}
    return tuple(changed.get(i, f"{i:064x}") for i in range(1, n + 1))


def _read(n: int, doc_sha: str, changed: dict[int, str] | None = None) -> DocumentRead:
    name = LAYOUT.parse(("F", "HS-01", "QD-15.pdf"))
    return DocumentRead(name=name, document=name.document, path="F/HS-01/QD-15.pdf",
                        uri="file:///hot/F/HS-01/QD-15.pdf", sha256=doc_sha, size=1000,
                        media_type="application/pdf", page_sha256=_digests(n, changed))


def _stored(n: int, revision: int = 1) -> dict[int, KnownPage]:
    return {i: KnownPage(i, d, revision, "sent") for i, d in enumerate(_digests(n), start=1)}


def test_a_new_document_sends_every_page_once() -> None:
    ch = document_changes("xa-a", _read(30, "a" * 64), {}, None)
    assert [(e.NAME, e.page_index, e.revision) for e in (_ev(x) for x in ch.events)] == [
        ("PageScanned", i, 1) for i in range(1, 31)]
    assert {_ev(x).document_pages for x in ch.events} == {30}
    assert {_ev(x).number for x in ch.events} == {15}, "each page carries its document's number"
    assert ch.new_revisions == 30


def test_a_rescan_with_one_page_more_and_one_changed_is_one_new_page_and_one_revision() -> None:
    ch = document_changes("xa-a", _read(41, "b" * 64, {7: "c" * 64}), _stored(40), "a" * 64)
    evs = [_ev(x) for x in ch.events]
    assert ch.new_revisions == 2
    new = {(e.page_index, e.revision) for e in evs if (e.page_index, e.revision) != (
        e.page_index, 1) or e.page_index in (7, 41)}
    assert (7, 2) in new and (41, 1) in new
    # The 39 unchanged pages point at the new bytes at their old revision: no new count.
    refresh = [e for e in evs if e.page_index not in (7, 41)]
    assert len(refresh) == 39 and {e.revision for e in refresh} == {1}
    assert {e.document_sha256 for e in evs} == {"b" * 64}
    assert not [e for e in evs if e.NAME == "PageRemoved"]


def test_a_rescan_with_fewer_pages_removes_the_pages_it_lost() -> None:
    ch = document_changes("xa-a", _read(38, "b" * 64), _stored(40), "a" * 64)
    removed = [_ev(x) for x in ch.events if x.NAME == "PageRemoved"]
    assert [(e.page_index, e.sha256) for e in removed] == [(39, f"{39:064x}"),
                                                           (40, f"{40:064x}")]
    assert ch.new_revisions == 0
    assert [p.state for p in ch.pages if p.page_index > 38] == ["removed", "removed"]


def test_the_same_bytes_change_nothing() -> None:
    ch = document_changes("xa-a", _read(40, "a" * 64), _stored(40), "a" * 64)
    assert ch.events == [] and ch.pages == []


def test_a_page_removed_then_back_is_a_new_revision() -> None:
    stored = _stored(2)
    stored[2] = KnownPage(2, stored[2].sha256, 1, "removed")
    ch = document_changes("xa-a", _read(2, "b" * 64), stored, "a" * 64)
    assert [(_ev(x).page_index, _ev(x).revision) for x in ch.events] == [(1, 1), (2, 2)]


def test_a_single_page_document_claims_its_number() -> None:
    name = LAYOUT.parse(("F", "HS-01", "003.tif"))
    doc = DocumentRead(name=name, document=name.document, path="F/HS-01/003.tif",
                       uri="file:///x", sha256="d" * 64, size=10, media_type="image/tiff",
                       page_sha256=("d" * 64,))
    (ev,) = [_ev(x) for x in document_changes("xa-a", doc, {}, None).events]
    assert (ev.document, ev.page_index, ev.number, ev.document_pages) == ("003.tif", 1, 3, 1)


def _ev(x):
    from sohoa.events import parse_event

    return parse_event(x.to_json())


def _agent(tmp_path: Path, root: Path, **kw):
    from producers.agent import Agent
    from producers.metrics import AgentMetrics
    from sohoa.config import Settings, WatcherConfig

    kw.setdefault("stability_window_s", 0.1)
    cfg = WatcherConfig(site_id="xa-u", roots=[root],
                        outbox_path=tmp_path / "ob" / "outbox.sqlite3", **kw)
    return Agent(Settings(watcher=cfg), AgentMetrics("xa-u"))


def _queued(agent, etype: str) -> list[dict]:
    return [json.loads(v) for (v,) in agent.ob.db.execute(
        "SELECT value FROM outbox WHERE etype = ? ORDER BY seq", (etype,))]


def test_nfd_and_nfc_twin_folders_keep_both_documents_through_many_walks(tmp_path: Path) -> None:
    """A file folder copied from a Mac (NFD) beside its twin typed on Windows (NFC): one file,
    and each page file on disk is its own document, walk after walk (no page flips between
    "removed" and a new revision)."""
    code = "Hồ sơ 12"
    root = tmp_path / "hot"
    nfd = root / "F" / unicodedata.normalize("NFD", code)
    nfc = root / "F" / unicodedata.normalize("NFC", code)
    for folder, seed in ((nfd, 1), (nfc, 2)):
        folder.mkdir(parents=True)
        (folder / "001.png").write_bytes(tiny_image("PNG", seed))
    (nfc / "002.png").write_bytes(tiny_image("PNG", 3))
    a = _agent(tmp_path, root)
    for _ in range(4):
        a.run(once=True)
        a.close()
        a = _agent(tmp_path, root)
    scanned = _queued(a, "PageScanned")
    assert len(scanned) == 3, [s["document"] for s in scanned]
    assert {s["file_code"] for s in scanned} == {unicodedata.normalize("NFC", code)}
    assert sorted(s["document"] for s in scanned) == ["001.png", "001.png|2", "002.png"]
    # Both documents claim page 1: the assembly flags the duplicate, nothing is lost.
    assert sorted(s["number"] for s in scanned) == [1, 1, 2]
    assert sorted(s["path"] for s in scanned) == sorted([
        f"F/{unicodedata.normalize('NFD', code)}/001.png",
        f"F/{unicodedata.normalize('NFC', code)}/001.png",
        f"F/{unicodedata.normalize('NFC', code)}/002.png"])
    assert _queued(a, "PageRemoved") == []
    closed_before = len(_queued(a, "FileClosed"))
    # The NFD copy removed by the operator: exactly its page leaves, the twin's stays.
    (nfd / "001.png").unlink()
    for _ in range(2):
        a.close()
        a = _agent(tmp_path, root)
        a.run(once=True)
    removed = _queued(a, "PageRemoved")
    assert [(r["document"], r["path"]) for r in removed] == [
        (next(s["document"] for s in scanned if s["path"].startswith(
            f"F/{unicodedata.normalize('NFD', code)}")),
         f"F/{unicodedata.normalize('NFD', code)}/001.png")]
    assert len(_queued(a, "PageScanned")) == 3
    assert len(_queued(a, "FileClosed")) == closed_before
    a.close()


def test_a_slow_writer_leaves_no_false_dead_letter(tmp_path: Path) -> None:
    """A scanner that pauses longer than the window leaves a truncated file for a while: it is
    read again until it is complete, and never reported as corrupt."""
    import threading
    import time

    root = tmp_path / "hot"
    folder = root / "F" / "HS"
    folder.mkdir(parents=True)
    data = tiny_image("PNG", 9, size=(64, 64))
    a = _agent(tmp_path, root, stability_window_s=0.2, incomplete_grace_s=30)
    page = folder / "001.png"
    page.write_bytes(data[: len(data) // 2])

    def finish() -> None:
        time.sleep(1.0)  # five windows without a write
        with page.open("ab") as fh:
            fh.write(data[len(data) // 2:])

    t = threading.Thread(target=finish)
    t.start()
    a.run(once=True)  # once: returns when everything seen is recorded
    t.join()
    assert len(_queued(a, "PageScanned")) == 1
    assert _queued(a, "DeadLetter") == []
    a.close()


def test_a_truncated_file_past_its_grace_is_rejected(tmp_path: Path) -> None:
    root = tmp_path / "hot"
    folder = root / "F" / "HS"
    folder.mkdir(parents=True)
    data = tiny_image("PNG", 9, size=(64, 64))
    (folder / "001.png").write_bytes(data[: len(data) // 2])
    a = _agent(tmp_path, root, incomplete_grace_s=0)
    a.run(once=True)
    dead = _queued(a, "DeadLetter")
    assert len(dead) == 1 and dead[0]["reason"].startswith("corrupt")
    a.close()


def test_an_outbox_from_before_documents_is_upgraded_without_resending(tmp_path: Path) -> None:
    """A version-1 outbox (NFC paths, one page per row): the upgraded agent finds every page
    unchanged, sends nothing again, and still reports a removal and a rescan as before."""
    code_nfd = unicodedata.normalize("NFD", "Hồ sơ 7")
    root = tmp_path / "hot"
    folder = root / "F" / code_nfd
    folder.mkdir(parents=True)
    pages = {n: tiny_image("PNG", n) for n in (1, 2)}
    import hashlib

    for n, data in pages.items():
        (folder / f"{n:03d}.png").write_bytes(data)
    path = tmp_path / "ob" / "outbox.sqlite3"
    path.parent.mkdir()
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA)
    nfc_dir = f"F/{unicodedata.normalize('NFC', code_nfd)}"
    for n, data in pages.items():
        st = (folder / f"{n:03d}.png").stat()
        db.execute("INSERT INTO pages VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                   (str(root), f"{nfc_dir}/{n:03d}.png", nfc_dir, st.st_size, st.st_mtime_ns,
                    hashlib.sha256(data).hexdigest(), 1, "F", unicodedata.normalize(
                        "NFC", code_nfd), n, "sent", None, f"ev-{n}"))
    db.execute("INSERT INTO files VALUES (?,?,0,NULL,?)", (str(root), nfc_dir, 1.0))
    db.commit()
    db.close()
    a = _agent(tmp_path, root)
    from producers.outbox import SCHEMA_VERSION

    assert a.ob.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    a.run(once=True)
    assert _queued(a, "PageScanned") == [], "unchanged pages are not sent again"
    assert a.ob.file_row("F", unicodedata.normalize("NFC", code_nfd)) is not None
    a.close()
    (folder / "002.png").write_bytes(tiny_image("PNG", 22))  # rescanned
    (folder / "001.png").unlink()
    a = _agent(tmp_path, root)  # each run of a cron-style agent is a new process
    a.run(once=True)
    (rescan,) = _queued(a, "PageScanned")
    assert (rescan["document"], rescan["revision"], rescan["number"]) == ("002.png", 2, 2)
    (removed,) = _queued(a, "PageRemoved")
    assert (removed["document"], removed["sha256"]) == (
        "001.png", hashlib.sha256(pages[1]).hexdigest())
    a.close()
    assert Outbox(path).db.execute("SELECT count(*) FROM doc_pages").fetchone()[0] == 2


V1_SCHEMA = """
CREATE TABLE pages (
    root TEXT NOT NULL, path TEXT NOT NULL, dir TEXT NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, sha256 TEXT, revision INTEGER NOT NULL DEFAULT 0, fonds TEXT,
    file_code TEXT, page_no INTEGER, state TEXT NOT NULL, reason TEXT, event_id TEXT,
    PRIMARY KEY (root, path)) WITHOUT ROWID;
CREATE INDEX pages_walk ON pages (root, dir, path, size, mtime_ns, state);
CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL,
    kind TEXT NOT NULL, etype TEXT NOT NULL, key TEXT, value BLOB NOT NULL, created REAL NOT NULL,
    sent REAL);
CREATE UNIQUE INDEX outbox_event ON outbox (event_id);
CREATE TABLE files (root TEXT NOT NULL, file_dir TEXT NOT NULL,
    closed INTEGER NOT NULL DEFAULT 0, manifest TEXT, last_page REAL,
    PRIMARY KEY (root, file_dir)) WITHOUT ROWID;
"""


def test_a_folder_of_new_documents_asks_the_outbox_for_identities_once(tmp_path: Path) -> None:
    """Naming a new document looks for a twin holding its identity. Asked of the outbox once
    per document (and with a scan of every row pending in the turn), a drop of a whole folder
    cost the agent twice the CPU a page of the previous release did; one query for the file
    serves every document of it in the turn. A twin of a document in the same turn (NFD beside
    NFC) is still named apart."""
    code = "Hồ sơ 7"
    root = tmp_path / "hot"
    nfc = root / "F" / unicodedata.normalize("NFC", code)
    nfd = root / "F" / unicodedata.normalize("NFD", code)
    nfc.mkdir(parents=True)
    nfd.mkdir(parents=True)
    for n in range(1, 201):
        (nfc / f"{n:03d}.png").write_bytes(tiny_image("PNG", n))
    (nfd / "005.png").write_bytes(tiny_image("PNG", 999))
    a = _agent(tmp_path, root)
    statements: list[str] = []
    a.ob.db.set_trace_callback(statements.append)
    a.run(once=True)
    a.ob.db.set_trace_callback(None)
    identity = [s for s in statements
                if s.startswith("SELECT") and "FROM pages WHERE fonds" in s]
    # At most two per file and commit (a point query, then the file's rows): 201 before.
    assert 1 <= len(identity) <= 2 * a._commits < 100, (len(identity), a._commits)
    documents = sorted(s["document"] for s in _queued(a, "PageScanned"))
    assert len(documents) == 201
    assert documents.count("005.png") == 1 and "005.png|2" in documents
    a.close()
