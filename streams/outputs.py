"""OCR outputs and packages copied to the object store's outputs bucket
(``[store] outputs_bucket``).

The OCR worker keeps writing its outputs under ``ocr.output_dir`` (the events still name those
files: packaging reads them there); with an object store configured, each finished output is
also stored, content-addressed within its file's revision:
``<site>/<fonds or _>/<file>/r<revision>/<sha256><suffix>`` (a package, built by `sohoa
package build`, the same way with its ``.zip``). A key is never written twice with
other bytes (``If-None-Match``; the bucket's versioning and object lock besides), so a replay
of the same output is a no-op. Reports and the web page read them with the reader's key.
"""

from __future__ import annotations

from pathlib import Path

from sohoa.config import StoreConfig
from sohoa.hashing import file_sha256
from sohoa.objectstore import ObjectStore

CONTENT_TYPES = {".pdf": "application/pdf", ".txt": "text/plain; charset=utf-8",
                 ".json": "application/json", ".zip": "application/zip"}


def output_key(site_id: str, fonds: str, file_code: str, revision: int, sha256: str,
               suffix: str) -> str:
    return f"{site_id}/{fonds or '_'}/{file_code}/r{revision}/{sha256}{suffix}"


def store_outputs(cfg: StoreConfig, site_id: str, fonds: str, file_code: str, revision: int,
                  files: list[Path], store: ObjectStore | None = None) -> list[str]:
    """Store each file; returns their ``s3://`` URIs. Raises StoreError (the caller retries)."""
    store = store or ObjectStore(cfg)
    uris = []
    for path in files:
        sha = file_sha256(path)
        key = output_key(site_id, fonds, file_code, revision, sha, path.suffix)
        with path.open("rb") as f:
            store.put_file(cfg.outputs_bucket, key, f, sha,
                           content_type=CONTENT_TYPES.get(path.suffix,
                                                          "application/octet-stream"))
        uris.append(f"s3://{cfg.outputs_bucket}/{key}")
    return uris
