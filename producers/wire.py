"""PageScanned's outbox row built without pydantic: the agent's hottest step, byte for byte the
contract's own JSON.

Every value here was checked already (the layout bounds file codes and page numbers, a SHA-256
hex digest is always well formed, empty files are rejected before hashing), so validating them
again cost the agent's loop thread a fifth of its time per page. Anything outside what this
fast path is proven on (see tests/producers/test_watch_units.py, which compares its bytes with
``PageScanned.make(...).to_json()``) goes through the validated model instead.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from datetime import UTC, datetime

from sohoa.events import EVENT_NAMESPACE, SITE_ID_RE, PageScanned, file_key
from sohoa.naming import FORBIDDEN_RE

_NS = EVENT_NAMESPACE.bytes
_HEAD = (f'{{"schema":{{"name":"{PageScanned.NAME}","version":{PageScanned.VERSION}}},'
         f'"event_id":')
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_checked_sites: set[str] = set()
_HEX64 = re.compile(r"[0-9a-f]{64}")
_FORBIDDEN = re.compile(FORBIDDEN_RE)


def fast_event_id(*parts: object) -> str:
    """:func:`sohoa.events.stable_event_id` (uuid5) without building a ``uuid.UUID``."""
    h = bytearray(hashlib.sha1(_NS + "\x1f".join(str(p) for p in parts).encode()).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x50  # version 5
    h[8] = (h[8] & 0x3F) | 0x80  # RFC 4122 variant
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


class WireEvent:
    """What the outbox needs of an event (id, name, key, bytes), already serialised."""

    __slots__ = ("_key", "_value", "event_id")
    NAME = PageScanned.NAME

    def __init__(self, event_id: str, key: str, value: bytes) -> None:
        self.event_id = event_id
        self._key = key
        self._value = value

    def key(self) -> str:
        return self._key

    def to_json(self) -> bytes:
        return self._value


def page_scanned(*, site_id: str, fonds: str, file_code: str, document: str, page_index: int,
                 number: int | None, document_pages: int, uri: str, document_sha256: str,
                 sha256: str, size_bytes: int, media_type: str, revision: int, path: str,
                 occurred_at: datetime | None = None) -> WireEvent | PageScanned:
    """The PageScanned of these values, as :meth:`PageScanned.make` would serialise it
    (``occurred_at``, a UTC time, defaults to now). Names must be NFC (the layout's are)."""
    def validated() -> PageScanned:  # the model's path, which says what is out of bounds
        return PageScanned.make(site_id=site_id, fonds=fonds, file_code=file_code,
                                document=document, page_index=page_index, number=number,
                                document_pages=document_pages, uri=uri,
                                document_sha256=document_sha256, sha256=sha256,
                                size_bytes=size_bytes, media_type=media_type,
                                revision=revision, path=path,
                                **({} if occurred_at is None else {"occurred_at": occurred_at}))

    if not _plain(site_id, fonds, file_code, document, page_index, number, document_pages, uri,
                  document_sha256, sha256, size_bytes, media_type, revision):
        return validated()
    event_id = fast_event_id("PageScanned", 2, site_id, fonds, file_code, document, page_index,
                             sha256, document_sha256, revision)
    # pydantic writes a UTC time as isoformat does, with "Z" for "+00:00".
    at = (occurred_at or datetime.now(UTC)).isoformat()[:-6] + "Z"
    text = (f'{_HEAD}"{event_id}","occurred_at":"{at}","site_id":{_dumps(site_id)},'
            f'"fonds":{_dumps(fonds)},"file_code":{_dumps(file_code)},'
            f'"document":{_dumps(document)},"page_index":{page_index},'
            f'"number":{"null" if number is None else number},'
            f'"document_pages":{document_pages},"uri":{_dumps(uri)},'
            f'"document_sha256":"{document_sha256}","sha256":"{sha256}",'
            f'"size_bytes":{size_bytes},"media_type":{_dumps(media_type)},'
            f'"revision":{revision},"path":{_dumps(path)}}}')
    try:
        value = text.encode()
    except UnicodeEncodeError:  # an undecodable name: the model's path reports it as before
        return validated()
    return WireEvent(event_id, file_key(site_id, fonds, file_code), value)


def _plain(site_id: str, fonds: str, file_code: str, document: str, page_index: int,
           number: int | None, document_pages: int, uri: str, document_sha256: str,
           sha256: str, size_bytes: int, media_type: str, revision: int) -> bool:
    """The values are within every bound the model checks (else the model says which not)."""
    if site_id not in _checked_sites:
        # The model's regex engine has no "$ before a final newline"; Python's has.
        if type(site_id) is not str or "\n" in site_id or not re.match(SITE_ID_RE, site_id):
            return False
        _checked_sites.add(site_id)
    return (type(page_index) is int and 1 <= page_index <= document_pages
            and type(document_pages) is int and document_pages <= 100_000
            and (number is None or (type(number) is int and 0 <= number <= 100_000))
            and type(size_bytes) is int and size_bytes >= 1
            and type(revision) is int and revision >= 1
            and _name(fonds, 0, 200) and _name(file_code, 1, 200)
            and _name(document, 1, 255)
            and type(uri) is str and len(uri) >= 1
            and type(media_type) is str and len(media_type) >= 1
            and type(sha256) is str and _HEX64.fullmatch(sha256) is not None
            and type(document_sha256) is str
            and _HEX64.fullmatch(document_sha256) is not None)


def _name(value: str, low: int, high: int) -> bool:
    return (type(value) is str and low <= len(value) <= high and _FORBIDDEN.search(value) is None
            and unicodedata.is_normalized("NFC", value))
