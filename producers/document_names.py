"""Which document rows hold a name in a file, within one loop turn of the agent.

A document's identity in its file is (fonds, file_code, document). A new document takes its NFC
name unless another spelling of the same path (an NFD twin folder) already holds it; then
``name|2``, ``name|3``... Who holds a name is the committed outbox rows plus the rows queued in
this turn and not yet committed. The agent's loop thread is the only writer of the outbox's
``pages``: it tells :meth:`DocumentNames.committed` what each commit wrote, so the files' names
loaded from the outbox stay exact across turns (one query per file for a whole drop, not one
per turn: each query hands the interpreter lock to the hashing threads), and calls
:meth:`DocumentNames.clear` after any other write to ``pages``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple, Protocol

from producers.outbox import Known

RowKey = tuple[str, str]  # (root, path) of a row of the outbox's ``pages``
# A committed row: (root, path), fonds, file code, document, state, as written to ``pages``.
CommittedRow = tuple[RowKey, str | None, str | None, str | None, str]

HOLDING = ("sent", "rejected")  # the states in which a row holds its name
MAX_FILES = 256  # files whose committed names are kept; more, and all are loaded again


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

    __slots__ = ("_committed", "_file_names", "_files_asked", "_held", "_pending")

    def __init__(self, committed: CommittedNames) -> None:
        self._committed = committed
        # identity -> the rows queued this turn that hold it. A scan of every queued row for
        # each new document made a drop quadratic.
        self._pending: dict[Identity, set[RowKey]] = {}
        # A file's committed names are loaded whole on its second new document: a drop of a
        # whole folder then costs one query, not one per document.
        self._files_asked: set[FileKey] = set()
        self._file_names: dict[FileKey, dict[str | None, set[RowKey]]] = {}
        # Where each row listed in _file_names is listed, so a commit can move it.
        self._held: dict[RowKey, tuple[FileKey, str | None]] = {}

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
        if known.state in HOLDING:
            self._pending.setdefault(_identity(known), set()).add(row)

    def committed(self, rows: Iterable[CommittedRow]) -> None:
        """The turn's rows are committed, as ``rows`` (in the order written): the cached
        files' names now hold them as the outbox does, and the turn is forgotten."""
        self._pending = {}
        for row, fonds, file_code, document, state in rows:
            held = self._held.pop(row, None)
            if held is not None:
                self._file_names[held[0]].get(held[1], set()).discard(row)
            if state not in HOLDING:
                continue
            if fonds is None or file_code is None or document is None:
                # The outbox keeps the identity the row had (coalesce), which may be one of a
                # cached file this row was not listed in: load the files again.
                self.clear()
                continue
            f = FileKey(fonds, file_code)
            names = self._file_names.get(f)
            if names is not None:
                names.setdefault(document, set()).add(row)
                self._held[row] = (f, document)

    def clear(self) -> None:
        """Forget everything: ``pages`` was written other than through :meth:`committed`."""
        self._pending = {}
        self._files_asked = set()
        self._file_names = {}
        self._held = {}

    def _committed_holders(self, fonds: str, file_code: str, document: str) -> set[RowKey]:
        f = FileKey(fonds, file_code)
        cached = self._file_names.get(f)
        if cached is None and f in self._files_asked:
            if len(self._file_names) >= MAX_FILES:
                pending = self._pending
                self.clear()
                self._pending = pending
            cached = self._file_names[f] = {}
            for doc, root, path in self._committed.documents_of_file(fonds, file_code):
                cached.setdefault(doc, set()).add((root, path))
                self._held[(root, path)] = (f, doc)
        if cached is not None:
            return set(cached.get(document, ()))
        self._files_asked.add(f)
        return set(self._committed.documents_named(fonds, file_code, document))


def _identity(k: Known) -> Identity:
    return Identity(k.fonds, k.file_code, k.document)
