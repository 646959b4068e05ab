"""`sohoa up` / `sohoa down` and the topic spec, against real Kafka and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psycopg
import pytest

from infra.components import Components
from infra.postgres import PostgresNode, discard_cluster, pgpass_path
from infra.procs import free_port
from infra.stack import settings_for_stack
from infra.topics import apply_spec, describe, load_spec
from sohoa.config import Settings, TopicsConfig
from sohoa.kafka_clients import make_admin, make_consumer, make_producer

REPO = Path(__file__).resolve().parents[2]


def _sohoa(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sohoa.cli", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


# --- unit: the spec ---------------------------------------------------------------------------

def test_spec_has_the_three_topics_as_documented():
    specs = {s.key: s for s in load_spec(TopicsConfig())}
    assert {k: s.partitions for k, s in specs.items()} == {
        "site_events": 12, "file_events": 12, "dead_letters": 3}
    assert specs["site_events"].name == "sohoa.site-events"
    assert specs["site_events"].configs["retention.ms"] == "-1"
    assert specs["file_events"].configs["retention.ms"] == "-1"
    assert specs["dead_letters"].configs["retention.ms"] == str(90 * 24 * 3600 * 1000)
    assert all(s.configs["cleanup.policy"] == "delete" for s in specs.values())
    assert all(s.replication_factor == 1 for s in specs.values())


def test_spec_overrides_for_production():
    specs = load_spec(TopicsConfig(site_events="x"), replication_factor=3, min_insync_replicas=2)
    assert specs[0].name == "x"
    assert {s.replication_factor for s in specs} == {3}
    assert {s.configs["min.insync.replicas"] for s in specs} == {"2"}


def test_component_that_dies_at_start_is_reported(tmp_path):
    settings = settings_for_stack(Settings(), tmp_path, component_grace_s=10.0)
    comps = Components(settings, None, {})
    # An unknown command exits at once with click's usage error: a real early death.
    [result] = comps.start(["no-such-command"])
    assert result.died
    assert "no-such-command" in result.tail
    assert comps.pid("no-such-command") is None


# --- integration: idempotent spec against the session stack ------------------------------------

@pytest.mark.integration
def test_topic_spec_applies_idempotently(stack, tmp_path):
    suffix = uuid.uuid4().hex[:8]
    topics = TopicsConfig(site_events=f"idem-a.{suffix}", file_events=f"idem-b.{suffix}",
                          dead_letters=f"idem-c.{suffix}")
    specs = load_spec(topics)
    first = apply_spec(stack.settings.kafka, specs)
    assert sorted(c.action for c in first.changes) == ["created"] * 3
    second = apply_spec(stack.settings.kafka, specs)
    assert second.changes == []
    assert all(row["in_sync"] for row in describe(stack.settings.kafka, specs))

    # Drift (someone shortened retention by hand) is put back; more partitions are added.
    from kafka.admin import ConfigResource, ConfigResourceType

    admin = make_admin(stack.settings.kafka)
    try:
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topics.site_events,
                                            {"retention.ms": "3600000"})])
    finally:
        admin.close()
    spec_file = tmp_path / "topics.toml"
    text = (REPO / "infra" / "topics.toml").read_text()
    head, dead = text.split("[topics.dead_letters]")
    assert "partitions = 3" in dead
    spec_file.write_text(head + "[topics.dead_letters]" + dead.replace("partitions = 3",
                                                                       "partitions = 5"))
    grown = load_spec(topics, spec_file)
    third = apply_spec(stack.settings.kafka, grown)
    actions = {(c.topic, c.action) for c in third.changes}
    assert actions == {(topics.site_events, "altered"), (topics.dead_letters, "partitions")}
    rows = {r["topic"]: r for r in describe(stack.settings.kafka, grown)}
    assert rows[topics.site_events]["configs"]["retention.ms"] == "-1"
    assert rows[topics.dead_letters]["partitions"] == 5
    # A spec with fewer partitions never shrinks (Kafka cannot) and deletes nothing.
    fourth = apply_spec(stack.settings.kafka, specs)
    assert [(c.topic, c.action) for c in fourth.changes] == [(topics.dead_letters, "warning")]
    assert apply_spec(stack.settings.kafka, grown).changes == []


# --- integration: sohoa up / down keep the data ----------------------------------------------

@pytest.mark.integration
def test_up_down_up_keeps_kafka_records_and_postgres_rows(tmp_path):
    state = tmp_path / "state"
    ports = {name: free_port() for name in ("KAFKA_PORT", "KAFKA_CONTROLLER_PORT",
                                            "POSTGRES_PORT")}
    metrics_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOHOA_")}
    env.update({f"SOHOA_STACK__{k}": str(v) for k, v in ports.items()})
    env.update(_object_store_ports())
    env.update({"SOHOA_LOGGING__JSON": "false", "SOHOA_CONSUMER__METRICS_PORT": str(metrics_port),
                "SOHOA_CONSUMER__METRICS_HOST": "127.0.0.1"})
    bootstrap = f"127.0.0.1:{ports['KAFKA_PORT']}"
    # The owner's DSN: passwords are in the state dir's libpq password file.
    dsn = (f"postgresql://sohoa@127.0.0.1:{ports['POSTGRES_PORT']}/sohoa"
           f"?passfile={pgpass_path(state)}")
    settings = Settings(kafka={"bootstrap": bootstrap})
    topic = f"persist.{uuid.uuid4().hex[:8]}"
    try:
        res = _sohoa(env, "up", "--no-components", "--state-dir", str(state))
        assert res.returncode == 0, res.stdout + res.stderr
        assert "Kafka (bootstrap)" in res.stdout and bootstrap in res.stdout
        assert dsn.replace("sohoa@", "sohoa_writer@") in res.stdout
        assert "sohoa.site-events: created" in res.stdout

        producer = make_producer(settings.kafka)
        producer.send(topic, key="k", value=b"ghi-nhan").get(timeout=60)
        producer.close()
        with psycopg.connect(dsn) as conn:
            conn.execute("CREATE TABLE durable (note text)")
            conn.execute("INSERT INTO durable VALUES ('trang 1')")

        res = _sohoa(env, "down", "--state-dir", str(state))
        assert res.returncode == 0, res.stdout + res.stderr
        assert "Đã dừng Kafka" in res.stdout and "Đã dừng PostgreSQL" in res.stdout
        assert "Đã dừng kho đối tượng" in res.stdout
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(dsn, connect_timeout=2)
        res = _sohoa(env, "down", "--state-dir", str(state))
        assert res.returncode == 0 and "Không có gì đang chạy" in res.stdout

        # Second start: same data, topics already right, and one component (the consumer).
        env2 = {**env, "SOHOA_STACK__COMPONENTS": json.dumps(["consume"])}
        res = _sohoa(env2, "up", "--state-dir", str(state))
        assert res.returncode == 0, res.stdout + res.stderr
        assert "Topic đã đúng cấu hình" in res.stdout
        assert "sohoa consume đã chạy" in res.stdout
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT note FROM durable").fetchall() == [("trang 1",)]
        consumer = make_consumer(settings.kafka, topic, group_id=f"g-{uuid.uuid4().hex}",
                                 consumer_timeout_ms=20000)
        try:
            assert [r.value for r in consumer] == [b"ghi-nhan"]
        finally:
            consumer.close()
        body = _wait_metrics(f"http://127.0.0.1:{metrics_port}/metrics")
        assert "sohoa_consumer_events_applied_total" in body

        res = _sohoa(env, "down", "--state-dir", str(state))
        assert res.returncode == 0, res.stdout + res.stderr
        assert "Đã dừng sohoa consume" in res.stdout
    finally:
        _sohoa(env, "down", "--state-dir", str(state))
        discard_cluster(state)


def _object_store_ports() -> dict[str, str]:
    from infra.procs import free_port_block

    return {"SOHOA_STACK__S3_PORT": str(free_port()),
            "SOHOA_STACK__WEED_PORT_BASE": str(free_port_block(7))}


def _wait_metrics(url: str, timeout_s: float = 60.0) -> str:
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.mark.integration
def test_up_starts_every_component_and_down_stops_them(tmp_path):
    state = tmp_path / "state"
    ports = {k: free_port() for k in ("STACK__KAFKA_PORT", "STACK__KAFKA_CONTROLLER_PORT",
                                      "STACK__POSTGRES_PORT", "STREAMS__WEB_PORT",
                                      "STREAMS__OCR_WEB_PORT", "CONSUMER__METRICS_PORT",
                                      "WATCHER__METRICS_PORT")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOHOA_")}
    env.update({f"SOHOA_{k}": str(v) for k, v in ports.items()})
    env.update(_object_store_ports())
    env["SOHOA_LOGGING__JSON"] = "false"
    urls = {name: f"http://127.0.0.1:{ports[key]}/metrics" for name, key in (
        ("watch", "WATCHER__METRICS_PORT"), ("streams", "STREAMS__WEB_PORT"),
        ("ocr", "STREAMS__OCR_WEB_PORT"), ("consume", "CONSUMER__METRICS_PORT"))}
    try:
        res = _sohoa(env, "up", "--state-dir", str(state))
        assert res.returncode == 0, res.stdout + res.stderr
        for name in ("watch", "streams", "consume"):
            assert f"sohoa {name} đã chạy" in res.stdout
            assert (state / "run" / f"{name}.pid").exists()
        for url in urls.values():
            assert url in res.stdout  # every endpoint is printed
        assert str(state / "hotfolder") in res.stdout
        s3 = f"http://127.0.0.1:{env['SOHOA_STACK__S3_PORT']}"
        assert f"Kho đối tượng (S3) sẵn sàng tại {s3}" in res.stdout
        # The agent uploads with its site's key, the workers read with theirs.
        agent_env = Path(f"/proc/{(state / 'run' / 'watch.pid').read_text().strip()}/environ")
        agent_vars = dict(v.split("=", 1) for v in agent_env.read_text().split("\0") if "=" in v)
        keys = json.loads((state / "secrets" / "objects.json").read_text())
        assert agent_vars["SOHOA_UPLOAD__ENABLED"] == "true"
        assert agent_vars["SOHOA_STORE__ACCESS_KEY_ID"] == keys["sites"]["demo"]["access_key_id"]
        assert keys["sites"]["demo"]["secret_access_key"] not in res.stdout
        # Each component really serves its metrics, with the names docs/architecture.md lists.
        assert "sohoa_watcher_outbox_depth" in _wait_metrics(urls["watch"])
        assert "sohoa_consumer_events_applied_total" in _wait_metrics(urls["consume"])
        assert "sohoa_stream_events_total" in _wait_metrics(urls["streams"], 120)
        _assert_least_privilege(state, ports["STACK__POSTGRES_PORT"], res.stdout)
        # Exposure: every metrics port listens on loopback only, and the Faust web port
        # serves no table views (data: URIs, hashes, classification).
        for key in ("WATCHER__METRICS_PORT", "CONSUMER__METRICS_PORT", "STREAMS__WEB_PORT",
                    "STREAMS__OCR_WEB_PORT"):
            assert _listening(ports[key]) == {"127.0.0.1"}, key
        for path in ("/table/", "/router/"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(f"http://127.0.0.1:{ports['STREAMS__WEB_PORT']}{path}",
                                       timeout=10)
            assert err.value.code == 404, path

        again = _sohoa(env, "up", "--state-dir", str(state))
        assert again.returncode == 0, again.stdout + again.stderr
        assert again.stdout.count("đang chạy sẵn") == 3  # nothing started twice

        pids = [int((state / "run" / f"{n}.pid").read_text()) for n in
                ("watch", "streams", "consume")]
        res = _sohoa(env, "down", "--state-dir", str(state))
        assert res.returncode == 0, res.stdout + res.stderr
        for name in ("watch", "streams", "consume"):
            assert f"Đã dừng sohoa {name}" in res.stdout
        for pid in pids:  # process groups: `streams` runs two children of its own
            left = subprocess.run(["pgrep", "-g", str(pid)], capture_output=True, text=True)
            # A stopped component is reparented to PID 1, which in a container may never reap
            # it: a zombie has exited and holds nothing, so only live members count.
            live = [p for p in left.stdout.split() if _state(int(p)) not in ("Z", None)]
            assert live == [], f"group {pid} still has live {live}"
    finally:
        _sohoa(env, "down", "--state-dir", str(state))
        discard_cluster(state)


def _assert_least_privilege(state: Path, pg_port: int, up_output: str) -> None:
    """No client backend of the running stack is a superuser: the consumer writes as
    sohoa_writer and its /metrics gauges (scraped above) read as sohoa_reader; `sohoa up`
    printed no password."""
    passwords = [line.rsplit(":", 1)[1] for line in
                 pgpass_path(state).read_text().splitlines()]
    assert len(passwords) == 3 and not any(p in up_output for p in passwords)
    node = PostgresNode(settings_for_stack(Settings(), state, postgres_port=pg_port).stack)
    with psycopg.connect(node.superuser_dsn(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT a.usename, r.rolsuper FROM pg_stat_activity a "
            "JOIN pg_roles r ON r.oid = a.usesysid "
            "WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()").fetchall()
    assert rows, "the consumer holds connections"
    assert [u for u, su in rows if su] == []
    assert {u for u, _ in rows} == {"sohoa_writer", "sohoa_reader"}


def _listening(port: int) -> set[str]:
    """The local addresses listening on TCP ``port`` (from /proc/net/tcp and tcp6)."""
    import ipaddress

    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.split(":")
            if state != "0A" or int(hexport, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(addr)
            # Each 32-bit word is in host (little-endian) order.
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            ip = ipaddress.ip_address(raw)
            mapped = getattr(ip, "ipv4_mapped", None)
            found.add(str(mapped or ip))
    return found


def _state(pid: int) -> str | None:
    """The process state letter from /proc (None when it is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return None
