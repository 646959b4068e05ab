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
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from sohoa.metadata import DocumentRecord, FileRecord
from sohoa.naming import nfc

# Namespace for deterministic event ids: the same fact always gets the same id.
EVENT_NAMESPACE = uuid.UUID("6f1d2c3a-5b4e-4c7d-9a8b-0123456789ab")

SITE_ID_RE = r"^[a-z0-9][a-z0-9_-]{0,62}$"
SHA256_RE = r"^[0-9a-f]{64}$"

# A fonds, file code or document name: NFC (normalised on input), no "/" (it separates them in
# keys) and no control characters.
NAME_RE = r"^[^/\x00-\x1f\x7f]*$"

SiteId = Annotated[str, Field(pattern=SITE_ID_RE, description="Site slug, e.g. 'xa-tan-phu'")]
Sha256 = Annotated[str, Field(pattern=SHA256_RE, description="Lower-case hex SHA-256")]
FileCode = Annotated[str, AfterValidator(nfc), Field(
    min_length=1, max_length=200, pattern=NAME_RE, description="Mã hồ sơ (NFC)")]
Fonds = Annotated[str, AfterValidator(nfc), Field(
    max_length=200, pattern=NAME_RE, description="Phông lưu trữ (NFC)")]
DocumentName = Annotated[str, AfterValidator(nfc), Field(
    min_length=1, max_length=255, pattern=NAME_RE,
    description="The document's file name in the file folder (NFC, extension included)")]
PageNo = Annotated[int, Field(ge=0, le=100_000)]
PageIndex = Annotated[int, Field(ge=1, le=100_000, description="1-based page of the document")]


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


def file_key(site_id: str, fonds: str, file_code: str) -> str:
    """Kafka key (and table key) of a file's events: one file's history stays ordered in one
    partition. A file is its site, fonds and code: codes restart in every fonds."""
    return f"{site_id}/{fonds}/{file_code}"


class SchemaRef(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    version: int


class Event(BaseModel):
    """Fields every event has. Subclasses set ``NAME`` and ``VERSION``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    NAME: ClassVar[str] = "Event"
    VERSION: ClassVar[int] = 1

    # Each class's own name and version, filled by `_default_schema` before validation, so
    # callers never pass it. The default is never used; it tells the type checker (which
    # cannot see the before-validator) that the argument is optional.
    schema_: SchemaRef = Field(alias="schema", default=None)  # type: ignore[assignment]
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
    """An event about one archival file (hồ sơ): a file is its site, fonds and code, keyed
    ``site_id/fonds/file_code``."""

    fonds: Fonds = ""
    file_code: FileCode

    def key(self) -> str:
        return file_key(self.site_id, self.fonds, self.file_code)


class PageKey(BaseModel):
    """A page of a file: its document and its page in that document."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    document: DocumentName
    page_index: PageIndex = 1


class PageRef(BaseModel):
    """One page in a FileAssembled, in the file's order (document order, then page)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    document: DocumentName
    page_index: PageIndex = 1
    number: PageNo | None = Field(
        default=None, description="The number the document's name ends with")
    uri: str = Field(min_length=1, description="Where the document's bytes are")
    document_sha256: Sha256
    sha256: Sha256 = Field(description="The page's content digest (sohoa.documents)")
    media_type: str = Field(default="application/octet-stream", min_length=1)
    revision: int = Field(default=1, ge=1)

    def key(self) -> PageKey:
        return PageKey(document=self.document, page_index=self.page_index)


# --- site agent events --------------------------------------------------------------------


class PageScanned(FileEvent):
    """One page of a complete document found in a hot folder (or changed: a new revision).

    A document is a page file: one image (one page) or a multi-page PDF/TIFF (each page its
    own event). ``sha256`` is the page's content digest, ``document_sha256`` the file's."""

    NAME: ClassVar[str] = "PageScanned"
    VERSION: ClassVar[int] = 2
    document: DocumentName
    page_index: PageIndex = 1
    number: PageNo | None = Field(
        default=None, description="The number the document's name ends with: its place among "
                                  "the file's documents (for a page image, its page number)")
    document_pages: PageIndex = Field(default=1, description="Pages in the document")
    uri: str = Field(min_length=1, description="file:// (or s3://) URI of the document")
    document_sha256: Sha256
    sha256: Sha256
    size_bytes: int = Field(ge=1, description="Bytes of the document file")
    media_type: str = Field(min_length=1)
    revision: int = Field(default=1, ge=1, description="1, then +1 for each change of the page")
    path: str = Field(default="", description="The document's path under the hot-folder root, "
                                              "as spelled on disk")

    @model_validator(mode="after")
    def _index_in_document(self) -> PageScanned:
        if self.page_index > self.document_pages:
            raise ValueError(f"page_index {self.page_index} > document_pages "
                             f"{self.document_pages}")
        return self

    @classmethod
    def make(cls, **data: Any) -> PageScanned:
        for name in ("fonds", "file_code", "document"):
            if isinstance(data.get(name), str):
                data[name] = nfc(data[name])
        data.setdefault("document_sha256", data.get("sha256"))
        data.setdefault("document_pages", data.get("page_index", 1))
        data.setdefault("event_id", page_scanned_id(
            data["site_id"], data.get("fonds", ""), data["file_code"], data["document"],
            data.get("page_index", 1), data["sha256"], data["document_sha256"],
            data.get("revision", 1)))
        return cls(**data)

    def page_key(self) -> PageKey:
        return PageKey(document=self.document, page_index=self.page_index)


def page_scanned_id(site_id: str, fonds: str, file_code: str, document: str, page_index: int,
                    sha256: str, document_sha256: str, revision: int) -> str:
    """The event id of a PageScanned: the same page content in the same document bytes at the
    same revision is the same fact. (Names are NFC: callers pass them normalised.)"""
    return stable_event_id("PageScanned", 2, site_id, fonds, file_code, document, page_index,
                           sha256, document_sha256, revision)


class PageRemoved(FileEvent):
    """A page that had been sent is gone (its document deleted, or rescanned with fewer
    pages), so counts can follow."""

    NAME: ClassVar[str] = "PageRemoved"
    VERSION: ClassVar[int] = 2
    document: DocumentName
    page_index: PageIndex = 1
    sha256: Sha256 = Field(description="Content digest of the page revision removed")
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


class ManifestDocument(BaseModel):
    """A document the manifest lists, in the file's order."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: DocumentName
    pages: int | None = Field(default=None, ge=1, description="Expected pages")
    language: str | None = Field(default=None, max_length=40,
                                 description="Tesseract languages, e.g. 'vie' or 'vie+fra'")
    record: DocumentRecord | None = Field(
        default=None, description="The document's archival metadata (sohoa.metadata)")


class FileManifest(FileEvent):
    """The ``hoso.json`` of a file folder: what the file should be."""

    NAME: ClassVar[str] = "FileManifest"
    VERSION: ClassVar[int] = 2
    title: str | None = Field(default=None, description="Omitted for classified files")
    expected_pages: int | None = Field(default=None, ge=1)
    classification: Classification = Classification.PUBLIC
    priority: int = Field(default=0, ge=0, le=9)
    start_date: str | None = None
    end_date: str | None = None
    documents: list[ManifestDocument] = Field(
        default_factory=list, description="The file's documents in order (optional)")
    metadata: dict[str, str] = Field(default_factory=dict, description="Other fields, free text")
    record: FileRecord | None = Field(
        default=None, description="The file's archival metadata, 18 fields (sohoa.metadata); "
                                  "omitted for classified files")

    @model_validator(mode="after")
    def _documents_once(self) -> FileManifest:
        names = [d.name for d in self.documents]
        if len(names) != len(set(names)):
            raise ValueError("documents: a document is listed twice")
        return self


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
    # Object store (issue 21): pages whose document is not stored yet (their events wait in
    # the outbox too), the bytes to send and the age of the oldest; the uploader's last error.
    upload_pending_pages: int = Field(default=0, ge=0)
    upload_pending_bytes: int = Field(default=0, ge=0)
    oldest_unuploaded_age_s: float = Field(default=0.0, ge=0)
    upload_error: str | None = Field(default=None, max_length=500)


# --- stream events ------------------------------------------------------------------------


class SiteDuplicate(BaseModel):
    """A page whose content was already seen in another file of the same site."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    document: DocumentName
    page_index: PageIndex = 1
    other_fonds: Fonds = ""
    other_file_code: FileCode
    other_document: DocumentName
    other_page_index: PageIndex = 1


class FileAssembled(FileEvent):
    """A file's pages, in order, with what is wrong with the set as a whole."""

    NAME: ClassVar[str] = "FileAssembled"
    VERSION: ClassVar[int] = 2
    revision: int = Field(default=1, ge=1)
    trigger: Literal["marker", "expected_count", "idle", "late_page", "reclassified"] = "marker"
    pages: list[PageRef]
    gaps: list[int] = Field(default_factory=list, description="Numbers missing among those "
                                                              "the documents' names claim")
    duplicate_page_nos: list[int] = Field(
        default_factory=list, description="Numbers claimed by more than one document")
    duplicate_content: list[list[PageKey]] = Field(
        default_factory=list, description="Groups of pages with identical content")
    missing_pages: list[PageKey] = Field(
        default_factory=list, description="Pages of a document not (yet) received")
    missing_documents: list[str] = Field(
        default_factory=list, description="Documents the manifest lists, not received")
    expected_pages: int | None = None
    count_mismatch: bool = False
    classification: Classification = Classification.PUBLIC
    duplicate_in_site: list[SiteDuplicate] = Field(
        default_factory=list, description="Pages identical to a page of another file")
    languages: dict[str, str] = Field(
        default_factory=dict, description="OCR languages per document, where the manifest "
                                          "says")
    document_types: dict[str, str] = Field(
        default_factory=dict, description="Tên loại per document, where the manifest says "
                                          "(QC's dpi floor: maps and drawings)")

    def documents(self) -> list[str]:
        """The file's documents in order."""
        return list(dict.fromkeys(p.document for p in self.pages))


class CheckResult(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    check: str
    value: float | str | None
    threshold: float | str | None = None
    passed: bool


class PageChecked(FileEvent):
    NAME: ClassVar[str] = "PageChecked"
    VERSION: ClassVar[int] = 2
    document: DocumentName
    page_index: PageIndex = 1
    sha256: Sha256 = Field(description="Content digest of the page checked")
    revision: int = Field(default=1, ge=1)
    checks: list[CheckResult]
    passed: bool
    width_mm: float | None = Field(default=None, gt=0, le=100_000,
                                   description="Physical size, when the page states its dpi")
    height_mm: float | None = Field(default=None, gt=0, le=100_000)


class PageText(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    document: DocumentName
    page_index: PageIndex = 1
    chars: int = Field(ge=0)
    mean_confidence: float | None = Field(default=None, ge=0, le=100)


class OcrCompleted(FileEvent):
    NAME: ClassVar[str] = "OcrCompleted"
    VERSION: ClassVar[int] = 2
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


class OcrProgress(FileEvent):
    """How far a file's OCR has got: pages OCR'd of the pages of the revision in OCR, sent
    while it runs (at most every ``ocr.progress_every_s``), so ``sohoa status`` shows a long
    file moving."""

    NAME: ClassVar[str] = "OcrProgress"
    revision: int = Field(default=1, ge=1)
    pages_done: int = Field(ge=0)
    pages_total: int = Field(ge=0)

    @model_validator(mode="after")
    def _done_within_total(self) -> OcrProgress:
        if self.pages_done > self.pages_total:
            raise ValueError("pages_done is more than pages_total")
        return self


class Verdict(StrEnum):
    ACCEPTED = "accepted"
    NEEDS_RESCAN = "needs_rescan"
    REJECTED = "rejected"


class RescanReason(BaseModel):
    """Why a file (no page named) or one page must be redone."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    document: DocumentName | None = None
    page_index: PageIndex | None = None
    position: int | None = Field(default=None, ge=1,
                                 description="The page's place in the file (1-based)")
    number: PageNo | None = Field(default=None, description="A claimed page number (gaps)")
    reason: str


class FileVerdict(FileEvent):
    NAME: ClassVar[str] = "FileVerdict"
    VERSION: ClassVar[int] = 2
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
    FileAssembled, PageChecked, OcrProgress, OcrCompleted, OcrFailed, FileVerdict, DeadLetter,
)
# --- version 1, read only ------------------------------------------------------------------
# Events written before documents and fonds were part of a page's identity. Readers still take
# them (they may sit in a topic across an upgrade) and turn each into its version 2 with the
# rules that migration 005 applies to the data stored before it: a version-1 page was one image
# file, so its document is that file's name (NFC) and it is the document's only page; the page
# number its name claimed is its ``number``.

# A version-1 event that names a page by number only (PageChecked, PageText, SiteDuplicate)
# gets this document name, which no real name can have (control character); the consumer
# resolves it to the stored page with that number (the page's document is on record there).
LEGACY_DOCUMENT_PREFIX = "\x1fv1:"


def legacy_document(page_no: int) -> str:
    return f"{LEGACY_DOCUMENT_PREFIX}{page_no}"


def _document_of(path: str, uri: str, page_no: int) -> str:
    """The version-2 document name of a version-1 page: its file's name, NFC."""
    name = PurePosixPath(path).name if path else ""
    if not name and uri:
        name = PurePosixPath(unquote(urlsplit(uri).path)).name
    return nfc(name) if name else f"{page_no}"


class _V1(Event):
    VERSION: ClassVar[int] = 1
    fonds: str = Field(default="", max_length=200)
    file_code: str = Field(min_length=1, max_length=200)

    def upgrade(self) -> Event:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def _common(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "occurred_at": self.occurred_at,
                "site_id": self.site_id, "fonds": self.fonds, "file_code": self.file_code}


class PageScannedV1(_V1):
    NAME: ClassVar[str] = "PageScanned"
    page_no: PageNo
    uri: str = Field(min_length=1)
    sha256: Sha256
    size_bytes: int = Field(ge=1)
    media_type: str = Field(min_length=1)
    revision: int = Field(default=1, ge=1)
    path: str = ""

    def upgrade(self) -> PageScanned:
        return PageScanned(
            **self._common(), document=_document_of(self.path, self.uri, self.page_no),
            number=self.page_no, uri=self.uri, document_sha256=self.sha256, sha256=self.sha256,
            size_bytes=self.size_bytes, media_type=self.media_type, revision=self.revision,
            path=self.path)


class PageRemovedV1(_V1):
    NAME: ClassVar[str] = "PageRemoved"
    page_no: PageNo
    sha256: Sha256
    path: str = ""

    def upgrade(self) -> PageRemoved:
        if self.path:
            return PageRemoved(**self._common(), document=_document_of(self.path, "",
                                                                       self.page_no),
                               sha256=self.sha256, path=self.path)
        # No path: named by number only, as a version-1 check is (the consumer resolves it).
        return PageRemoved.model_construct(
            schema_=SchemaRef(name=PageRemoved.NAME, version=PageRemoved.VERSION),
            **self._common(), document=legacy_document(self.page_no), page_index=1,
            sha256=self.sha256, path="")


class FileManifestV1(_V1):
    NAME: ClassVar[str] = "FileManifest"
    title: str | None = None
    expected_pages: int | None = Field(default=None, ge=1)
    classification: Classification = Classification.PUBLIC
    priority: int = Field(default=0, ge=0, le=9)
    start_date: str | None = None
    end_date: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)

    def upgrade(self) -> FileManifest:
        return FileManifest(**self._common(), **self.model_dump(
            include={"title", "expected_pages", "classification", "priority", "start_date",
                     "end_date", "metadata"}))


class _PageRefV1(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    page_no: PageNo
    uri: str = Field(min_length=1)
    sha256: Sha256
    revision: int = Field(default=1, ge=1)


class _SiteDuplicateV1(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    page_no: PageNo
    other_file_code: str = Field(min_length=1, max_length=200)
    other_page_no: PageNo


class FileAssembledV1(_V1):
    NAME: ClassVar[str] = "FileAssembled"
    revision: int = Field(default=1, ge=1)
    trigger: Literal["marker", "expected_count", "idle", "late_page"] = "marker"
    pages: list[_PageRefV1]
    gaps: list[int] = Field(default_factory=list)
    duplicate_page_nos: list[int] = Field(default_factory=list)
    duplicate_content: list[list[int]] = Field(default_factory=list)
    expected_pages: int | None = None
    count_mismatch: bool = False
    classification: Classification = Classification.PUBLIC
    duplicate_in_site: list[_SiteDuplicateV1] = Field(default_factory=list)

    def upgrade(self) -> FileAssembled:
        docs = {p.page_no: _document_of("", p.uri, p.page_no) for p in self.pages}

        def key(n: int) -> PageKey:
            return PageKey.model_construct(document=docs.get(n, legacy_document(n)),
                                           page_index=1)

        return FileAssembled(
            **self._common(), revision=self.revision, trigger=self.trigger,
            pages=[PageRef(document=docs[p.page_no], number=p.page_no, uri=p.uri,
                           document_sha256=p.sha256, sha256=p.sha256, revision=p.revision)
                   for p in self.pages],
            gaps=self.gaps, duplicate_page_nos=self.duplicate_page_nos,
            duplicate_content=[[key(n) for n in g] for g in self.duplicate_content],
            expected_pages=self.expected_pages, count_mismatch=self.count_mismatch,
            classification=self.classification,
            duplicate_in_site=[SiteDuplicate.model_construct(
                document=key(d.page_no).document, page_index=1, other_fonds="",
                other_file_code=d.other_file_code,
                other_document=legacy_document(d.other_page_no), other_page_index=1)
                for d in self.duplicate_in_site])


class PageCheckedV1(_V1):
    NAME: ClassVar[str] = "PageChecked"
    page_no: PageNo
    sha256: Sha256
    revision: int = Field(default=1, ge=1)
    checks: list[CheckResult]
    passed: bool

    def upgrade(self) -> PageChecked:
        # The document is on record at the consumer only (see LEGACY_DOCUMENT_PREFIX).
        return PageChecked.model_construct(
            schema_=SchemaRef(name=PageChecked.NAME, version=PageChecked.VERSION),
            **self._common(), document=legacy_document(self.page_no), page_index=1,
            sha256=self.sha256, revision=self.revision, checks=self.checks,
            passed=self.passed, width_mm=None, height_mm=None)


class _PageTextV1(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    page_no: PageNo
    chars: int = Field(ge=0)
    mean_confidence: float | None = Field(default=None, ge=0, le=100)


class OcrCompletedV1(_V1):
    NAME: ClassVar[str] = "OcrCompleted"
    revision: int = Field(default=1, ge=1)
    output_uri: str
    output_sha256: Sha256
    text_uri: str | None = None
    pages: list[_PageTextV1]
    seconds: float = Field(default=0.0, ge=0)

    def upgrade(self) -> OcrCompleted:
        return OcrCompleted(
            **self._common(), revision=self.revision, output_uri=self.output_uri,
            output_sha256=self.output_sha256, text_uri=self.text_uri, seconds=self.seconds,
            pages=[PageText.model_construct(document=legacy_document(p.page_no), page_index=1,
                                            chars=p.chars, mean_confidence=p.mean_confidence)
                   for p in self.pages])


class _RescanReasonV1(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    page_no: int | None = None
    reason: str


class FileVerdictV1(_V1):
    NAME: ClassVar[str] = "FileVerdict"
    revision: int = Field(default=1, ge=1)
    verdict: Verdict
    reasons: list[_RescanReasonV1] = Field(default_factory=list)
    pages_total: int = Field(default=0, ge=0)
    pages_accepted: int = Field(default=0, ge=0)

    def upgrade(self) -> FileVerdict:
        return FileVerdict(
            **self._common(), revision=self.revision, verdict=self.verdict,
            reasons=[RescanReason(number=r.page_no, reason=r.reason) for r in self.reasons],
            pages_total=self.pages_total, pages_accepted=self.pages_accepted)


LEGACY_TYPES: tuple[type[_V1], ...] = (
    PageScannedV1, PageRemovedV1, FileManifestV1, FileAssembledV1, PageCheckedV1,
    OcrCompletedV1, FileVerdictV1)
_LEGACY: dict[tuple[str, int], type[_V1]] = {(t.NAME, t.VERSION): t for t in LEGACY_TYPES}

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
    if isinstance(raw, bytes) and (name := wire_name(raw)) is not None:
        # As Event.to_json writes it: validate straight from the bytes, cheaper than
        # loads + model_validate. Any failure takes the general path below, which gives the
        # reason.
        fast = _BY_NAME.get(name.decode("ascii", "replace"))
        if fast is not None:
            try:  # (not contextlib.suppress: it would make an object per event)
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
    legacy = _LEGACY.get((schema["name"], schema.get("version")))  # type: ignore[arg-type]
    if legacy is not None:
        try:
            return legacy.model_validate(data).upgrade()
        except ValidationError as exc:
            raise InvalidEvent(f"{legacy.NAME} v1: {_describe(exc)}", _raw(raw)) from None
        except ValueError as exc:  # e.g. a URI urllib cannot split ("file://[x/y.tif")
            raise InvalidEvent(f"{legacy.NAME} v1: {exc}", _raw(raw)) from None
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
