"""The staging rows of a batch: their columns (declared once, in :class:`StageRow`), how an event
becomes one, and the tables a batch's rows are COPYed into (each column there named by the
staging column it comes from, so types and positions follow).

The staging table is partitioned by event type: most merges read one type (`WHERE etype =
'X'`, pruned when planned), so each scans its own partition instead of the whole batch. The
two page types are ~90 % of the events; the others share the default partition.
"""

from __future__ import annotations

import operator
from datetime import datetime
from typing import Annotated, NamedTuple

import pydantic_core

from consumers.apply.columns import Pg, column_ddl, copy_into, declared, oids
from consumers.apply.copy_wire import oid_of
from consumers.apply.records import Record, reason_class
from consumers.fast_events import FastPageScanned, PageEvent
from sohoa.events import (
    LEGACY_DOCUMENT_PREFIX,
    WIRE_PREFIX,
    DeadLetter,
    Event,
    FileEvent,
    PageChecked,
    PageRemoved,
    PageScanned,
)

KEY = Pg("text", not_null=True, c=True)  # an identifier that is always there
ID = Pg("text", c=True)  # an identifier some event types lack
INT, BIGINT, TEXT, BOOL = Pg("int4"), Pg("int8"), Pg("text"), Pg("bool")
FLOAT, TIME = Pg("float8"), Pg("timestamptz")


class StageRow(NamedTuple):
    """One event of a batch. A page event names its page by (fonds, file_code, document,
    page_index); ``number`` is the page number a single-page document's name claims, and on a
    PageChecked or PageRemoved it marks a version-1 event whose document is still to be found
    (see :func:`is_legacy`)."""

    seq: Annotated[int, Pg("int4", not_null=True)]
    event_id: Annotated[str, KEY]
    etype: Annotated[str, KEY]
    site_id: Annotated[str, KEY]
    fonds: Annotated[str | None, ID]
    file_code: Annotated[str | None, ID]
    document: Annotated[str | None, ID]
    page_index: Annotated[int | None, INT]
    number: Annotated[int | None, INT]
    document_pages: Annotated[int | None, INT]
    revision: Annotated[int | None, INT]
    sha256: Annotated[str | None, ID]
    document_sha256: Annotated[str | None, ID]
    occurred_at: Annotated[datetime, Pg("timestamptz", not_null=True)]
    topic: Annotated[str | None, TEXT]
    part: Annotated[int | None, INT]
    off: Annotated[int | None, BIGINT]
    uri: Annotated[str | None, TEXT]
    path: Annotated[str | None, TEXT]  # a DeadLetter's reason class rides here
    size_bytes: Annotated[int | None, BIGINT]
    media_type: Annotated[str | None, TEXT]
    passed: Annotated[bool | None, BOOL]
    width_mm: Annotated[float | None, FLOAT]
    height_mm: Annotated[float | None, FLOAT]
    names: Annotated[list[str] | None, Pg("text[]")]  # the checks that failed
    doc: Annotated[str | None, Pg("jsonb")]  # the event's document (a check's: its checks)
    # Decided for the batch's PageScanned rows by `prepared.pick_pages`.
    pick_rev: Annotated[bool | None, BOOL] = None
    pick_page: Annotated[bool | None, BOOL] = None
    first_at: Annotated[datetime | None, TIME] = None


class TouchedFile(NamedTuple):
    """A file the batch names, with what the batch says of it (`prepared.touched_files`)."""

    site_id: Annotated[str, KEY]
    fonds: Annotated[str, KEY]
    file_code: Annotated[str, KEY]
    pages_changed: Annotated[bool, Pg("bool", not_null=True)]
    opened: Annotated[bool, Pg("bool", not_null=True)]
    first_at: Annotated[datetime, Pg("timestamptz", not_null=True)]


STAGE_COLUMNS: tuple[str, ...] = StageRow._fields
STAGE_OIDS = oids(StageRow)
_STAGE_TYPES = dict(declared(StageRow))
TOUCHED_FILE_OIDS = oids(TouchedFile)

CREATE_TEMP = f"""
CREATE TEMP TABLE IF NOT EXISTS stage ({column_ddl(StageRow)})
    PARTITION BY LIST (etype) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_scanned PARTITION OF stage
    FOR VALUES IN ('PageScanned') ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_checked PARTITION OF stage
    FOR VALUES IN ('PageChecked') ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_other PARTITION OF stage DEFAULT ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_checks (LIKE page_checks) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS touched_days (site_id text COLLATE "C" NOT NULL,
    day date NOT NULL) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS known_pages (site_id text COLLATE "C" NOT NULL,
    fonds text COLLATE "C" NOT NULL, file_code text COLLATE "C" NOT NULL,
    document text COLLATE "C" NOT NULL, page_index integer NOT NULL, day date NOT NULL,
    removed boolean NOT NULL) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS touched_files ({column_ddl(TouchedFile)},
    PRIMARY KEY (site_id, fonds, file_code)) ON COMMIT DELETE ROWS;
"""

COPY_STAGE = copy_into("stage", STAGE_COLUMNS)
COPY_TOUCHED_FILES = copy_into("touched_files", TouchedFile._fields)


class Target:
    """A table a batch's rows are COPYed into: each column and the staging column it comes
    from; the oids follow from the staging table's types unless ``types`` says otherwise."""

    def __init__(self, table: str, columns: tuple[tuple[str, str], ...],
                 types: dict[str, str] | None = None) -> None:
        self.columns = tuple(c for c, _ in columns)
        self.pick = operator.itemgetter(*(STAGE_COLUMNS.index(src) for _, src in columns))
        self.oids = [oid_of((types or {}).get(c) or _STAGE_TYPES[src].type)
                     for c, src in columns]
        self.copy = copy_into(table, self.columns)

    def copy_as(self, table: str) -> str:
        return copy_into(table, self.columns)


# The audit row of every applied event (also its dedup record).
AUDIT = Target("audit_log", (
    ("event_id", "event_id"), ("action", "etype"), ("site_id", "site_id"), ("fonds", "fonds"),
    ("file_code", "file_code"), ("document", "document"), ("page_index", "page_index"),
    ("number", "number"), ("occurred_at", "occurred_at"), ("topic", "topic"), ("part", "part"),
    ('"offset"', "off")))
# A page revision a batch's PageScanned wins.
REVISIONS = Target("page_revisions", (
    ("site_id", "site_id"), ("fonds", "fonds"), ("file_code", "file_code"),
    ("document", "document"), ("page_index", "page_index"), ("revision", "revision"),
    ("number", "number"), ("document_pages", "document_pages"), ("sha256", "sha256"),
    ("document_sha256", "document_sha256"), ("uri", "uri"), ("path", "path"),
    ("size_bytes", "size_bytes"), ("media_type", "media_type"), ("scanned_at", "occurred_at"),
    ("event_id", "event_id")))
# A page check (`page_checks`, and `stage_checks` on the dedup path); `checks` is json there.
CHECKS = Target("page_checks", (
    ("site_id", "site_id"), ("fonds", "fonds"), ("file_code", "file_code"),
    ("document", "document"), ("page_index", "page_index"), ("revision", "revision"),
    ("sha256", "sha256"), ("passed", "passed"), ("failed", "names"), ("checks", "doc"),
    ("width_mm", "width_mm"), ("height_mm", "height_mm"), ("checked_at", "occurred_at"),
    ("event_id", "event_id")), types={"checks": "json"})
COPY_STAGE_CHECKS = CHECKS.copy_as("stage_checks")

# The key orders the COPYs sort by (neighbouring leaves of each primary key).
REVISION_KEY = operator.itemgetter(*range(6))
CHECK_KEY = operator.itemgetter(0, 1, 2, 3, 4, 5, 12, 13)

I_NAMES, I_DOC = STAGE_COLUMNS.index("names"), STAGE_COLUMNS.index("doc")


# A row made from a tuple of all its fields (the generated __new__ parses 29 arguments: twice
# the time, once per event).
_new = tuple.__new__


def is_legacy(r: StageRow) -> bool:
    """A version-1 PageChecked (or PageRemoved) that named its page by number only: the
    document of that page is on record here only, so the writer finds it
    (`sql_pages.RESOLVE_LEGACY`). Its staging row carries that number; a version-2 check's or
    removal's carries none."""
    return r.number is not None and r.etype != "PageScanned"


def _raw_document(ev: Event, raw: bytes | None) -> str:
    """The event's JSON as stored for the merges: the input itself when it is this version of
    the contract as our producers write it (re-serialising the model would only cost time),
    else the model's own JSON (a version-1 event is stored as its version 2)."""
    if raw is not None:
        head = b'%s%s","version":%d}' % (WIRE_PREFIX, ev.NAME.encode(), ev.VERSION)
        if raw.startswith(head):
            return raw.decode()
    return ev.to_json().decode()


def row_of_event(seq: int, ev: Event, rec: Record) -> StageRow:
    """The staging row of an event the contract (pydantic) decoded."""
    fonds = file_code = document = page_index = number = document_pages = revision = None
    sha = document_sha = uri = path = size = media = passed = width = height = None
    names: list[str] | None = None
    doc: str | None = None
    if isinstance(ev, FileEvent):
        fonds, file_code = ev.fonds, ev.file_code
    if isinstance(ev, PageScanned):
        document, page_index, number = ev.document, ev.page_index, ev.number
        document_pages, revision, sha = ev.document_pages, ev.revision, ev.sha256
        document_sha, uri, path = ev.document_sha256, ev.uri, ev.path
        size, media = ev.size_bytes, ev.media_type
    elif isinstance(ev, PageChecked):
        document, page_index, revision, sha = ev.document, ev.page_index, ev.revision, ev.sha256
        passed, width, height = ev.passed, ev.width_mm, ev.height_mm
        if document.startswith(LEGACY_DOCUMENT_PREFIX):
            number = int(document[len(LEGACY_DOCUMENT_PREFIX):])
        # Typed here, so the database does not walk JSON for the busiest file event.
        names = sorted(c.check for c in ev.checks if not c.passed)
        # The checks as sent (re-serialising the models would turn 1 into 1.0); pydantic's own
        # JSON codec does this several times faster than the json module.
        doc = pydantic_core.to_json(pydantic_core.from_json(rec.value or b"{}")["checks"]
                                    ).decode()
    elif isinstance(ev, PageRemoved):
        document, page_index, sha = ev.document, ev.page_index, ev.sha256  # typed: no document
        if document.startswith(LEGACY_DOCUMENT_PREFIX):
            number = int(document[len(LEGACY_DOCUMENT_PREFIX):])
    else:
        revision = getattr(ev, "revision", None)
        doc = _raw_document(ev, rec.value)
        if isinstance(ev, DeadLetter):
            path = reason_class(ev.reason)
    return _new(StageRow, (seq, ev.event_id, ev.NAME, ev.site_id, fonds, file_code, document,
                           page_index, number, document_pages, revision, sha, document_sha,
                           ev.occurred_at, rec.topic, rec.partition, rec.offset, uri, path,
                           size, media, passed, width, height, names, doc, None, None, None))


def row_of_page(seq: int, page: PageEvent, rec: Record) -> StageRow:
    """:func:`row_of_event` of a page event from the fast decoder (the tests hold the two
    equal)."""
    ev = page.event
    if isinstance(ev, FastPageScanned):
        return _new(StageRow, (
            seq, ev.event_id, ev.NAME, ev.site_id, ev.fonds, ev.file_code, ev.document,
            ev.page_index, ev.number, ev.document_pages, ev.revision, ev.sha256,
            ev.document_sha256, page.occurred_at, rec.topic, rec.partition, rec.offset, ev.uri,
            ev.path, ev.size_bytes, ev.media_type, None, None, None, None, None, None, None,
            None))
    return _new(StageRow, (
        seq, ev.event_id, ev.NAME, ev.site_id, ev.fonds, ev.file_code, ev.document,
        ev.page_index, None, None, ev.revision, ev.sha256, None, page.occurred_at, rec.topic,
        rec.partition, rec.offset, None, None, None, None, ev.passed, ev.width_mm, ev.height_mm,
        page.failed_checks, page.checks_json, None, None, None))
