"""Waiting for a new record on a topic without reading the records already on it.

A bench that times "the worker's first output after a restart" must not read the topic from its
start: the assembly bench did, and at 1,000,000 pages its reader scanned ~40,000 earlier
FileAssembled events (hundreds of MB) while the restarted worker sat idle, so the reader's scan
was most of the restart time it reported, growing with the campaign.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from sohoa.kafka_clients import make_consumer


class TopicTail:
    """``topic`` read from the end offsets it has when this is made (call it before whatever
    writes the awaited record starts). ``read`` counts the records handed back since,
    ``matched`` is the record that ended the last wait."""

    def __init__(self, kafka: Any, topic: str) -> None:
        from kafka import TopicPartition

        self.topic = topic
        self.read = 0
        self.matched: Any = None
        self._pending: deque[Any] = deque()
        self._consumer = make_consumer(kafka, group_id=None)
        parts = self._consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            self._consumer.close()
            raise RuntimeError(f"topic {topic} has no partitions")
        self._consumer.assign(tps)
        for tp, end in self._consumer.end_offsets(tps).items():
            self._consumer.seek(tp, end)

    def wait_for(self, match: Callable[[Any], bool], timeout: float) -> float:
        """Until a record for which ``match`` is true; returns the monotonic time it was read.
        Records polled after the match are kept for the next wait (a poll returns many)."""
        deadline = time.monotonic() + timeout
        while True:
            while self._pending:
                record = self._pending.popleft()
                self.read += 1
                if match(record):
                    self.matched = record
                    return time.monotonic()
            if time.monotonic() >= deadline:
                raise RuntimeError(f"no matching record on {self.topic} in {timeout:.0f} s")
            for records in self._consumer.poll(timeout_ms=200).values():
                self._pending.extend(records)

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> TopicTail:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def assembled(file_code: str) -> Callable[[Any], bool]:
    """A record that is the FileAssembled of ``file_code``."""
    code = file_code.encode()
    return lambda m: code in (m.key or b"") and b'"FileAssembled"' in m.value
