"""A file folder's ``hoso.json``: validated into a FileManifest, classified files kept at home.

Fields the contract types (title, expected_pages, classification, priority, dates, documents,
the archival ``record`` of the file and of each document: :mod:`sohoa.metadata`) are read as
such; any other text or number is free-form metadata. A record breaking a rule is refused with
every Vietnamese message naming its field. For a classified file only what counting and
checking need leaves the site: the classification, the expected page count, the documents'
names, page counts and OCR languages, and each document's type (tên loại: QC's dpi floor for
maps and drawings). Its title, dates, records and metadata stay in the folder.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from sohoa.events import FileManifest, stable_event_id
from sohoa.metadata import DocumentRecord, FileRecord, record_problems

MANIFEST_MAX_BYTES = 1 << 20
_TYPED = ("title", "expected_pages", "classification", "priority", "start_date", "end_date",
          "documents", "metadata", "record")


def manifest_event(raw: bytes, site: str, fonds: str, file_code: str) -> FileManifest:
    """Validate a ``hoso.json``; raise ValueError naming the field at fault."""
    if len(raw) > MANIFEST_MAX_BYTES:
        raise ValueError(f"manifest is larger than {MANIFEST_MAX_BYTES} bytes")
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not valid UTF-8 JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    fields = {k: data[k] for k in _TYPED if k in data}
    metadata = fields.get("metadata", {})
    if isinstance(metadata, dict):
        # TT 05/2025 fields may sit at the top level or under "metadata": both are metadata.
        metadata = dict(metadata)
        for k, v in data.items():
            if k in fields:
                continue
            if isinstance(v, bool) or not isinstance(v, str | int | float):
                raise ValueError(f"field '{k}': expected text or a number")
            metadata.setdefault(k, v)
        fields["metadata"] = {k: _text(v) for k, v in metadata.items()}
    if isinstance(fields.get("documents"), list):
        # A document may be listed by its name alone.
        fields["documents"] = [{"name": d} if isinstance(d, str) else d
                               for d in fields["documents"]]
    _check_records(fields)
    try:
        ev = FileManifest(site_id=site, fonds=fonds, file_code=file_code, **fields)
    except ValidationError as exc:
        e = exc.errors()[0]
        loc = ".".join(str(x) for x in e["loc"])
        raise ValueError(f"field '{loc}': {e['msg']}") from None
    if ev.classification.is_classified:
        # Fail closed: nothing but what counting needs leaves the site.
        ev = ev.model_copy(update={
            "title": None, "metadata": {}, "start_date": None, "end_date": None, "record": None,
            "documents": [d.model_copy(update={"record": _type_only(d.record)})
                          for d in ev.documents]})
    sha = stable_event_id("FileManifest", 2, site, fonds, file_code,
                          ev.model_dump_json(exclude={"event_id", "occurred_at"}))
    return ev.model_copy(update={"event_id": sha})


def _text(v: Any) -> Any:
    return str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v


def _check_records(fields: dict[str, Any]) -> None:
    """Every fault of the file's and the documents' records, in one Vietnamese message."""
    problems = []
    if isinstance(fields.get("record"), dict):
        problems += [f"hồ sơ — {p}" for p in record_problems(FileRecord, fields["record"])]
    for d in fields.get("documents") or []:
        if isinstance(d, dict) and isinstance(d.get("record"), dict):
            name = d.get("name", "?")
            problems += [f"văn bản '{name}' — {p}"
                         for p in record_problems(DocumentRecord, d["record"])]
    if problems:
        raise ValueError("siêu dữ liệu sai: " + "; ".join(problems))


def _type_only(record: DocumentRecord | None) -> DocumentRecord | None:
    if record is None or record.ten_loai is None:
        return None
    return DocumentRecord(ten_loai=record.ten_loai)
