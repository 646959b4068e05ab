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


class _Counted:
    """The outbox's name queries, counted."""

    def __init__(self, ob: Outbox) -> None:
        self.ob = ob
        self.queries = 0

    def documents_named(self, fonds: str, file_code: str, document: str
                        ) -> list[tuple[str, str]]:
        self.queries += 1
        return self.ob.documents_named(fonds, file_code, document)

    def documents_of_file(self, fonds: str | None, file_code: str | None
                          ) -> list[tuple[str, str, str]]:
        self.queries += 1
        return self.ob.documents_of_file(fonds, file_code)


def _write(ob: Outbox, names: DocumentNames, rows: list[tuple[str, str, str | None, str]]
           ) -> None:
    """The agent's commit: (root, path, document, state) written as its loop does (a None
    document keeps the row's identity), then told to ``names``."""
    with ob.transaction() as db:
        for root, path, document, state in rows:
            fonds = None if document is None else "F"
            code = None if document is None else "HS"
            db.execute(
                "INSERT INTO pages (root, path, dir, size, mtime_ns, state, fonds, file_code, "
                "document) VALUES (?,?,?,1,1,?,?,?,?) ON CONFLICT (root, path) DO UPDATE SET "
                "state=excluded.state, fonds=coalesce(excluded.fonds, pages.fonds), "
                "file_code=coalesce(excluded.file_code, pages.file_code), "
                "document=coalesce(excluded.document, pages.document)",
                (root, path, path.rpartition("/")[0], state, fonds, code, document))
    names.committed(((root, path), None if d is None else "F", None if d is None else "HS", d,
                     state) for root, path, d, state in rows)


def test_committed_rows_move_in_the_cached_names_without_a_query(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "outbox.sqlite3")
    try:
        _commit(ob, "/r", "F/HS/001.png", "001.png")
        counted = _Counted(ob)
        names = DocumentNames(counted)
        a, b, c = ("/a", "F/HS/001.png"), ("/b", "F/HS/001.png"), ("/c", "F/HS/001.png")

        def check() -> None:
            """Every answer as a DocumentNames that never cached anything gives it."""
            for row in (a, b, c, ("/r", "F/HS/001.png")):
                for doc in ("001.png", "001.png|2", "002.png"):
                    assert names.name(row, "F", "HS", doc) == \
                        DocumentNames(ob).name(row, "F", "HS", doc), (row, doc)

        assert names.name(a, "F", "HS", "001.png") == "001.png|2"
        assert names.name(a, "F", "HS", "001.png") == "001.png|2"  # the file is loaded
        loaded = counted.queries
        assert loaded == 2
        _write(ob, names, [(a[0], a[1], "001.png|2", "sent")])
        assert names.name(b, "F", "HS", "001.png") == "001.png|3"
        # Moved (removed, renamed) and added in later commits: still no query.
        _write(ob, names, [(b[0], b[1], "001.png|3", "sent"), (a[0], a[1], "001.png|2", "removed")])
        assert names.name(c, "F", "HS", "001.png") == "001.png|2"
        _write(ob, names, [(b[0], b[1], "002.png", "sent"), (c[0], c[1], "001.png|2", "sent")])
        assert counted.queries == loaded
        check()
        # A rejection keeps the identity the row had: loaded again from the outbox.
        _write(ob, names, [(b[0], b[1], None, "rejected")])
        assert names.name(a, "F", "HS", "002.png") == "002.png|2"
        assert counted.queries > loaded
        check()
    finally:
        ob.close()
