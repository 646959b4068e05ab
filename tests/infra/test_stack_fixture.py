"""The session fixture itself: real Kafka and PostgreSQL, and its fault-injection handles."""

from __future__ import annotations

import psycopg
import pytest

from sohoa.kafka_clients import make_admin, make_consumer, make_producer

pytestmark = pytest.mark.integration


def test_new_topics_follow_spec(stack):
    topics = stack.new_topics()
    admin = make_admin(stack.settings.kafka)
    try:
        described = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(
            [topics.site_events, topics.file_events, topics.dead_letters])}
    finally:
        admin.close()
    assert described == {topics.site_events: 12, topics.file_events: 12, topics.dead_letters: 3}
    assert topics != stack.new_topics()


def test_new_database_is_fresh_and_separate(stack):
    a, b = stack.new_database("fx"), stack.new_database("fx")
    assert a != b
    with psycopg.connect(a) as conn:
        conn.execute("CREATE TABLE t (x int)")
    with psycopg.connect(b) as conn:
        assert conn.execute("SELECT to_regclass('t')").fetchone() == (None,)
    with psycopg.connect(stack.settings.postgres.url) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("sohoa",)


def test_env_points_at_the_stack(stack):
    import os

    from sohoa.config import Settings

    old = {k: os.environ.get(k) for k in stack.env}
    os.environ.update(stack.env)
    try:
        s = Settings()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert s.kafka.bootstrap == stack.kafka_bootstrap
    assert s.postgres.url == stack.settings.postgres.url


def test_kafka_restart_keeps_records(stack):
    topics = stack.new_topics()
    producer = make_producer(stack.settings.kafka)
    producer.send(topics.dead_letters, key="x", value=b"before").get(timeout=30)
    producer.close()
    stack.kill_kafka()
    stack.start_kafka()
    consumer = make_consumer(stack.settings.kafka, topics.dead_letters,
                             group_id="fixture-test", consumer_timeout_ms=15000)
    try:
        values = [r.value for r in consumer]
    finally:
        consumer.close()
    assert values == [b"before"]


def test_postgres_restart_keeps_rows(stack):
    dsn = stack.new_database("restart")
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (42)")
    stack.stop_postgres()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=2)
    stack.start_postgres()
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT x FROM t").fetchall() == [(42,)]


def test_pause_and_resume_kafka(stack):
    topics = stack.new_topics()
    producer = make_producer(stack.settings.kafka, request_timeout_ms=3000,
                             delivery_timeout_ms=4000, max_block_ms=4000)
    # Metadata first, so the paused send fails on delivery, not on the metadata lookup.
    producer.send(topics.dead_letters, key="x", value=b"before").get(timeout=30)
    stack.pause_kafka()
    try:
        fut = producer.send(topics.dead_letters, key="x", value=b"paused")
        with pytest.raises(Exception):  # noqa: B017 - any delivery error proves the pause
            fut.get(timeout=15)
    finally:
        stack.resume_kafka()
        producer.close(timeout=5)
    producer = make_producer(stack.settings.kafka)
    producer.send(topics.dead_letters, key="x", value=b"resumed").get(timeout=30)
    producer.close()


def test_a_stopped_service_left_by_a_test(stack):
    # Leaves both services down on purpose; the autouse fixture restores them afterwards.
    stack.stop_kafka()
    stack.stop_postgres()


def test_services_are_back_for_the_next_test(stack):
    with psycopg.connect(stack.settings.postgres.url, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    admin = make_admin(stack.settings.kafka)
    try:
        assert isinstance(admin.list_topics(), list)
    finally:
        admin.close()
