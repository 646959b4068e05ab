"""The local stack: Kafka + PostgreSQL (+ topics) with the same code for `sohoa up` and tests."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from pathlib import Path

from infra.kafka import KafkaNode
from infra.objects import ObjectStoreNode
from infra.postgres import (
    APP_DB,
    APP_ROLE,
    READER_ROLE,
    WRITER_ROLE,
    PostgresNode,
    pgpass_path,
    role_dsn,
)
from infra.procs import free_port
from infra.topics import ApplyResult, apply_spec, load_spec
from sohoa.config import Settings, TopicsConfig

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


class LocalStack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state_dir = Path(settings.stack.state_dir).resolve()
        self.kafka = KafkaNode(settings.stack, settings.kafka)
        self.pg = PostgresNode(settings.stack)
        self.objects = ObjectStoreNode(settings.stack, settings.store) \
            if settings.stack.object_store else None

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    def start_services(self, progress: Progress = _quiet) -> None:
        """Kafka and PostgreSQL, started together (PostgreSQL is ready while the JVM boots)."""
        progress("Đang khởi động PostgreSQL…")
        self.pg.start(wait=False)
        if self.objects is not None:
            progress("Đang khởi động kho đối tượng (SeaweedFS S3)…")
            self.objects.start(sites=[self.settings.watcher.site_id], wait=False)
        progress("Đang khởi động Kafka (KRaft)…")
        self.kafka.start(wait=True)
        self.pg.wait_ready()
        self.pg.ensure_app_database()
        if self.objects is not None:
            self.objects.wait_ready()
            self.objects.ensure_buckets()

    def apply_topics(self, topics: TopicsConfig | None = None, *,
                     replication_factor: int | None = None,
                     min_insync_replicas: int | None = None) -> ApplyResult:
        specs = load_spec(topics or self.settings.topics,
                          replication_factor=replication_factor,
                          min_insync_replicas=min_insync_replicas)
        return apply_spec(self.settings.kafka, specs)

    def stop_services(self, progress: Progress = _quiet) -> dict[str, bool]:
        """Stop both; returns which ones were running."""
        progress("Đang dừng Kafka…")
        kafka = self.kafka.stop()
        progress("Đang dừng PostgreSQL…")
        pg = self.pg.stop()
        out = {"kafka": kafka, "postgres": pg}
        if self.objects is not None:
            progress("Đang dừng kho đối tượng…")
            out["objects"] = self.objects.stop()
        return out

    def component_env(self) -> dict[str, dict[str, str]]:
        """Each component's own object store key: the agent uploads with its site's, the
        workers read pages and write outputs with theirs, the consumer gets the reader's."""
        if self.objects is None:
            return {}
        site = self.settings.watcher.site_id
        return {"watch": {**self.objects.store_env(f"site:{site}"),
                          "SOHOA_UPLOAD__ENABLED": "true"},
                "streams": self.objects.store_env("workers"),
                "consume": self.objects.store_env("reader")}


def stack_env(settings: Settings, with_paths: bool = True, reader: bool = False
              ) -> dict[str, str]:
    """``SOHOA_*`` variables that point a child process at this stack (and, ``with_paths``,
    at the hot folders, outbox, OCR output and Faust data dir ``settings`` uses).

    PostgreSQL as the writer; with ``reader``, reads as the reader role too. The owner's DSN
    is never passed on: only `sohoa db migrate` gets it (see infra/cli.py `up`)."""
    s = settings.stack
    env = {
        "SOHOA_KAFKA__BOOTSTRAP": settings.kafka.bootstrap,
        "SOHOA_POSTGRES__DSN": settings.postgres.url,
        "SOHOA_STACK__STATE_DIR": str(Path(s.state_dir).resolve()),
        "SOHOA_STACK__HOST": s.host,
        "SOHOA_STACK__KAFKA_PORT": str(s.kafka_port),
        "SOHOA_STACK__KAFKA_CONTROLLER_PORT": str(s.kafka_controller_port),
        "SOHOA_STACK__POSTGRES_PORT": str(s.postgres_port),
    }
    t = settings.topics
    env.update({
        "SOHOA_TOPICS__SITE_EVENTS": t.site_events,
        "SOHOA_TOPICS__FILE_EVENTS": t.file_events,
        "SOHOA_TOPICS__DEAD_LETTERS": t.dead_letters,
    })
    if reader and settings.postgres.reader_dsn is not None:
        env["SOHOA_POSTGRES__READER_DSN"] = settings.postgres.reader_dsn.get_secret_value()
    if settings.stack.kafka_home:
        env["SOHOA_STACK__KAFKA_HOME"] = str(settings.stack.kafka_home)
    if with_paths:
        env.update({
            "SOHOA_WATCHER__ROOTS": json.dumps([str(p) for p in settings.watcher.roots]),
            "SOHOA_WATCHER__OUTBOX_PATH": str(settings.watcher.outbox_path),
            "SOHOA_OCR__OUTPUT_DIR": str(settings.ocr.output_dir),
            "SOHOA_STREAMS__DATA_DIR": str(settings.streams.data_dir),
        })
    return env


def owner_env(settings: Settings) -> dict[str, str]:
    """The variable that lets `sohoa db migrate` run as the database owner: given to that step
    only, never to the components."""
    owner = settings.postgres.owner_dsn
    return {"SOHOA_POSTGRES__OWNER_DSN": owner.get_secret_value()} if owner else {}


def run_env(tag: str, state: Path, *, ocr: bool = False) -> dict[str, str]:
    """``SOHOA_*`` variables that give one run of the components on a shared stack its own
    Faust app ids, consumer group, free ports and data dirs, so runs never share state
    (tests and benches start many runs against one broker and one server)."""
    run_id = uuid.uuid4().hex[:8]
    return {
        "SOHOA_STREAMS__APP_ID": f"{tag}-assembly-{run_id}",
        "SOHOA_STREAMS__OCR_APP_ID": f"{tag}-ocr-{run_id}",
        "SOHOA_STREAMS__WEB_PORT": str(free_port()),
        "SOHOA_STREAMS__OCR_WEB_PORT": str(free_port()),
        "SOHOA_STREAMS__DATA_DIR": str(state / "faust"),
        "SOHOA_OCR__OUTPUT_DIR": str(state / "ocr"),
        "SOHOA_OCR__ENABLED": "true" if ocr else "false",
        "SOHOA_CONSUMER__GROUP_ID": f"{tag}-progress-{run_id}",
        "SOHOA_CONSUMER__METRICS_PORT": str(free_port()),
    }


def settings_for_stack(base: Settings, state_dir: Path, **stack_fields: object) -> Settings:
    """``base`` with the stack's ports/state dir and the Kafka/PostgreSQL that follow from them."""
    data = base.model_dump(by_alias=True)
    if base.kafka.sasl_password:
        data["kafka"]["sasl_password"] = base.kafka.sasl_password.get_secret_value()
    ident = base.identity  # secrets dump as "**********": carry the values
    if ident.site_secret:
        data["identity"]["site_secret"] = ident.site_secret.get_secret_value()
    data["identity"]["sites"] = {k: v.get_secret_value() for k, v in ident.sites.items()}
    if base.simulate.postgres_dsn:
        data["simulate"]["postgres_dsn"] = base.simulate.postgres_dsn.get_secret_value()
    data["stack"].update(stack_fields)
    data["stack"]["state_dir"] = Path(state_dir).resolve()
    s = data["stack"]
    data["kafka"]["bootstrap"] = f"{s['host']}:{s['kafka_port']}"
    passfile = pgpass_path(Path(state_dir))
    data["postgres"].update({
        key: role_dsn(s["host"], s["postgres_port"], APP_DB, role, passfile)
        for key, role in (("dsn", WRITER_ROLE), ("reader_dsn", READER_ROLE),
                          ("owner_dsn", APP_ROLE))})
    return Settings.model_validate(json.loads(json.dumps(data, default=str)))
