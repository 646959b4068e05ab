"""A batch parsed and shaped for COPY: pure CPU work, no database, safe in any thread or process
(:func:`prepare_wire` runs it in the consumer's parse process)."""

from __future__ import annotations

import operator
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from consumers.apply.copy_wire import copy_binary
from consumers.apply.records import BatchResult, Record, dead_letter_for
from consumers.apply.staging import (
    AUDIT,
    CHECK_KEY,
    CHECKS,
    I_DOC,
    I_NAMES,
    REVISION_KEY,
    REVISIONS,
    STAGE_COLUMNS,
    STAGE_OIDS,
    TOUCHED_FILE_OIDS,
    StageRow,
    TouchedFile,
    is_legacy,
    row_of_event,
    row_of_page,
)
from consumers.fast_events import decode_page_event
from sohoa.events import InvalidEvent, parse_event

_PAGE_TYPES = frozenset({"PageScanned", "PageRemoved", "PageChecked"})  # change a file's pages
_OPENING_TYPES = frozenset({"PageScanned", "FileManifest"})  # open a file


@dataclass
class Prepared:
    """A batch parsed and shaped for COPY."""

    data: bytes  # the staging rows in COPY binary format (a check's document aside)
    staged: int  # how many rows ``data`` holds
    audit: bytes  # their audit rows, COPY binary (see staging.AUDIT)
    revisions: bytes  # the page revisions they win, COPY binary (see staging.REVISIONS)
    checks: bytes  # their page checks but version-1 ones, COPY binary (see staging.CHECKS)
    legacy_checks: bytes  # their version-1 checks, COPY binary for `stage_checks`
    files: bytes  # the files they touch, COPY binary for `touched_files`
    sites: list[str]  # the sites they name (dead letters aside)
    staged_types: Counter[str]  # rows per event type
    legacy: Counter[str]  # version-1 rows per type, whose page the writer finds by number
    result: BatchResult
    records: list[Record]
    cpu_s: float = 0.0  # CPU seconds the preparation took, where it ran


def prepare(records: list[Record]) -> Prepared:
    started = time.process_time()
    rows, result = stage_rows(records)
    sites = sorted({r.site_id for r in rows if r.etype != "DeadLetter"})
    types = Counter(r.etype for r in rows)
    legacy = ([r for r in rows if is_legacy(r)]
              if types["PageChecked"] or types["PageRemoved"] else [])
    return Prepared(copy_binary(_without_check_documents(rows), STAGE_OIDS), len(rows),
                    copy_audit(rows, bool(legacy)), copy_revisions(rows),
                    copy_checks(rows, with_legacy=not legacy), copy_checks(legacy),
                    copy_binary(touched_files(rows), TOUCHED_FILE_OIDS), sites,
                    types, Counter(r.etype for r in legacy), result, records,
                    time.process_time() - started)


def prepare_wire(raw: list[tuple[str, int, int, bytes | None, bytes | None]]) -> Prepared:
    """:func:`prepare` for a worker process: records arrive as plain tuples (cheap to pickle)
    and are not sent back (the caller keeps its own)."""
    prepared = prepare([Record(*r) for r in raw])
    prepared.records = []
    return prepared


def stage_rows(records: list[Record]) -> tuple[list[StageRow], BatchResult]:
    """Parse and validate every record: the staging rows and the batch's dead letters,
    in-batch duplicates and next offsets."""
    result = BatchResult()
    rows: list[StageRow] = []
    seen: set[str] = set()
    for seq, rec in enumerate(records):
        key = (rec.topic, rec.partition)
        result.offsets[key] = max(result.offsets.get(key, -1), rec.offset + 1)
        try:
            row = _staged(seq, rec)
        except InvalidEvent as exc:
            result.dead_letters.append(dead_letter_for(rec, exc.reason))
            continue
        except ValueError as exc:  # input the contract failed to turn into InvalidEvent
            result.dead_letters.append(dead_letter_for(rec, f"invalid event: {exc}"))
            continue
        if row.event_id in seen:  # the same fact twice in one batch: the first counts
            result.duplicates += 1
            continue
        seen.add(row.event_id)
        rows.append(row)
    return pick_pages(rows), result


def _staged(seq: int, rec: Record) -> StageRow:
    """The staging row of one record; InvalidEvent if the contract rejects it."""
    if rec.value is None:
        raise InvalidEvent("empty record (tombstone)", b"")
    # The page events (~90 %) by the fast decoder; what it does not take, pydantic judges
    # (from the bytes: parse_event validates our own wire format without a json.loads).
    page = decode_page_event(rec.value)
    if page is not None:
        return row_of_page(seq, page, rec)
    return row_of_event(seq, parse_event(rec.value), rec)


_PAGE_KEY = operator.itemgetter(*(STAGE_COLUMNS.index(c) for c in (
    "site_id", "fonds", "file_code", "document", "page_index")))
_I_ETYPE, _I_AT, _I_REV, _I_SHA, _I_DOC_SHA = (STAGE_COLUMNS.index(c) for c in (
    "etype", "occurred_at", "revision", "sha256", "document_sha256"))
_FILE_KEY = operator.itemgetter(*(STAGE_COLUMNS.index(c) for c in (
    "site_id", "fonds", "file_code")))
_PICKS = len(StageRow._field_defaults)  # pick_rev, pick_page, first_at: the row's last fields
_I_PICK_REV = STAGE_COLUMNS.index("pick_rev")


def pick_pages(rows: list[StageRow]) -> list[StageRow]:
    """Mark, among this batch's PageScanned, the row that wins each revision and each page,
    and each page's first time: the same rule as the upserts (revision, then time, then page
    digest, then document digest), decided here so the database does not sort and window
    every batch. Most pages occur once in a batch: such a row wins both and its own time is
    the first, with no ranking. (Positions, not names: this runs for every page event.)"""
    groups: dict[tuple, list[int]] = {}
    key_of = _PAGE_KEY
    for i, r in enumerate(rows):
        if r[_I_ETYPE] == "PageScanned":
            key = key_of(r)
            g = groups.get(key)
            if g is None:
                groups[key] = [i]
            else:
                g.append(i)
    if not groups:
        return rows
    out = list(rows)
    new = tuple.__new__
    for g in groups.values():
        if len(g) == 1:
            i = g[0]
            r = rows[i]
            out[i] = new(StageRow, (*r[:-_PICKS], True, True, r[_I_AT]))
            continue
        page_win = max(g, key=lambda j: (rows[j][_I_REV], rows[j][_I_AT], rows[j][_I_SHA],
                                         rows[j][_I_DOC_SHA], j))
        rev_win: dict[int | None, tuple] = {}
        for j in g:
            r = rows[j]
            rank = (r.occurred_at, r.sha256, r.document_sha256, j)
            best = rev_win.get(r.revision)
            if best is None or rank > best:
                rev_win[r.revision] = rank
        winners = {rank[-1] for rank in rev_win.values()}
        first = min(rows[j].occurred_at for j in g)
        for j in g:
            out[j] = new(StageRow, (*rows[j][:-_PICKS], j in winners, j == page_win, first))
    return out


def touched_files(rows: list[StageRow]) -> list[TouchedFile]:
    """Each file the staged ``rows`` name, with what the batch says of it: whether its pages
    or checks changed, whether a scan or manifest opened it, and its first time. Folded here
    (where the rows already are) rather than by a GROUP BY over the batch. On the dedup path
    this includes the files of replayed events: their facts are merged already, and every
    merge of a file is idempotent, so merging them again changes nothing."""
    files: dict[tuple[str, str, str], list] = {}
    key_of = _FILE_KEY
    for r in rows:
        key = key_of(r)
        if key[2] is None or key[1] is None:
            continue
        etype, at = r[_I_ETYPE], r[_I_AT]
        f = files.get(key)
        if f is None:
            f = files[key] = [False, False, at]
        f[0] = f[0] or etype in _PAGE_TYPES
        f[1] = f[1] or etype in _OPENING_TYPES
        if at < f[2]:
            f[2] = at
    return [TouchedFile(*key, changed, opened, first)
            for key, (changed, opened, first) in files.items()]


def copy_audit(rows: list[StageRow], legacy: bool = True) -> bytes:
    """The audit rows of staged ``rows``, COPY binary for ``audit_log``. A version-1 check's
    document is not known yet: its row names the page by number only (``legacy``: there may
    be such events)."""
    pick = AUDIT.pick
    if not legacy:
        return copy_binary(map(pick, rows), AUDIT.oids)
    return copy_binary((_no_document(pick(r)) if is_legacy(r) else pick(r)
                        for r in rows), AUDIT.oids)


_AUDIT_DOCUMENT = AUDIT.columns.index("document")


def _no_document(audit_row: tuple) -> tuple:
    return (*audit_row[:_AUDIT_DOCUMENT], None, *audit_row[_AUDIT_DOCUMENT + 1:])


def copy_revisions(rows: list[StageRow]) -> bytes:
    """The page revisions that staged ``rows`` win (``pick_rev``), COPY binary for
    ``page_revisions``, in key order: consecutive inserts land on neighbouring leaves of the
    primary key, which makes this COPY cheaper than in arrival order."""
    pick = REVISIONS.pick
    return copy_binary(sorted((pick(r) for r in rows
                               if r[_I_ETYPE] == "PageScanned" and r[_I_PICK_REV]),
                              key=REVISION_KEY), REVISIONS.oids)


def copy_checks(rows: list[StageRow], *, with_legacy: bool = True) -> bytes:
    """The page checks among staged ``rows``, COPY binary for ``page_checks``, in key order
    (as :func:`copy_revisions`). ``with_legacy=False`` leaves out version-1 checks: their
    page is found by the writer before they go there."""
    pick = CHECKS.pick
    return copy_binary(sorted((pick(r) for r in rows if r[_I_ETYPE] == "PageChecked"
                               and (with_legacy or not is_legacy(r))),
                              key=CHECK_KEY), CHECKS.oids)


def _without_check_documents(rows: list[StageRow]) -> Iterator[tuple]:
    """The staging rows less what only ``page_checks`` reads (its failed names and document):
    a check is COPYed there whole (:func:`copy_checks`), so its JSON is parsed once, not
    twice."""
    for r in rows:
        if r[_I_ETYPE] == "PageChecked":
            yield (*r[:I_NAMES], None, None, *r[I_DOC + 1:])
        else:
            yield r

