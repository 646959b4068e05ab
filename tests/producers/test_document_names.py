"""DocumentNames: a document's name in its file against a real outbox (SQLite), committed rows
and rows queued in the turn, before and after the per-file cache takes over."""

from __future__ import annotations

from pathlib import Path

from producers.document_names import DocumentNames
from producers.outbox import Known, Outbox


def _commit(ob: Outbox, root: str, path: str, document: str, state: str = "sent") -> None:
    with ob.transaction() as db:
        db.execute("INSERT INTO pages (root, path, dir, size, mtime_ns, sha256, fonds, file_code, "
                   "page_no, state, reason, event_id, document, npages) "
                   "VALUES (?,?,?,1,1,NULL,'F','HS',NULL,?,NULL,NULL,?,1)",
                   (root, path, path.rpartition("/")[0], state, document))


def _known(path: str, document: str, state: str = "sent") -> Known:
    return Known(path, 1, 1, None, state, "F", "HS", None, document, 1)


def test_names_against_committed_and_queued_rows(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "outbox.sqlite3")
    try:
        _commit(ob, "/r", "F/HS/001.png", "001.png")              # the NFC folder's page
        _commit(ob, "/r", "F/HS/gone.png", "gone.png", "removed")  # holds no name
        names = DocumentNames(ob)
        nfd = ("/r", "F/HS\u0301/001.png")
        # First document of the file in the turn: one query for its name.
        assert names.name(nfd, "F", "HS", "001.png") == "001.png|2"
        # Second one: the file's names are loaded whole, with the same answers.
        assert names.name(nfd, "F", "HS", "001.png") == "001.png|2"
        assert names.name(("/r", "F/HS/001.png"), "F", "HS", "001.png") == "001.png"
        assert names.name(("/r", "F/HS/x/gone.png"), "F", "HS", "gone.png") == "gone.png"
        # A row queued in this turn holds its name before it is committed...
        names.queued(nfd, None, _known(nfd[1], "001.png|2"))
        other = ("/s", "F/HS/001.png")
        assert names.name(other, "F", "HS", "001.png") == "001.png|3"
        # ...and no longer once queued again as removed.
        names.queued(nfd, _known(nfd[1], "001.png|2"), _known(nfd[1], "001.png|2", "removed"))
        assert names.name(other, "F", "HS", "001.png") == "001.png|2"
        # After the commit the cache is dropped: a row committed since is seen.
        names.clear()
        _commit(ob, "/s", "F/HS/001.png", "001.png|2")
        assert names.name(nfd, "F", "HS", "001.png") == "001.png|3"
        assert names.name(nfd, "F", "HS", "001.png") == "001.png|3"
    finally:
        ob.close()
