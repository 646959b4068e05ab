"""What a batch is made of and what writing it returns: records in, results and dead letters
out. No database and no parsing here."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from typing import Any

from sohoa.events import DeadLetter, stable_event_id

CONSUMER_SOURCE = "consumer"


@dataclass(frozen=True)
class Record:
    """One Kafka record as the applier needs it (kafka-python's ConsumerRecord fits)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None


def wire(records: list[Record]) -> list[tuple[str, int, int, bytes | None, bytes | None]]:
    """Records as plain tuples: cheap to pickle to the parse process."""
    return [(r.topic, r.partition, r.offset, r.value, r.key) for r in records]


@dataclass
class DeadLetterRow:
    dedup_key: str
    site_id: str
    source: str
    topic: str | None
    partition: int | None
    offset: int | None
    reason: str
    payload: str
    occurred_at: datetime

    def to_event(self) -> DeadLetter:
        return DeadLetter(event_id=self.dedup_key, site_id=self.site_id[:200] or "unknown",
                          source=self.source, topic=self.topic, partition=self.partition,
                          offset=self.offset, reason=self.reason, payload=self.payload,
                          occurred_at=self.occurred_at)


@dataclass
class BatchResult:
    applied: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    dead_letters: list[DeadLetterRow] = field(default_factory=list)
    sites_created: list[str] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    # "copy": the batch was all new and went in by COPY; "dedup": it held a replay (or another
    # event for a stored page revision) and was merged row by row in SQL.
    path: str = "copy"


@dataclass
class SiteDefaults:
    """What a site the campaign plan does not know yet is created with."""

    timezone: str = "Asia/Ho_Chi_Minh"
    work_start: time = time(7, 30)
    work_end: time = time(17, 0)
    workdays: tuple[int, ...] = (0, 1, 2, 3, 4)

    @classmethod
    def from_campaign(cls, c: Any) -> SiteDefaults:
        return cls(timezone=c.timezone, work_start=c.work_start, work_end=c.work_end,
                   workdays=tuple(c.workdays))


def reason_class(reason: str) -> str:
    """A short, low-cardinality label for a dead-letter reason (the full text is stored)."""
    r = reason.strip()
    if r.startswith("not JSON") or r.startswith("not a JSON"):
        return "invalid_json"
    if r.startswith("field 'schema"):
        return "unknown_schema"
    m = re.match(r"^([A-Za-z]+)(?: v\d+)?: field '([A-Za-z_.0-9]+)'", r)
    if m:
        return f"invalid_{m.group(2).split('.')[0]}"[:40]
    head = re.split(r"[:(\[]", r, maxsplit=1)[0].strip().lower()
    head = re.sub(r"[^a-z0-9]+", "_", head).strip("_")
    return (head or "other")[:40]


def _lenient(value: bytes | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", errors="replace")[:100_000]


def _site_guess(value: bytes | None) -> str:
    try:
        data = json.loads(value or b"")
        site = data.get("site_id") if isinstance(data, dict) else None
        return site if isinstance(site, str) and site else "unknown"
    except (ValueError, UnicodeDecodeError):
        return "unknown"


def dead_letter_for(rec: Record, reason: str) -> DeadLetterRow:
    return DeadLetterRow(
        dedup_key=stable_event_id("DeadLetter", CONSUMER_SOURCE, rec.topic, rec.partition,
                                  rec.offset),
        site_id=_site_guess(rec.value), source=CONSUMER_SOURCE, topic=rec.topic,
        partition=rec.partition, offset=rec.offset, reason=reason,
        payload=_lenient(rec.value), occurred_at=datetime.now(UTC))
