"""What both Faust apps share: construction from Settings, raw topics, dead letters, and
running a worker from a click command."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import faust

from sohoa.config import Settings
from sohoa.events import DeadLetter, Event, stable_event_id
from streams import commits, metrics

log = logging.getLogger(__name__)


def source_partitions(settings: Settings, topic: str) -> int | None:
    """Partition count of an existing topic, so internal topics (changelog, notes) match the
    source topic and stay co-partitioned with it."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(**settings.kafka.client_kwargs(),
                             client_id=f"{settings.kafka.client_id}-streams-probe")
    try:
        parts = consumer.partitions_for_topic(topic)
    finally:
        consumer.close()
    return len(parts) if parts else None


def ensure_internal_topics(settings: Settings, topics: list[tuple[str, int, dict[str, str]]],
                           timeout_s: float = 30.0) -> None:
    """Create the apps' internal topics (changelog, ticks) before the worker starts: when Faust
    declares them itself, its first rebalance can run before their metadata is known and the
    table then sees a changelog of 0 partitions."""
    import time as _time

    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    from sohoa.kafka_clients import make_admin

    admin = make_admin(settings.kafka)
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(name, n, settings.streams.replication_factor, topic_configs=cfg)
               for name, n, cfg in topics if name not in existing]
        if new:
            # another worker of the same app may win the race
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(new, timeout_ms=int(timeout_s * 1000))
        deadline = _time.monotonic() + timeout_s
        names = {name for name, _n, _c in topics}
        while not names <= set(admin.list_topics()):
            if _time.monotonic() > deadline:
                raise RuntimeError(f"internal topics not visible: {sorted(names)}")
            _time.sleep(0.2)
    finally:
        admin.close()


def make_app(settings: Settings, app_id: str, web_port: int,
             partitions: int | None) -> commits.App:
    n = partitions or settings.streams.table_partitions or 12
    datadir = Path(settings.streams.data_dir) / app_id
    datadir.mkdir(parents=True, exist_ok=True)
    kw: dict[str, Any] = {}
    if settings.kafka.security_protocol != "PLAINTEXT":
        kw["broker_credentials"] = _credentials(settings)
    app = commits.App(
        app_id,
        broker=[f"kafka://{b}" for b in settings.kafka.bootstrap.split(",")],
        datadir=str(datadir),
        # rocksdb: tables on disk, reused on restart; memory: rebuilt from the changelog
        store=f"{settings.streams.store}://",
        topic_partitions=n,
        topic_replication_factor=settings.streams.replication_factor,
        topic_disable_leader=True,
        table_standby_replicas=settings.streams.standby_replicas,
        web_enabled=True,              # for /metrics only:
        web_tables_enabled=False,      # /table/… would serve the tables' data (URIs, hashes,
        web_router_enabled=False,      # classification); /router/… resolves keys to it
        web_port=web_port,
        web_bind=settings.streams.web_host,
        web_host=settings.streams.web_host,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # Without linger every changelog write is its own produce request, and the socket
        # sends dominate the assembly worker's time.
        producer_linger=settings.streams.producer_linger_s,
        producer_max_batch_size=256 * 1024,
        broker_commit_every=settings.streams.commit_every,
        broker_commit_interval=settings.streams.commit_interval_s,
        stream_wait_empty=False,
        broker_session_timeout=settings.streams.session_timeout_s,
        consumer_metadata_max_age_ms=int(settings.streams.metadata_max_age_s * 1000),
        producer_metadata_max_age_ms=int(settings.streams.metadata_max_age_s * 1000),
        **kw,
    )

    @app.page("/metrics")
    async def _metrics(web: Any, request: Any) -> Any:
        body, ctype = metrics.exposition()
        # aiohttp wants the charset apart from the content type
        return web.bytes(body, content_type=ctype.replace("; charset=utf-8", ""))

    return app


def table_options(settings: Settings) -> dict[str, Any] | None:
    """Options of a table's partition databases: small memtables and files (faust-streaming's
    defaults are three 64 MB memtables for each); their block cache and the memtables'
    total are the worker's (streams/rocksdb_memory.py, the tables' ``rocks_memory``).
    A fresh dict per table: the store pops keys from the one it is given."""
    cfg = settings.streams
    if cfg.store != "rocksdb":
        return None
    mb = 1024 * 1024
    return {"write_buffer_size": cfg.rocksdb_write_buffer_mb * mb,
            "max_write_buffer_number": 2,
            "target_file_size_base": 16 * mb}


def _credentials(settings: Settings) -> Any:
    k = settings.kafka
    import ssl

    ctx = None
    if k.security_protocol in ("SSL", "SASL_SSL"):
        ctx = ssl.create_default_context(cafile=str(k.ssl_cafile) if k.ssl_cafile else None)
        if k.ssl_certfile:
            ctx.load_cert_chain(str(k.ssl_certfile), str(k.ssl_keyfile) if k.ssl_keyfile else None)
    if k.sasl_mechanism:
        pw = k.sasl_password.get_secret_value() if k.sasl_password else ""
        return faust.SASLCredentials(username=k.sasl_username, password=pw,
                                     mechanism=k.sasl_mechanism, ssl_context=ctx)
    return faust.SSLCredentials(ctx)


def raw_topic(app: faust.App, name: str, **kw: Any) -> faust.TopicT:
    """Bytes in, bytes out: we parse with sohoa.events ourselves, so a bad payload becomes a
    dead letter instead of a crashed agent."""
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                     value_serializer="raw", **kw)


async def publish(topic: faust.TopicT, event: Event, key: str | None = None) -> Any:
    """Hand ``event`` to the producer; returns the future of its acknowledgement."""
    return await topic.send(key=(key or event.key()).encode(), value=event.to_json())


def dead_letter(stage: str, reason: str, payload: bytes | str | None, *, topic: str | None,
                partition: int | None, offset: int | None, site_id: str = "unknown") -> DeadLetter:
    metrics.DEAD_LETTERS.labels(stage, metrics.reason_label(reason)).inc()
    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else (payload or "")
    return DeadLetter(
        event_id=stable_event_id("DeadLetter", "streams", stage, topic, partition, offset, reason),
        site_id=site_id, source="streams", topic=topic, partition=partition, offset=offset,
        reason=f"{stage}: {reason}", payload=text[:100_000],
    )


def run_worker(app: faust.App, loglevel: str = "WARNING") -> None:
    """Run one Faust worker in this process until SIGTERM/SIGINT (handled by mode.Worker)."""
    from faust.worker import Worker

    worker = Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False,
                    override_logging=False)
    worker.execute_from_commandline()
