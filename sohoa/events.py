"""The event contract: every event that crosses Kafka, defined once.

This module imports no Faust and no Kafka client, so the site agent stays light and other
producers (scanner vendors' software) can be given JSON Schema files generated from it
(`sohoa schema export DIR`).

Wire format: UTF-8 JSON. Every event carries ``schema`` (name + version), ``event_id`` (unique,
and stable across re-sends of the same fact), ``occurred_at`` (UTC) and ``site_id``.
Page bytes never travel: events carry a URI and the SHA-256 that every reader verifies.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

# Namespace for deterministic event ids: the same fact always gets the same id.
EVENT_NAMESPACE = uuid.UUID("6f1d2c3a-5b4e-4c7d-9a8b-0123456789ab")

SITE_ID_RE = r"^[a-z0-9][a-z0-9_-]{0,62}$"
SHA256_RE = r"^[0-9a-f]{64}$"

SiteId = Annotated[str, Field(pattern=SITE_ID_RE, description="Site slug, e.g. 'xa-tan-phu'")]
Sha256 = Annotated[str, Field(pattern=SHA256_RE, description="Lower-case hex SHA-256")]
FileCode = Annotated[str, Field(min_length=1, max_length=200)]
PageNo = Annotated[int, Field(ge=0, le=100_000)]


class InvalidEvent(ValueError):
    """A payload that does not satisfy the contract; ``reason`` names the field at fault."""

    def __init__(self, reason: str, payload: bytes | str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.payload = payload


def utcnow() -> datetime:
    return datetime.now(UTC)


def stable_event_id(*parts: object) -> str:
    """An id derived from the fact itself, so a re-sent or re-detected fact keeps its id."""
    return str(uuid.uuid5(EVENT_NAMESPACE, "\x1f".join(str(p) for p in parts)))


def file_key(site_id: str, file_code: str) -> str:
    """Kafka key of a file's events: one file's history stays ordered in one partition."""
    return f"{site_id}/{file_code}"


class SchemaRef(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    version: int


class Event(BaseModel):
    """Fields every event has. Subclasses set ``NAME`` and ``VERSION``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    NAME: ClassVar[str] = "Event"
    VERSION: ClassVar[int] = 1

    schema_: SchemaRef = Field(alias="schema")
    event_id: str = Field(default_factory=lambda: str(uuid.uuid4()), min_length=8, max_length=64)
    occurred_at: datetime = Field(default_factory=utcnow)
    site_id: SiteId

    # A before-validator, not an __init__ override: pydantic calls an overridden __init__ from
    # every model_validate*, which validated each event twice (the consumer's and the assembly
    # worker's largest CPU cost).
    @model_validator(mode="before")
    @classmethod
    def _default_schema(cls, data: Any) -> Any:
        if isinstance(data, dict) and "schema" not in data and "schema_" not in data:
            return {**data, "schema": {"name": cls.NAME, "version": cls.VERSION}}
        return data

    @field_validator("schema_")
    @classmethod
    def _schema_matches(cls, v: SchemaRef) -> SchemaRef:
        if v.name != cls.NAME or v.version != cls.VERSION:
            raise ValueError(f"expected {cls.NAME} v{cls.VERSION}, got {v.name} v{v.version}")
        return v

    @field_validator("occurred_at")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("must carry a timezone (UTC)")
        return v.astimezone(UTC)

    def key(self) -> str:
        return self.site_id

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class FileEvent(Event):
    """An event about one archival file (hồ sơ), keyed ``site_id/file_code``."""

    fonds: str = Field(default="", max_length=200, description="Phông lưu trữ")
    file_code: FileCode

    def key(self) -> str:
        return file_key(self.site_id, self.file_code)


class PageRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    page_no: PageNo
    uri: str = Field(min_length=1)
    sha256: Sha256
    revision: int = Field(default=1, ge=1)


# --- site agent events --------------------------------------------------------------------


class PageScanned(FileEvent):
    """One complete page file was found in a hot folder (or changed: a new revision)."""

    NAME: ClassVar[str] = "PageScanned"
    page_no: PageNo
    uri: str = Field(min_length=1, description="file:// URI the workers can read")
    sha256: Sha256
    size_bytes: int = Field(ge=1)
    media_type: str = Field(min_length=1)
    revision: int = Field(default=1, ge=1, description="1, then +1 for each rescan of the page")
    path: str = Field(default="", description="Path relative to the hot-folder root")

    @classmethod
    def make(cls, **data: Any) -> PageScanned:
        data.setdefault(
            "event_id",
            stable_event_id("PageScanned", data["site_id"], data["file_code"], data["page_no"],
                            data["sha256"], data.get("revision", 1)),
        )
        return cls(**data)


class PageRemoved(FileEvent):
    """A page that had been sent was deleted by the operator, so counts can follow."""

    NAME: ClassVar[str] = "PageRemoved"
    page_no: PageNo
    sha256: Sha256
    path: str = ""


class Classification(StrEnum):
    PUBLIC = "public"
    INTERNAL = "internal"
    CONFIDENTIAL = "confidential"  # Mật
    SECRET = "secret"              # Tối mật
    TOP_SECRET = "top_secret"      # Tuyệt mật

    @property
    def is_classified(self) -> bool:
        return self in {Classification.CONFIDENTIAL, Classification.SECRET,
                        Classification.TOP_SECRET}


class FileManifest(FileEvent):
    """The ``hoso.json`` of a file folder: what the file should be."""

    NAME: ClassVar[str] = "FileManifest"
    title: str | None = Field(default=None, description="Omitted for classified files")
    expected_pages: int | None = Field(default=None, ge=1)
    classification: Classification = Classification.PUBLIC
    priority: int = Field(default=0, ge=0, le=9)
    start_date: str | None = None
    end_date: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict, description="TT 02/2019 fields")


class FileClosed(FileEvent):
    """The site says the file is complete: closing marker, or idle timeout."""

    NAME: ClassVar[str] = "FileClosed"
    reason: Literal["marker", "idle"] = "marker"
    expected_pages: int | None = Field(default=None, ge=1)
    pages_seen: int = Field(default=0, ge=0)


class SiteHeartbeat(Event):
    NAME: ClassVar[str] = "SiteHeartbeat"
    agent_version: str
    outbox_depth: int = Field(ge=0)
    oldest_unsent_age_s: float = Field(default=0.0, ge=0)
    disk_free_bytes: int = Field(default=0, ge=0)
    roots: list[str] = Field(default_factory=list)


# --- stream events ------------------------------------------------------------------------


class SiteDuplicate(BaseModel):
    """A page whose content (SHA-256) was already seen in another file of the same site."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    page_no: PageNo
    other_file_code: FileCode
    other_page_no: PageNo


class FileAssembled(FileEvent):
    """A file's pages, in order, with what is wrong with the set as a whole."""

    NAME: ClassVar[str] = "FileAssembled"
    revision: int = Field(default=1, ge=1)
    trigger: Literal["marker", "expected_count", "idle", "late_page"] = "marker"
    pages: list[PageRef]
    gaps: list[int] = Field(default_factory=list, description="Missing page numbers")
    duplicate_page_nos: list[int] = Field(default_factory=list)
    duplicate_content: list[list[int]] = Field(
        default_factory=list, description="Groups of page numbers with identical SHA-256")
    expected_pages: int | None = None
    count_mismatch: bool = False
    classification: Classification = Classification.PUBLIC
    duplicate_in_site: list[SiteDuplicate] = Field(
        default_factory=list, description="Pages identical to a page of another file")


class CheckResult(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    check: str
    value: float | str | None
    threshold: float | str | None = None
    passed: bool


class PageChecked(FileEvent):
    NAME: ClassVar[str] = "PageChecked"
    page_no: PageNo
    sha256: Sha256
    revision: int = Field(default=1, ge=1)
    checks: list[CheckResult]
    passed: bool


class PageText(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    page_no: PageNo
    chars: int = Field(ge=0)
    mean_confidence: float | None = Field(default=None, ge=0, le=100)


class OcrCompleted(FileEvent):
    NAME: ClassVar[str] = "OcrCompleted"
    revision: int = Field(default=1, ge=1)
    output_uri: str
    output_sha256: Sha256
    text_uri: str | None = None
    pages: list[PageText]
    seconds: float = Field(default=0.0, ge=0)


class OcrFailed(FileEvent):
    NAME: ClassVar[str] = "OcrFailed"
    revision: int = Field(default=1, ge=1)
    reason: str
    attempts: int = Field(default=1, ge=1)


class Verdict(StrEnum):
    ACCEPTED = "accepted"
    NEEDS_RESCAN = "needs_rescan"
    REJECTED = "rejected"


class RescanReason(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    page_no: int | None = None
    reason: str


class FileVerdict(FileEvent):
    NAME: ClassVar[str] = "FileVerdict"
    revision: int = Field(default=1, ge=1)
    verdict: Verdict
    reasons: list[RescanReason] = Field(default_factory=list)
    pages_total: int = Field(default=0, ge=0)
    pages_accepted: int = Field(default=0, ge=0)


class DeadLetter(Event):
    """An input that could not be processed, with the reason; processing went on."""

    NAME: ClassVar[str] = "DeadLetter"
    site_id: str = Field(default="unknown", max_length=200)  # the bad input may lack a valid one
    source: str = Field(description="Component that gave up, e.g. 'consumer'")
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    reason: str
    payload: str = Field(default="", description="The original bytes, decoded leniently")


EVENT_TYPES: tuple[type[Event], ...] = (
    PageScanned, PageRemoved, FileManifest, FileClosed, SiteHeartbeat,
    FileAssembled, PageChecked, OcrCompleted, OcrFailed, FileVerdict, DeadLetter,
)
_BY_NAME: dict[str, type[Event]] = {t.NAME: t for t in EVENT_TYPES}
_ENVELOPE = TypeAdapter(dict[str, Any])


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(root)"
        loc = loc.replace("schema_", "schema")
        parts.append(f"field '{loc}': {e['msg']}")
    return "; ".join(parts)


# How Event.to_json starts (schema first): a reader can see the event's name before parsing.
WIRE_PREFIX = b'{"schema":{"name":"'


def wire_name(raw: bytes) -> bytes | None:
    """The event name of ``raw`` if it starts as our producers write events, else None."""
    if not raw.startswith(WIRE_PREFIX):
        return None
    return raw[len(WIRE_PREFIX):raw.find(b'"', len(WIRE_PREFIX))]


def parse_event(raw: bytes | str | dict[str, Any]) -> Event:
    """Decode and validate one event; raise :class:`InvalidEvent` naming the field at fault."""
    name = wire_name(raw) if isinstance(raw, bytes) else None
    if name is not None:
        # As Event.to_json writes it: validate straight from the bytes, about twice as fast as
        # loads + model_validate. Any failure takes the general path below, which gives the
        # reason.
        fast = _BY_NAME.get(name.decode("ascii", "replace"))
        if fast is not None:
            try:  # (not contextlib.suppress: its object per event was ~3 % of the parse)
                return fast.model_validate_json(raw)
            except ValidationError:
                pass
    if isinstance(raw, dict):
        data = raw
    else:
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidEvent(f"not JSON: {exc}", raw) from None
        if not isinstance(data, dict):
            raise InvalidEvent("not a JSON object", raw)
    schema = data.get("schema")
    if not isinstance(schema, dict) or not isinstance(schema.get("name"), str):
        raise InvalidEvent("field 'schema': missing or not {name, version}", _raw(raw))
    cls = _BY_NAME.get(schema["name"])
    if cls is None:
        raise InvalidEvent(f"field 'schema.name': unknown event {schema['name']!r}", _raw(raw))
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise InvalidEvent(f"{cls.NAME}: {_describe(exc)}", _raw(raw)) from None


def _raw(raw: bytes | str | dict[str, Any]) -> bytes | str:
    return json.dumps(raw, ensure_ascii=False) if isinstance(raw, dict) else raw


def export_schemas(directory: Path) -> list[Path]:
    """Write one JSON Schema file per event, for producers outside this code base."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for cls in EVENT_TYPES:
        schema = cls.model_json_schema(by_alias=True, mode="validation")
        schema["$id"] = f"https://sohoa.invalid/schemas/{cls.NAME}.v{cls.VERSION}.json"
        schema["title"] = cls.NAME
        props = schema.setdefault("properties", {})
        props["schema"] = {
            "type": "object",
            "properties": {"name": {"const": cls.NAME}, "version": {"const": cls.VERSION}},
            "required": ["name", "version"],
            "additionalProperties": False,
        }
        req = set(schema.get("required", []))
        schema["required"] = sorted(req | {"schema", "site_id"})
        path = directory / f"{_snake(cls.NAME)}.v{cls.VERSION}.schema.json"
        path.write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(path)
    return written


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


# --- OCR progress (issue 22) --------------------------------------------------------------
# Self-contained so it merges with the page-identity contract change as one block.


class OcrProgress(FileEvent):
    """How far a file's OCR has got, sent while it runs (at most every
    ``ocr.progress_every_s`` per file), so ``sohoa status`` can show a long file moving.
    The total can grow while documents are opened (a multi-page TIFF or PDF counts as one
    until its pages are known)."""

    NAME: ClassVar[str] = "OcrProgress"
    revision: int = Field(default=1, ge=1)
    pages_done: int = Field(ge=0)
    pages_total: int = Field(ge=0)

    @model_validator(mode="after")
    def _done_within_total(self) -> OcrProgress:
        if self.pages_done > self.pages_total:
            raise ValueError("pages_done is more than pages_total")
        return self


EVENT_TYPES = (*EVENT_TYPES, OcrProgress)
_BY_NAME[OcrProgress.NAME] = OcrProgress
