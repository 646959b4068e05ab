"""Shared fixtures. The session fixture ``stack`` runs a throw-away Kafka broker and PostgreSQL
cluster on free ports, started by the same code as ``sohoa up`` (infra/stack.py).

API (stable, other test files rely on it):
    stack.settings          sohoa.config.Settings pointing at the throw-away services
    stack.env               SOHOA_* variables for subprocesses (merge into a copy of os.environ)
    stack.kafka_bootstrap   "127.0.0.1:PORT"
    stack.pg_dsn            superuser DSN to database `postgres`
    stack.new_database(name_prefix) -> DSN of a fresh empty database (owner: role sohoa)
    stack.database_env(name_prefix) -> SOHOA_POSTGRES__* of a fresh database as `sohoa up` gives
                            them: DSN (sohoa_writer), READER_DSN, OWNER_DSN (migrations)
    stack.new_topics() -> TopicsConfig with unique names, created with the spec's partitions
    stack.stop_kafka() / start_kafka() / kill_kafka() (SIGKILL) / pause_kafka() / resume_kafka()
    stack.stop_postgres() / start_postgres()

The session fixture ``objects`` runs a throw-away object store (SeaweedFS S3, infra/objects.py)
on free ports, with keys for the sites in OBJECT_SITES (tests/support/objects_helpers.py):
    objects.node            infra.objects.ObjectStoreNode
    objects.store(role)     [store] config for "admin", "workers", "reader" or "site:<id>"
    objects.env(role)       SOHOA_STORE__* variables for that role
    objects.stop() / start() / kill()

The fixture ``pg`` is a fresh migrated database of the stack: (writer DSN, open connection);
its helpers are in tests/support/progress_store.py. The fixture ``isolated_config`` leaves no
SOHOA_* variable set and no config file found (cwd a tmp dir), for the configuration's own tests.

After each test that used ``stack``, a stopped/killed/paused Kafka or PostgreSQL is brought back.
Tests using ``stack`` are marked ``integration`` automatically.
Set SOHOA_SKIP_INTEGRATION=1 to skip every integration test (quick unit runs only).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from infra.objects import ObjectStoreNode
from infra.postgres import FALLBACK_ROOT, discard_cluster
from infra.procs import StackError, free_port, free_port_block
from infra.stack import LocalStack, settings_for_stack, stack_env
from infra.topics import apply_spec, load_spec
from sohoa.config import Settings, StoreConfig, TopicsConfig
from tests.support.objects_helpers import OBJECT_SITES

SKIP_INTEGRATION = os.environ.get("SOHOA_SKIP_INTEGRATION") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        # A test that uses the real services is an integration test, marked or not.
        if {"stack", "objects"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
    if not SKIP_INTEGRATION:
        return
    skip = pytest.mark.skip(reason="SOHOA_SKIP_INTEGRATION=1")
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)


@dataclass
class StackHandle:
    """What tests see of the session stack."""

    local: LocalStack
    settings: Settings
    env: dict[str, str] = field(default_factory=dict)

    @property
    def kafka_bootstrap(self) -> str:
        return self.local.kafka.bootstrap

    @property
    def pg_dsn(self) -> str:
        return self.local.pg.superuser_dsn("postgres")

    def new_database(self, name_prefix: str = "t") -> str:
        prefix = re.sub(r"[^a-z0-9_]", "_", name_prefix.lower())[:40] or "t"
        return self.local.pg.create_database(f"{prefix}_{uuid.uuid4().hex[:10]}")

    def database_env(self, name_prefix: str = "t") -> dict[str, str]:
        from psycopg.conninfo import make_conninfo

        owner = self.new_database(name_prefix)
        return {"SOHOA_POSTGRES__DSN": make_conninfo(owner, user="sohoa_writer"),
                "SOHOA_POSTGRES__READER_DSN": make_conninfo(owner, user="sohoa_reader"),
                "SOHOA_POSTGRES__OWNER_DSN": owner}

    def new_topics(self) -> TopicsConfig:
        suffix = uuid.uuid4().hex[:10]
        base = TopicsConfig()
        topics = TopicsConfig(
            site_events=f"{base.site_events}.{suffix}",
            file_events=f"{base.file_events}.{suffix}",
            dead_letters=f"{base.dead_letters}.{suffix}",
        )
        apply_spec(self.settings.kafka, load_spec(topics))
        return topics

    def stop_kafka(self) -> None:
        self.local.kafka.stop()

    def start_kafka(self) -> None:
        self.local.kafka.start(wait=True)

    def kill_kafka(self) -> None:
        self.local.kafka.kill()

    def pause_kafka(self) -> None:
        self.local.kafka.pause()

    def resume_kafka(self) -> None:
        self.local.kafka.resume()

    def stop_postgres(self) -> None:
        self.local.pg.stop()

    def start_postgres(self) -> None:
        self.local.pg.start(wait=True)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackHandle]:
    if SKIP_INTEGRATION:
        pytest.skip("SOHOA_SKIP_INTEGRATION=1")
    # `timeout` sends SIGTERM: turn it into an exception so the finalizer below still runs.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm_as_exit)
    local = _start_stack(tmp_path_factory)
    try:
        settings = local.settings
        yield StackHandle(local=local, settings=settings, env=stack_env(settings))
    finally:
        _stop_stack(local)


@pytest.fixture
def pg(stack: StackHandle) -> Iterator[tuple[str, Any]]:
    """A migrated fresh database: (dsn, connection)."""
    import psycopg

    from tests.support.progress_store import fresh_db

    dsn = fresh_db(stack)
    conn = psycopg.connect(dsn)
    yield dsn, conn
    conn.close()


@pytest.fixture
def isolated_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No SOHOA_* variable set, cwd a tmp dir, no config file remembered."""
    import sohoa.config as cfgmod

    for key in list(os.environ):
        if key.startswith("SOHOA_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cfgmod, "_config_file", None)


@pytest.fixture(autouse=True)
def _stack_restored(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that stopped, killed or paused a service and then failed must not take the
    following tests down with it: after each test that used ``stack``, bring it back."""
    yield
    if "stack" not in request.fixturenames:
        return
    handle: StackHandle = request.getfixturevalue("stack")
    handle.local.kafka.resume()
    if not handle.local.kafka.running():
        handle.local.kafka.start(wait=True)
    if not handle.local.pg.running():
        handle.local.pg.start(wait=True)


def _start_stack(tmp_path_factory: pytest.TempPathFactory, attempts: int = 3) -> LocalStack:
    """Free ports are only free until someone binds them (client sockets use the same range):
    on a failed start, retry with new ports and a new state dir."""
    for attempt in range(1, attempts + 1):
        state = tmp_path_factory.mktemp("stack")
        ports = {"kafka_port": free_port(), "kafka_controller_port": free_port(),
                 "postgres_port": free_port()}
        # The object store is its own session fixture (`objects`): most tests never need it.
        settings = settings_for_stack(Settings(), state, object_store=False, **ports)
        # Component paths default to ./.state; keep the tests' out of the working tree.
        settings.watcher.roots = [state / "hotfolder"]
        settings.watcher.outbox_path = state / "outbox.sqlite3"
        settings.ocr.output_dir = state / "ocr"
        settings.streams.data_dir = state / "faust"
        local = LocalStack(settings)
        _start_watchdog(local)
        try:
            local.start_services()
            return local
        except BaseException as exc:
            _stop_stack(local)
            if attempt == attempts or not isinstance(exc, StackError):
                raise
    raise AssertionError("unreachable")


def _stop_stack(local: LocalStack) -> None:
    try:
        local.kafka.resume()
        local.kafka.stop(timeout_s=20)
    finally:
        local.pg.stop(timeout_s=20)
        discard_cluster(local.pg.state_dir)


def _start_watchdog(local: LocalStack) -> None:
    """Kill the stack if this pytest process dies without running finalizers (SIGKILL, timeout)."""
    root = local.pg.root
    fallback = str(root) if FALLBACK_ROOT in root.parents else ""
    script = f"""
import os, shutil, signal, time
def pid(name):
    try:
        return int(open({str(local.run_dir)!r} + "/" + name + ".pid").read())
    except (OSError, ValueError):
        return None
while True:
    try:
        os.kill({os.getpid()}, 0)
    except ProcessLookupError:
        break
    time.sleep(2)
for name, sig in (("kafka", signal.SIGKILL), ("postgres", signal.SIGQUIT)):
    p = pid(name)
    if p:
        try:
            os.killpg(p, signal.SIGCONT); os.killpg(p, sig)
        except OSError:
            pass
time.sleep(3)
if {fallback!r}:
    shutil.rmtree({fallback!r}, ignore_errors=True)
"""
    subprocess.Popen([sys.executable, "-c", script], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)


def _sigterm_as_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


@dataclass
class ObjectsHandle:
    node: ObjectStoreNode

    @property
    def endpoint(self) -> str:
        return self.node.endpoint

    def store(self, role: str) -> StoreConfig:
        return self.node.store_config(role)

    def env(self, role: str) -> dict[str, str]:
        return self.node.store_env(role)

    def stop(self) -> None:
        self.node.stop()

    def kill(self) -> None:
        self.node.kill()

    def start(self) -> None:
        self.node.start(sites=OBJECT_SITES, wait=True)


@pytest.fixture(scope="session")
def objects(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectsHandle]:
    if SKIP_INTEGRATION:
        pytest.skip("SOHOA_SKIP_INTEGRATION=1")
    state = tmp_path_factory.mktemp("objects")
    stack_cfg = Settings().stack.model_copy(update={
        "state_dir": state, "s3_port": free_port(), "weed_port_base": free_port_block(7),
        "object_lock_days": 1})
    node = ObjectStoreNode(stack_cfg)
    _start_weed_watchdog(node)
    try:
        node.start(sites=OBJECT_SITES, wait=True)
        yield ObjectsHandle(node)
    finally:
        node.stop(timeout_s=10)


@pytest.fixture(autouse=True)
def _objects_restored(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "objects" not in request.fixturenames:
        return
    handle: ObjectsHandle = request.getfixturevalue("objects")
    if not handle.node.running():
        handle.start()


def _start_weed_watchdog(node: ObjectStoreNode) -> None:
    script = f"""
import os, signal, time
while True:
    try:
        os.kill({os.getpid()}, 0)
    except ProcessLookupError:
        break
    time.sleep(2)
try:
    p = int(open({str(node.pid_path)!r}).read())
    os.killpg(p, signal.SIGKILL)
except (OSError, ValueError):
    pass
"""
    subprocess.Popen([sys.executable, "-c", script], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
