"""kafka-python clients configured once, for the agent, the consumer and the tools.

kafka-python is imported lazily: the kernel itself must stay importable without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sohoa.config import KafkaConfig

if TYPE_CHECKING:
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer


def make_producer(cfg: KafkaConfig, **overrides: Any) -> KafkaProducer:
    """An idempotent, acks=all producer: a retried send never duplicates a record."""
    from kafka import KafkaProducer

    kw: dict[str, Any] = {
        **cfg.client_kwargs(),
        "client_id": cfg.client_id,
        "acks": "all",
        "enable_idempotence": True,
        "retries": 2**31 - 1,
        "max_in_flight_requests_per_connection": 5,
        "linger_ms": 5,
        "compression_type": None,
        "key_serializer": lambda k: k.encode("utf-8") if isinstance(k, str) else k,
    }
    kw.update(overrides)
    return KafkaProducer(**kw)


def make_consumer(cfg: KafkaConfig, *topics: str, **overrides: Any) -> KafkaConsumer:
    from kafka import KafkaConsumer

    kw: dict[str, Any] = {
        **cfg.client_kwargs(),
        "client_id": cfg.client_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
    }
    kw.update(overrides)
    return KafkaConsumer(*topics, **kw)


def make_admin(cfg: KafkaConfig, **overrides: Any) -> KafkaAdminClient:
    from kafka import KafkaAdminClient

    kw: dict[str, Any] = {**cfg.client_kwargs(), "client_id": f"{cfg.client_id}-admin"}
    kw.update(overrides)
    return KafkaAdminClient(**kw)
