"""What became of an accepted file, written to ``deliverable_events`` (migration 009) by the
writer role: packaged, handed over, verified (or failed verification). Each row's id comes
from the fact, so running a step again on the same bytes adds nothing."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import psycopg

from sohoa.events import stable_event_id

STEPS = ("packaged", "handed_over", "verified", "verify_failed")


def record(conn: psycopg.Connection, step: str, *, site_id: str, fonds: str, file_code: str,
           revision: int, kind: str, package: str, package_sha256: str, package_bytes: int,
           pages: int, at: datetime, handover: str | None = None,
           detail: dict[str, Any] | None = None) -> bool:
    """Append one step; False when the same fact was already recorded."""
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}")
    event_id = stable_event_id("deliverable", step, site_id, fonds, file_code, revision,
                               package_sha256, handover or "",
                               json.dumps(detail or {}, sort_keys=True, ensure_ascii=False))
    cur = conn.execute(
        "INSERT INTO deliverable_events (event_id, step, site_id, fonds, file_code, revision, "
        "kind, package, package_sha256, package_bytes, pages, handover, detail, occurred_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (event_id) DO NOTHING",
        (event_id, step, site_id, fonds, file_code, revision, kind, package, package_sha256,
         package_bytes, pages, handover, json.dumps(detail or {}, ensure_ascii=False), at))
    return cur.rowcount == 1
