"""OCR outputs and packages copied to the object store's outputs bucket
(``[store] outputs_bucket``).

The OCR worker keeps writing its outputs under ``ocr.output_dir`` (the events still name those
files: packaging reads them there); with an object store configured, each finished output is
also stored, content-addressed within its file's revision:
``<site>/<fonds or _>/<file>/r<revision>/<sha256><suffix>`` (a package, built by `sohoa
package build`, the same way with its ``.zip``). A key is never written twice with
other bytes (``If-None-Match``; the bucket's versioning besides), so a replay of the same
output is a no-op. Reports and the web page read them with the reader's key.

The bucket has no object lock (the pages bucket has): when a file becomes classified, the OCR
worker deletes every version of everything under its prefix (``purge_file_outputs``).
"""

from __future__ import annotations

from pathlib import Path

from sohoa.config import StoreConfig
from sohoa.hashing import file_sha256
from sohoa.objectstore import ObjectStore

CONTENT_TYPES = {".pdf": "application/pdf", ".txt": "text/plain; charset=utf-8",
                 ".json": "application/json", ".zip": "application/zip"}


def file_prefix(site_id: str, fonds: str, file_code: str) -> str:
    """Every revision's outputs of one file, and nothing of another's (the trailing ``/``)."""
    if not site_id or not file_code:
        raise ValueError("a file's prefix needs its site and file code")
    return f"{site_id}/{fonds or '_'}/{file_code}/"


def output_key(site_id: str, fonds: str, file_code: str, revision: int, sha256: str,
               suffix: str) -> str:
    return f"{file_prefix(site_id, fonds, file_code)}r{revision}/{sha256}{suffix}"


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


def purge_file_outputs(cfg: StoreConfig, site_id: str, fonds: str, file_code: str,
                       store: ObjectStore | None = None) -> int:
    """Delete every version (and delete marker) of every revision's outputs of one file from
    the outputs bucket; returns how many. Raises StoreError (the caller retries)."""
    store = store or ObjectStore(cfg)
    return store.delete_versions(cfg.outputs_bucket, file_prefix(site_id, fonds, file_code))
