"""Streams metrics (names as docs/architecture.md lists them), served at the Faust web
server's ``/metrics``. Each process (assembly, OCR) has its own registry and port."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

EVENTS = Counter("sohoa_stream_events_total", "Events handled by a stream stage",
                 ["stage", "type"])
FILES_ASSEMBLED = Counter("sohoa_files_assembled_total", "FileAssembled events published",
                          ["site"])
QC_PAGES = Counter("sohoa_qc_pages_checked_total", "Pages checked", ["site"])
QC_FAILURES = Counter("sohoa_qc_failures_total", "Failed page checks", ["site", "check"])
OCR_FILES = Counter("sohoa_ocr_files_total", "Files through OCR", ["site", "result"])
OCR_BACKLOG = Gauge("sohoa_ocr_backlog_files", "Files waiting for or in OCR")
OCR_SECONDS = Histogram("sohoa_ocr_seconds", "Wall time of one file's OCR",
                        buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600))
OCR_PAGES = Counter("sohoa_ocr_pages_total", "Pages OCR'd (each page of a multi-page document)",
                    ["site"])
# Per file while its OCR runs (the series is removed when the file is done): a 500-page
# document shows how far it has got.
OCR_FILE_PAGES_DONE = Gauge("sohoa_ocr_file_pages_done", "Pages OCR'd so far of a file in OCR",
                            ["site", "fonds", "file"])
OCR_FILE_PAGES_TOTAL = Gauge("sohoa_ocr_file_pages_total", "Pages of a file in OCR",
                             ["site", "fonds", "file"])
# The idle check's cost: it must read the files still open, not the whole table (issue 24).
IDLE_CHECKS = Counter("sohoa_assembly_idle_checks_total", "Idle checks of the files table")
IDLE_VALUES_READ = Counter("sohoa_assembly_idle_values_read_total",
                           "Values of the files table read by the idle check")
OPEN_FILES = Gauge("sohoa_assembly_open_files",
                   "Files of this worker's partitions not assembled, at the last idle check")
# The worker's shared RocksDB budget in use (streams/rocksdb_memory.py)
ROCKSDB_BYTES = Gauge("sohoa_streams_rocksdb_bytes",
                      "RocksDB memory in use, shared by every table partition of the worker",
                      ["part"])
DEAD_LETTERS = Counter("sohoa_dead_letters_total", "Dead letters sent by the streams",
                       ["stage", "reason"])
VERDICTS = Counter("sohoa_verdicts_total", "File verdicts published", ["site", "state"])
# A page object whose latest version was not the document (other bytes PUT over it, or a
# delete marker): read from its stored version all the same, but someone holds a key that
# writes where it should not.
OBJECTS_TAMPERED = Counter("sohoa_page_objects_tampered_total",
                           "Reads of a page object whose latest version was not the document",
                           ["site"])


def count_tampered(keys: Iterable[str]) -> None:
    """Count tampered page objects by their key (``<site>/<aa>/<sha256>``)."""
    for key in keys:
        OBJECTS_TAMPERED.labels(key.split("/", 1)[0][:200] or "unknown").inc()


def exposition() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST


def reason_label(reason: str) -> str:
    """A short, low-cardinality label from a free-text reason."""
    head = reason.split(":", 1)[0].strip().lower().replace(" ", "_")
    return head[:40] or "unknown"
