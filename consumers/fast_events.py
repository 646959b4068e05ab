"""A fast decoder for the two busiest events (PageScanned, PageChecked: ~90 % of the stream),
for readers that parse every event of a batch (the consumer's parse process).

The contract is still :mod:`sohoa.events`, and pydantic still judges. These msgspec structs
mirror those models but are stricter where the two libraries differ (no numeric strings,
no floats for integers, a timezone always, no missing ``event_id``, ``schema`` or
``occurred_at`` to default, names already in NFC: pydantic normalises the others).
:func:`decode_page_event` returns None for anything they do not
accept, and the caller hands that payload to :func:`sohoa.events.parse_event`, which accepts it
or names the field at fault. So a payload decoded here is one pydantic accepts, with the same
values: ``tests/test_fast_events.py`` holds both to that over the generator's events and a
battery of mutations, and checks that the fields mirror the models'.

Why: pydantic validation was over half of the consumer's parse (~25 µs an event); this is
~5 µs. The checks of a PageChecked come back as the JSON text received (``checks_json``), which
is what the consumer stores, so they are not re-serialised either.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, ClassVar, Literal

import msgspec
from msgspec import Meta, Struct

from sohoa.events import NAME_RE, SHA256_RE, SITE_ID_RE, wire_name
from sohoa.naming import is_nfc


def _whole(pattern: str) -> str:
    # Python's `$` also matches before a final newline (pydantic's regex engine does not), so
    # the contract's patterns end in `\Z` here: "…\n" must fail here as it fails there.
    return pattern.removesuffix("$") + r"\Z"


SiteId = Annotated[str, Meta(pattern=_whole(SITE_ID_RE))]
Sha256 = Annotated[str, Meta(pattern=_whole(SHA256_RE))]
EventId = Annotated[str, Meta(min_length=8, max_length=64)]
_NAME = _whole(NAME_RE)
FileCode = Annotated[str, Meta(min_length=1, max_length=200, pattern=_NAME)]
Fonds = Annotated[str, Meta(max_length=200, pattern=_NAME)]
DocumentName = Annotated[str, Meta(min_length=1, max_length=255, pattern=_NAME)]
PageNo = Annotated[int, Meta(ge=0, le=100_000)]
PageIndex = Annotated[int, Meta(ge=1, le=100_000)]
Revision = Annotated[int, Meta(ge=1)]
NonEmpty = Annotated[str, Meta(min_length=1)]
Millimetres = Annotated[float, Meta(gt=0, le=100_000)]


class _Schema(Struct, forbid_unknown_fields=True):
    name: str
    version: Literal[2]


class _Check(Struct, forbid_unknown_fields=True):
    check: str
    value: float | str | None
    passed: bool
    threshold: float | str | None = None


class _FilePage(Struct, forbid_unknown_fields=True, rename={"schema_": "schema"},
                kw_only=True):
    """The fields both page events have (the contract's Event and FileEvent, and the page)."""

    schema_: _Schema
    event_id: EventId
    occurred_at: msgspec.Raw  # checked and decoded by _utc
    site_id: SiteId
    fonds: Fonds = ""
    file_code: FileCode
    document: DocumentName
    page_index: PageIndex = 1
    sha256: Sha256
    revision: Revision = 1

    def names_nfc(self) -> bool:
        """Names in NFC already (else pydantic decides: it normalises them)."""
        return is_nfc(self.fonds) and is_nfc(self.file_code) and is_nfc(self.document)


class FastPageScanned(_FilePage, kw_only=True):
    number: PageNo | None = None
    document_pages: PageIndex = 1
    uri: NonEmpty
    document_sha256: Sha256
    size_bytes: Annotated[int, Meta(ge=1)]
    media_type: NonEmpty
    path: str = ""

    NAME: ClassVar[str] = "PageScanned"


class FastPageChecked(_FilePage, kw_only=True):
    checks: msgspec.Raw  # validated by _CHECKS; kept as sent
    passed: bool
    width_mm: Millimetres | None = None
    height_mm: Millimetres | None = None

    NAME: ClassVar[str] = "PageChecked"


_DECODERS = {t.NAME.encode(): msgspec.json.Decoder(t) for t in (FastPageScanned, FastPageChecked)}
_CHECKS = msgspec.json.Decoder(list[_Check])
_AWARE = msgspec.json.Decoder(Annotated[datetime, Meta(tz=True)])


@dataclass(frozen=True, slots=True)
class PageEvent:
    """A decoded page event: the struct, its time in UTC and (PageChecked) its checks."""

    event: FastPageScanned | FastPageChecked
    occurred_at: datetime
    checks_json: str | None = None  # as received
    failed_checks: list[str] | None = None  # names of the checks that did not pass, sorted


def _utc(raw: msgspec.Raw) -> datetime | None:
    text = bytes(raw)
    # More than six fractional digits: msgspec rounds them, pydantic truncates. Rare (.NET
    # writes seven); pydantic decides those.
    dot = text.find(b".")
    if dot >= 0 and text[dot + 1:dot + 8].isdigit():
        return None
    return _AWARE.decode(text).astimezone(UTC)


def decode_page_event(raw: bytes) -> PageEvent | None:
    """``raw`` as a PageScanned or PageChecked, or None: not one of those two as sohoa's
    producers write them (schema first), or not accepted here; ask ``parse_event``."""
    decoder = _DECODERS.get(wire_name(raw) or b"")
    if decoder is None:
        return None
    try:
        ev = decoder.decode(raw)
        if ev.schema_.name != ev.NAME or not ev.names_nfc():
            return None
        at = _utc(ev.occurred_at)
        if at is None:
            return None
        if isinstance(ev, FastPageScanned):
            if ev.page_index > ev.document_pages:
                return None  # pydantic names the fault
            return PageEvent(ev, at)
        checks = _CHECKS.decode(ev.checks)
        return PageEvent(ev, at, bytes(ev.checks).decode(),
                         sorted(c.check for c in checks if not c.passed))
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
