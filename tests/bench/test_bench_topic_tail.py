"""The restart bench's reader (bench/topic_tail.py) on real Kafka: waiting for a worker's
first output reads only what was written after the wait began, however much the topic held
before. Reading from the topic's start made the bench's "restart to first event" grow with the
campaign while the restarted worker was idle."""

from __future__ import annotations

import json

import pytest

from bench.topic_tail import TopicTail, assembled
from tests.support.streams_helpers import send

pytestmark = pytest.mark.integration


def _assembled_record(code: str, revision: int) -> tuple[str, bytes]:
    value = json.dumps({"type": "FileAssembled", "file_code": code, "revision": revision})
    return f"xa-probe/UBND/{code}", value.encode()


def test_tail_reads_only_records_written_after_it(stack) -> None:
    topic = stack.new_topics().file_events
    earlier = [_assembled_record(f"HS-{i:05d}", 1) for i in range(400)]
    # The awaited file already has an earlier record: only the new one may end the wait.
    earlier.append(_assembled_record("HS-PROBE", 1))
    send(stack, topic, earlier)

    with TopicTail(stack.settings.kafka, topic) as tail:
        send(stack, topic, [_assembled_record("HS-OTHER", 1), _assembled_record("HS-PROBE", 2)])
        tail.wait_for(assembled("HS-PROBE"), 60)

    assert b'"revision": 2' in tail.matched.value  # not the earlier record of the file
    assert 1 <= tail.read <= 2, f"read {tail.read} records; 2 were written after the tail"


def test_records_polled_after_a_match_are_there_for_the_next_wait(stack) -> None:
    topic = stack.new_topics().file_events
    codes = [f"HS-{i:02d}" for i in range(30)]
    with TopicTail(stack.settings.kafka, topic) as tail:
        send(stack, topic, [_assembled_record(c, 1) for c in codes])
        seen = set()
        for _ in codes:
            tail.wait_for(lambda m: m.key.decode().rsplit("/", 1)[-1] not in seen, 30)
            seen.add(tail.matched.key.decode().rsplit("/", 1)[-1])
    assert seen == set(codes)
    assert tail.read == len(codes)


def test_tail_times_out_when_nothing_new_matches(stack) -> None:
    topic = stack.new_topics().file_events
    send(stack, topic, [_assembled_record("HS-PROBE", 1)])
    with TopicTail(stack.settings.kafka, topic) as tail, pytest.raises(RuntimeError):
        tail.wait_for(assembled("HS-PROBE"), 3)
    assert tail.read == 0
