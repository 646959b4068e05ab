"""The topic spec (infra/topics.toml) and its idempotent application with kafka-python's admin."""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sohoa.config import KafkaConfig, TopicsConfig

log = logging.getLogger(__name__)

DEFAULT_SPEC = Path(__file__).resolve().parent / "topics.toml"
TOPIC_KEYS = ("site_events", "file_events", "dead_letters")


@dataclass(frozen=True)
class TopicSpec:
    key: str
    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str]


@dataclass
class TopicChange:
    topic: str
    action: str  # created | altered | partitions | warning
    detail: str = ""


@dataclass
class ApplyResult:
    changes: list[TopicChange] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(c.action != "warning" for c in self.changes)


def load_spec(
    topics: TopicsConfig, path: Path | None = None, *,
    replication_factor: int | None = None, min_insync_replicas: int | None = None,
) -> list[TopicSpec]:
    """The spec for the topic names in ``topics``; CLI overrides win over the file."""
    path = path or topics.spec or DEFAULT_SPEC
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    defaults = raw.get("defaults", {})
    specs = []
    for key in TOPIC_KEYS:
        entry = {**defaults, **raw.get("topics", {}).get(key, {})}
        if "partitions" not in entry:
            raise ValueError(f"{path}: [topics.{key}] needs 'partitions'")
        rf = replication_factor or int(entry.get("replication_factor", 1))
        min_isr = min_insync_replicas or int(entry.get("min_insync_replicas", 1))
        configs = {
            "cleanup.policy": str(entry.get("cleanup_policy", "delete")),
            "min.insync.replicas": str(min_isr),
            "retention.ms": str(int(entry.get("retention_ms", -1))),
            "retention.bytes": str(int(entry.get("retention_bytes", -1))),
        }
        # Any other Kafka topic config, spelled as Kafka spells it.
        configs.update({k: str(v) for k, v in entry.get("config", {}).items()})
        specs.append(TopicSpec(key, getattr(topics, key), int(entry["partitions"]), rf, configs))
    return specs


def apply_spec(kafka: KafkaConfig, specs: list[TopicSpec], timeout_ms: int = 30000) -> ApplyResult:
    """Create what is missing, align configs, grow partitions. Never deletes or shrinks."""
    from kafka.admin import ConfigResource, ConfigResourceType
    from kafka.errors import TopicAlreadyExistsError

    from sohoa.kafka_clients import make_admin

    result = ApplyResult()
    admin = make_admin(kafka)
    try:
        existing = set(admin.list_topics())
        for spec in specs:
            if spec.name in existing:
                continue
            try:
                admin.create_topics(
                    {spec.name: {"num_partitions": spec.partitions,
                                 "replication_factor": spec.replication_factor,
                                 "configs": spec.configs}},
                    timeout_ms=timeout_ms, wait_for_metadata=True,
                )
            except TopicAlreadyExistsError:
                existing.add(spec.name)  # created meanwhile (e.g. by auto-create): align below
                continue
            result.changes.append(TopicChange(spec.name, "created",
                                              f"partitions={spec.partitions} "
                                              f"rf={spec.replication_factor}"))
            log.info("topic created", extra={"topic": spec.name, "partitions": spec.partitions})
        present = [s for s in specs if s.name in existing]
        if not present:
            return result
        described = {t["name"]: t for t in admin.describe_topics([s.name for s in present])}
        current = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, s.name, dict.fromkeys(s.configs))
             for s in present],
            config_filter="all",
        )["topic"]
        for spec in present:
            have = {k: v["value"] for k, v in current.get(spec.name, {}).items()}
            diff = {k: v for k, v in spec.configs.items() if have.get(k) != v}
            if diff:
                admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, spec.name, diff)])
                result.changes.append(TopicChange(
                    spec.name, "altered",
                    ", ".join(f"{k}: {have.get(k)} → {v}" for k, v in diff.items())))
                log.info("topic config altered", extra={"topic": spec.name, "keys": list(diff)})
            n = len(described[spec.name]["partitions"])
            if n < spec.partitions:
                admin.create_partitions({spec.name: spec.partitions}, timeout_ms=timeout_ms)
                result.changes.append(TopicChange(spec.name, "partitions",
                                                  f"{n} → {spec.partitions}"))
                log.info("topic partitions increased",
                         extra={"topic": spec.name, "from": n, "to": spec.partitions})
            elif n > spec.partitions:
                result.changes.append(TopicChange(
                    spec.name, "warning",
                    f"có {n} phân vùng, spec ghi {spec.partitions}; Kafka không giảm được "
                    f"(has {n} partitions > spec {spec.partitions}; left as is)"))
    finally:
        admin.close()
    return result


def describe(kafka: KafkaConfig, specs: list[TopicSpec]) -> list[dict[str, Any]]:
    """What the broker has for each spec'd topic, next to what the spec wants."""
    from kafka.admin import ConfigResource, ConfigResourceType

    from sohoa.kafka_clients import make_admin

    admin = make_admin(kafka)
    try:
        existing = set(admin.list_topics())
        present = [s for s in specs if s.name in existing]
        described = ({t["name"]: t for t in admin.describe_topics([s.name for s in present])}
                     if present else {})
        configs = (admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, s.name, dict.fromkeys(s.configs))
             for s in present], config_filter="all")["topic"] if present else {})
    finally:
        admin.close()
    rows = []
    for spec in specs:
        topic = described.get(spec.name)
        have = {k: v["value"] for k, v in configs.get(spec.name, {}).items()}
        rows.append({
            "topic": spec.name,
            "exists": topic is not None,
            "partitions": len(topic["partitions"]) if topic else None,
            "spec_partitions": spec.partitions,
            "replication_factor": (len(topic["partitions"][0]["replica_nodes"])
                                   if topic and topic["partitions"] else None),
            "configs": have,
            "spec_configs": spec.configs,
            "in_sync": topic is not None and len(topic["partitions"]) >= spec.partitions
                       and all(have.get(k) == v for k, v in spec.configs.items()),
        })
    return rows
