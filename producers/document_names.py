"""Which document rows hold a name in a file, within one loop turn of the agent.

A document's identity in its file is (fonds, file_code, document). A new document takes its NFC
name unless another spelling of the same path (an NFD twin folder) already holds it; then
``name|2``, ``name|3``... Who holds a name is the committed outbox rows plus the rows queued in
this turn and not yet committed; both views are valid only until the turn's commit, so the agent
calls :meth:`DocumentNames.clear` after each one.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from producers.outbox import Known

RowKey = tuple[str, str]  # (root, path) of a row of the outbox's ``pages``


class Identity(NamedTuple):
    fonds: str | None
    file_code: str | None
    document: str | None


class FileKey(NamedTuple):
    fonds: str | None
    file_code: str | None


class CommittedNames(Protocol):
    """The outbox's two queries on committed names (:class:`producers.outbox.Outbox`)."""

    def documents_named(self, fonds: str, file_code: str, document: str
                        ) -> list[tuple[str, str]]: ...

    def documents_of_file(self, fonds: str | None, file_code: str | None
                          ) -> list[tuple[str, str, str]]: ...


class DocumentNames:
    """The holders of each identity: committed (queried, then cached per file) and pending."""

    __slots__ = ("_committed", "_file_names", "_files_asked", "_pending")

    def __init__(self, committed: CommittedNames) -> None:
        self._committed = committed
        # identity -> the rows queued this turn that hold it. A scan of every queued row for
        # each new document made a drop quadratic.
        self._pending: dict[Identity, set[RowKey]] = {}
        # A file's committed names are loaded whole on its second new document in a turn: a
        # drop of a whole folder then costs one query, not one per document (each query hands
        # the interpreter lock to the hashing threads).
        self._files_asked: set[FileKey] = set()
        self._file_names: dict[FileKey, dict[str | None, set[RowKey]]] = {}

    def name(self, row: RowKey, fonds: str, file_code: str, document: str) -> str:
        """The name ``row`` takes in its file for the NFC name ``document``: itself, unless
        another row holds it; then the first of ``document|2``, ``document|3``... free."""
        candidate, n = document, 1
        while True:
            holders = self._committed_holders(fonds, file_code, candidate) | \
                self._pending.get(Identity(fonds, file_code, candidate), set())
            holders.discard(row)
            if not holders:
                return candidate
            n += 1
            candidate = f"{document}|{n}"

    def queued(self, row: RowKey, prior: Known | None, known: Known) -> None:
        """``row`` was queued as ``known``, replacing ``prior`` queued earlier this turn."""
        if prior is not None:
            self._pending.get(_identity(prior), set()).discard(row)
        if known.state in ("sent", "rejected"):
            self._pending.setdefault(_identity(known), set()).add(row)

    def clear(self) -> None:
        """Forget the turn: its rows are committed, the cached names may be stale."""
        self._pending = {}
        self._files_asked = set()
        self._file_names = {}

    def _committed_holders(self, fonds: str, file_code: str, document: str) -> set[RowKey]:
        f = FileKey(fonds, file_code)
        cached = self._file_names.get(f)
        if cached is None and f in self._files_asked:
            cached = self._file_names[f] = {}
            for doc, root, path in self._committed.documents_of_file(fonds, file_code):
                cached.setdefault(doc, set()).add((root, path))
        if cached is not None:
            return set(cached.get(document, ()))
        self._files_asked.add(f)
        return set(self._committed.documents_named(fonds, file_code, document))


def _identity(k: Known) -> Identity:
    return Identity(k.fonds, k.file_code, k.document)
