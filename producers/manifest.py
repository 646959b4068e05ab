"""A file folder's ``hoso.json``: validated into a FileManifest, classified files kept at home.

Fields the contract types (title, expected_pages, classification, priority, dates, documents)
are read as such; any other text or number is TT 05/2025 metadata. For a classified file only
what counting needs leaves the site: the classification, the expected page count and the
documents' names and page counts. Its title and metadata stay in the folder.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from sohoa.events import FileManifest, stable_event_id

MANIFEST_MAX_BYTES = 1 << 20
_TYPED = ("title", "expected_pages", "classification", "priority", "start_date", "end_date",
          "documents", "metadata")


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
    try:
        ev = FileManifest(site_id=site, fonds=fonds, file_code=file_code, **fields)
    except ValidationError as exc:
        e = exc.errors()[0]
        loc = ".".join(str(x) for x in e["loc"])
        raise ValueError(f"field '{loc}': {e['msg']}") from None
    if ev.classification.is_classified:
        # Fail closed: nothing but what counting needs leaves the site.
        ev = ev.model_copy(update={"title": None, "metadata": {}, "start_date": None,
                                   "end_date": None})
    sha = stable_event_id("FileManifest", 2, site, fonds, file_code,
                          ev.model_dump_json(exclude={"event_id", "occurred_at"}))
    return ev.model_copy(update={"event_id": sha})


def _text(v: Any) -> Any:
    return str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
