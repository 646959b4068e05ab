"""A fast decoder for the two busiest events (PageScanned, PageChecked: ~90 % of the stream),
for readers that parse every event of a batch (the consumer's parse process).

The contract is still :mod:`sohoa.events`, and pydantic still judges. These msgspec structs
mirror those models but are stricter where the two libraries differ (no numeric strings,
no floats for integers, a timezone always, no missing ``event_id``, ``schema`` or
``occurred_at`` to default, names already in NFC: pydantic normalises the others).
:func:`decode_page_event` returns None for anything they do not
accept, and the caller hands that payload to :func:`sohoa.events.parse_event`, which accepts it
or names the field at fault. So a payload decoded here is one pydantic accepts, with the same
values: ``tests/consumers/test_fast_events.py`` holds both to that over the generator's events
and a battery of mutations, and checks that the fields mirror the models'.

Why: pydantic validation dominates the consumer's parse, and this decoder costs a fraction of
it (docs/scaling.md). The checks of a PageChecked come back as the JSON text received
(``checks_json``), which is what the consumer stores, so they are not re-serialised either.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, ClassVar, Literal
from unicodedata import is_normalized

import msgspec
from msgspec import Meta, Struct

from sohoa.events import SITE_ID_RE, wire_name


def _whole(pattern: str) -> str:
    # Python's `$` also matches before a final newline (pydantic's regex engine does not), so
    # the contract's patterns end in `\Z` here: "…\n" must fail here as it fails there.
    return pattern.removesuffix("$") + r"\Z"


SiteId = Annotated[str, Meta(pattern=_whole(SITE_ID_RE))]
# Digests and names are measured here; their characters are checked by `_plain` in one pass
# (a pattern per field would cost as much as the rest of this decoder).
Sha256 = Annotated[str, Meta(min_length=64, max_length=64)]
EventId = Annotated[str, Meta(min_length=8, max_length=64)]
FileCode = Annotated[str, Meta(min_length=1, max_length=200)]
Fonds = Annotated[str, Meta(max_length=200)]
DocumentName = Annotated[str, Meta(min_length=1, max_length=255)]
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

    def digests(self) -> str:
        return self.sha256

    def plain(self) -> bool:
        """The contract's patterns (SHA256_RE, NAME_RE) and names in NFC already, checked
        stricter than there: any non-printable character, not only a control one, leaves the
        event to pydantic (which also normalises names). One pass over the three names: a
        name not in NFC makes their concatenation not NFC either."""
        names = self.fonds + self.file_code + self.document
        return (names.isprintable() and "/" not in names and is_normalized("NFC", names)
                and not self.digests().encode().translate(None, _HEX_DIGITS))


class FastPageScanned(_FilePage, kw_only=True):
    number: PageNo | None = None
    document_pages: PageIndex = 1
    uri: NonEmpty
    document_sha256: Sha256
    size_bytes: Annotated[int, Meta(ge=1)]
    media_type: NonEmpty
    path: str = ""

    NAME: ClassVar[str] = "PageScanned"

    def digests(self) -> str:
        return self.sha256 + self.document_sha256


class FastPageChecked(_FilePage, kw_only=True):
    checks: msgspec.Raw  # validated by _CHECKS; kept as sent
    passed: bool
    width_mm: Millimetres | None = None
    height_mm: Millimetres | None = None

    NAME: ClassVar[str] = "PageChecked"


# What `plain` checks beside the lengths; tests/consumers/test_fast_events.py holds these to the
# contract.
_HEX_DIGITS = b"0123456789abcdef"  # deleted from a digest's bytes, nothing may be left
CHECKED_PATTERNS = {"SHA256_RE": r"^[0-9a-f]{64}$", "NAME_RE": r"^[^/\x00-\x1f\x7f]*$"}

_DECODERS: dict[bytes, msgspec.json.Decoder[FastPageScanned]
                      | msgspec.json.Decoder[FastPageChecked]] = {
    FastPageScanned.NAME.encode(): msgspec.json.Decoder(FastPageScanned),
    FastPageChecked.NAME.encode(): msgspec.json.Decoder(FastPageChecked)}
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
        if ev.schema_.name != ev.NAME or not ev.plain():
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
