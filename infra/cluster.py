"""A local three-node Kafka cluster (KRaft; each node broker + controller) on free ports, for
fault tests and benches that need replication: replication factor 3, min.insync.replicas 2,
so acks=all survives one node down — the production layout of docs/scaling.md, on one machine.

Reuses infra.kafka's jar resolution and Java lookup; infra/kafka.py (the single node of
`sohoa up` and the test fixture) is left as it is.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from infra.kafka import _QUIET_LOGGERS, ensure_libs, java_bin
from infra.procs import (
    StackError,
    alive,
    free_port,
    log_tail,
    port_open,
    signal_group,
    spawn_detached,
    terminate,
    wait_dead,
)
from sohoa.config import KafkaConfig, StackConfig

log = logging.getLogger(__name__)


@dataclass
class ClusterNode:
    node_id: int
    host: str
    port: int
    controller_port: int
    dir: Path
    pid: int | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def properties(self) -> Path:
        return self.dir / "server.properties"

    @property
    def out(self) -> Path:
        return self.dir / "kafka.out"

    def running(self) -> bool:
        return self.pid is not None and alive(self.pid)


class KafkaCluster:
    """Three combined broker+controller nodes; start/stop/kill each by node id."""

    def __init__(self, root: Path, *, size: int = 3, heap: str = "384m",
                 host: str = "127.0.0.1", stack: StackConfig | None = None) -> None:
        self.root = Path(root).resolve()
        self.heap = heap
        self.host = host
        self.stack = stack or StackConfig()
        self.cluster_id = ""
        self.nodes = [ClusterNode(i, host, free_port(host), free_port(host),
                                  self.root / f"node{i}") for i in range(1, size + 1)]

    @property
    def bootstrap(self) -> str:
        return ",".join(n.address for n in self.nodes)

    def kafka_config(self) -> KafkaConfig:
        return KafkaConfig(bootstrap=self.bootstrap)

    def node(self, node_id: int) -> ClusterNode:
        return next(n for n in self.nodes if n.node_id == node_id)

    # --- config --------------------------------------------------------------------------
    def _write_config(self, n: ClusterNode) -> None:
        voters = ",".join(f"{m.node_id}@{m.host}:{m.controller_port}" for m in self.nodes)
        rf = str(len(self.nodes))
        isr = str(min(2, len(self.nodes)))
        props = {
            "process.roles": "broker,controller",
            "node.id": str(n.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://{n.host}:{n.port},CONTROLLER://{n.host}:{n.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{n.host}:{n.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(n.dir / "data"),
            "num.partitions": "1",
            "default.replication.factor": rf,
            "min.insync.replicas": isr,
            "offsets.topic.replication.factor": rf,
            "offsets.topic.num.partitions": "12",
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": isr,
            "transaction.state.log.num.partitions": "12",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "delete.topic.enable": "true",
            "unclean.leader.election.enable": "false",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "num.replica.fetchers": "1",
            # A dead node is noticed in seconds, not the default 9 s + 18 s.
            "broker.session.timeout.ms": "6000",
            "broker.heartbeat.interval.ms": "1000",
            "replica.lag.time.max.ms": "10000",
        }
        n.dir.mkdir(parents=True, exist_ok=True)
        n.properties.write_text("# written by sohoa (infra/cluster.py)\n"
                                + "".join(f"{k}={v}\n" for k, v in props.items()))
        quiet = "".join(f"log4j.logger.{name}=WARN\n" for name in _QUIET_LOGGERS)
        (n.dir / "log4j.properties").write_text(
            "log4j.rootLogger=INFO, file\n"
            "log4j.appender.file=org.apache.log4j.FileAppender\n"
            f"log4j.appender.file.File={n.dir / 'server.log'}\n"
            "log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n\n" + quiet)

    def _java(self, n: ClusterNode, libs: Path, *args: str, heap: str | None = None) -> list[str]:
        return [java_bin(), f"-Xmx{heap or self.heap}", "-Xms64m", "-XX:+UseSerialGC",
                f"-Dlog4j.configuration=file:{n.dir / 'log4j.properties'}",
                "-cp", f"{libs}/*", *args]

    # --- lifecycle -----------------------------------------------------------------------
    def start(self, wait: bool = True) -> None:
        libs = ensure_libs(self.stack)
        self.cluster_id = self.cluster_id or _random_cluster_id()
        for n in self.nodes:
            self._write_config(n)
            if not (n.dir / "data" / "meta.properties").exists():
                res = subprocess.run(
                    self._java(n, libs, "kafka.tools.StorageTool", "format", "-t",
                               self.cluster_id, "-c", str(n.properties), heap="128m"),
                    capture_output=True, text=True, timeout=120)
                if res.returncode != 0:
                    raise StackError(f"StorageTool format failed on node {n.node_id}: "
                                     f"{res.stdout[-800:]} {res.stderr[-1500:]}")
        for n in self.nodes:
            self.start_node(n.node_id, wait=False)
        if wait:
            self.wait_ready()

    def start_node(self, node_id: int, wait: bool = True) -> None:
        n = self.node(node_id)
        if n.running():
            return
        for port in (n.port, n.controller_port):
            if port_open(n.host, port):
                raise StackError(f"port {port} of Kafka node {node_id} is taken")
        libs = ensure_libs(self.stack)
        n.pid = spawn_detached(self._java(n, libs, "kafka.Kafka", str(n.properties)),
                               log_path=n.out, pid_path=n.dir / "kafka.pid", cwd=n.dir)
        log.info("kafka node started", extra={"node": node_id, "pid": n.pid,
                                               "address": n.address})
        if wait:
            self.wait_ready()

    def kill_node(self, node_id: int) -> None:
        n = self.node(node_id)
        if n.pid is not None:
            signal_group(n.pid, signal.SIGKILL)
            wait_dead(n.pid, 10.0)
        log.info("kafka node killed", extra={"node": node_id, "pid": n.pid})
        n.pid = None

    def stop(self, timeout_s: float = 30.0) -> None:
        for n in self.nodes:
            if n.pid is not None:
                signal_group(n.pid, signal.SIGCONT)
                terminate(n.pid, timeout_s)
                n.pid = None

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Every running node registered with the controller and answering metadata."""
        from kafka.errors import KafkaError

        from sohoa.kafka_clients import make_admin

        want = {n.node_id for n in self.nodes if n.running()}
        deadline = time.monotonic() + timeout_s
        last: object = None
        while time.monotonic() < deadline:
            for n in self.nodes:
                if n.pid is not None and not n.running():
                    raise StackError(f"Kafka node {n.node_id} exited:\n{log_tail(n.out)}\n"
                                     f"{log_tail(n.dir / 'server.log')}")
            try:
                admin = make_admin(self.kafka_config(), request_timeout_ms=5000)
                try:
                    seen = {b["broker_id"] for b in admin.describe_cluster()["brokers"]}
                    if seen >= want:
                        return
                    last = seen
                finally:
                    admin.close()
            except (KafkaError, OSError) as exc:
                last = exc
            time.sleep(0.5)
        raise StackError(f"Kafka cluster not ready after {timeout_s:.0f}s ({last})")

    # --- topology ------------------------------------------------------------------------
    def leaders(self, topic: str) -> dict[int, int]:
        """partition -> leader node id."""
        from sohoa.kafka_clients import make_admin

        admin = make_admin(self.kafka_config(), request_timeout_ms=10000)
        try:
            [desc] = admin.describe_topics([topic])
            return {p["partition_index"]: p["leader_id"] for p in desc["partitions"]}
        finally:
            admin.close()


def _random_cluster_id() -> str:
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
