"""One local Kafka node (KRaft broker + controller) run from the official jars."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

from infra.maven import fetch_jars
from infra.procs import (
    NotReady,
    StackError,
    log_tail,
    poll_ready,
    port_open,
    read_pid,
    running_pid,
    spawn_detached,
    terminate,
)
from sohoa.config import KafkaConfig, StackConfig

log = logging.getLogger(__name__)

POM_DIR = Path(__file__).resolve().parent / "kafka"
_SAFE_CRED = re.compile(r"^[A-Za-z0-9._+=/-]{1,200}$")

# Loggers that print a line per request / per partition move at INFO.
_QUIET_LOGGERS = (
    "kafka.request.logger", "kafka.controller", "kafka.log.LogCleaner", "state.change.logger",
    "kafka.authorizer.logger", "org.apache.kafka.controller", "kafka.coordinator",
    "org.apache.kafka.coordinator", "kafka.log", "org.apache.kafka.storage", "kafka.cluster",
    "kafka.server.ReplicaFetcherManager", "kafka.server.metadata", "org.apache.kafka.image",
    "org.apache.kafka.metadata", "org.apache.kafka.raft", "kafka.raft",
    "org.apache.kafka.clients", "org.apache.kafka.common.utils.AppInfoParser",
)


def libs_dir(stack: StackConfig) -> Path:
    home = stack.kafka_home or (Path(os.environ["KAFKA_HOME"]) if os.environ.get("KAFKA_HOME")
                                else None)
    if home is not None:
        return Path(home) / "libs"
    return Path.home() / ".cache" / "sohoa" / f"kafka-{stack.kafka_version}" / "libs"


def _has_kafka_jar(libs: Path) -> bool:
    return libs.is_dir() and any(libs.glob("kafka_2.*.jar"))


def ensure_libs(stack: StackConfig) -> Path:
    """The Kafka jars, resolved from Maven Central by infra/kafka/pom.xml when missing."""
    libs = libs_dir(stack)
    if _has_kafka_jar(libs):
        return libs
    if stack.kafka_home or os.environ.get("KAFKA_HOME"):
        raise StackError(
            f"Không thấy thư viện Kafka trong {libs} (KAFKA_HOME / stack.kafka_home). "
            f"(no Kafka jars in {libs}: point KAFKA_HOME at a Kafka {stack.kafka_version} "
            f"install, or unset it to download the jars with Maven)"
        )
    fetch_jars("Kafka", stack.kafka_version, POM_DIR, libs,
               {"kafka.libs.dir": str(libs), "kafka.version": stack.kafka_version},
               _has_kafka_jar, hint=", hoặc đặt KAFKA_HOME")
    return libs


def java_bin() -> str:
    java = shutil.which("java")
    if java is None:
        home = os.environ.get("JAVA_HOME")
        if home and Path(home, "bin", "java").exists():
            return str(Path(home, "bin", "java"))
        raise StackError(
            "Thiếu Java để chạy Kafka. Cài bằng: apt-get install -y default-jdk-headless "
            "(hoặc chạy infra/install-system-deps.sh). (java not found on PATH / JAVA_HOME)"
        )
    return java


class KafkaNode:
    """The Kafka of ``sohoa up`` and of the test fixture: same code, different state dirs."""

    def __init__(self, stack: StackConfig, kafka: KafkaConfig | None = None) -> None:
        self.stack = stack
        # The clients' side of the connection; with stack.kafka_sasl its user is the super user.
        self.kafka = kafka or KafkaConfig(bootstrap=f"{stack.host}:{stack.kafka_port}")
        self.state_dir = Path(stack.state_dir).resolve()
        self.dir = self.state_dir / "kafka"
        self.data_dir = self.dir / "data"
        self.logs_dir = self.state_dir / "logs"
        self.pid_path = self.state_dir / "run" / "kafka.pid"
        self.out_path = self.logs_dir / "kafka.out"
        self.server_log = self.logs_dir / "kafka-server.log"
        self.properties_path = self.dir / "server.properties"
        self.log4j_path = self.dir / "log4j.properties"

    @property
    def bootstrap(self) -> str:
        return f"{self.stack.host}:{self.stack.kafka_port}"

    @property
    def pid(self) -> int | None:
        return running_pid(self.pid_path, "kafka.Kafka")

    def running(self) -> bool:
        return self.pid is not None

    def admin_credentials(self) -> tuple[str, str]:
        """(user, password) of the super user of a SASL broker, from the clients' config."""
        k = self.kafka
        if (k.security_protocol != "SASL_PLAINTEXT" or k.sasl_mechanism != "SCRAM-SHA-512"
                or not k.sasl_username or k.sasl_password is None):
            raise StackError(
                "stack.kafka_sasl cần kafka.security_protocol = \"SASL_PLAINTEXT\", "
                "kafka.sasl_mechanism = \"SCRAM-SHA-512\", kafka.sasl_username và "
                "kafka.sasl_password (the broker's super user is the centre's own Kafka user)")
        user, pw = k.sasl_username, k.sasl_password.get_secret_value()
        if not _SAFE_CRED.match(user) or not _SAFE_CRED.match(pw):
            raise StackError("kafka.sasl_username / sasl_password: only letters, digits and "
                             "._-+=/ (they are written into the broker's JAAS line)")
        return user, pw

    def _sasl_props(self) -> dict[str, str]:
        s = self.stack
        user, pw = self.admin_credentials()
        return {
            "listeners": f"SASL_PLAINTEXT://{s.host}:{s.kafka_port},"
                         f"CONTROLLER://{s.host}:{s.kafka_controller_port}",
            "advertised.listeners": f"SASL_PLAINTEXT://{s.host}:{s.kafka_port}",
            "inter.broker.listener.name": "SASL_PLAINTEXT",
            "listener.security.protocol.map": "SASL_PLAINTEXT:SASL_PLAINTEXT,"
                                              "CONTROLLER:PLAINTEXT",
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
            "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{user}" password="{pw}";',
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            # The controller listener stays PLAINTEXT on loopback (KRaft's controller cannot
            # use SCRAM, whose users live in the metadata it serves); its principal is
            # ANONYMOUS and must be a super user. Clients never reach it: they connect to the
            # SASL listener, where ANONYMOUS does not exist.
            "super.users": f"User:{user};User:ANONYMOUS",
            "allow.everyone.if.no.acl.found": "false",
        }

    def write_config(self) -> None:
        s = self.stack
        self.dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{s.host}:{s.kafka_controller_port}",
            "listeners": f"PLAINTEXT://{s.host}:{s.kafka_port},"
                         f"CONTROLLER://{s.host}:{s.kafka_controller_port}",
            "advertised.listeners": f"PLAINTEXT://{s.host}:{s.kafka_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "12",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "12",
            "min.insync.replicas": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Faust creates its own changelog/repartition topics; ours come from topics.toml.
            "auto.create.topics.enable": "true",
            "delete.topic.enable": "true",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "2",
            "log.retention.check.interval.ms": "300000",
            "unclean.leader.election.enable": "false",
        }
        if s.kafka_sasl:
            props.update(self._sasl_props())
        # The JAAS line holds the super user's password: readable by this user only.
        fd = os.open(self.properties_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("# written by sohoa (infra/kafka.py); edits are overwritten on every start\n"
                     + "".join(f"{k}={v}\n" for k, v in props.items()))
        quiet = "".join(f"log4j.logger.{name}=WARN\n" for name in _QUIET_LOGGERS)
        self.log4j_path.write_text(
            "log4j.rootLogger=INFO, file\n"
            "log4j.appender.file=org.apache.log4j.RollingFileAppender\n"
            f"log4j.appender.file.File={self.server_log}\n"
            "log4j.appender.file.MaxFileSize=20MB\n"
            "log4j.appender.file.MaxBackupIndex=3\n"
            "log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
            + quiet
        )

    def _java(self, libs: Path, *args: str, heap: str = "256m", xms: str = "64m") -> list[str]:
        return [java_bin(), f"-Xmx{heap}", f"-Xms{xms}", "-XX:+UseSerialGC",
                f"-Dlog4j.configuration=file:{self.log4j_path}", "-cp", f"{libs}/*", *args]

    def format_storage(self, libs: Path) -> None:
        """Format the KRaft log dir once; a later start reuses the data."""
        if (self.data_dir / "meta.properties").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        res = subprocess.run(self._java(libs, "kafka.tools.StorageTool", "random-uuid"),
                             capture_output=True, text=True, timeout=120)
        cluster_id = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
        if res.returncode != 0 or not cluster_id:
            raise StackError(f"Kafka StorageTool random-uuid failed: {res.stderr[-2000:]}")
        scram: list[str] = []
        if self.stack.kafka_sasl:  # the super user must exist before the broker can start
            user, pw = self.admin_credentials()
            scram = ["--add-scram", f'SCRAM-SHA-512=[name="{user}",password="{pw}"]']
        res = subprocess.run(
            self._java(libs, "kafka.tools.StorageTool", "format", "-t", cluster_id,
                       "-c", str(self.properties_path), *scram),
            capture_output=True, text=True, timeout=120,
        )
        if res.returncode != 0:
            raise StackError(
                f"Không định dạng được thư mục dữ liệu Kafka {self.data_dir}. "
                f"(StorageTool format failed: {res.stdout[-1000:]} {res.stderr[-2000:]})"
            )
        log.info("kafka storage formatted", extra={"dir": str(self.data_dir),
                                                   "cluster_id": cluster_id})

    def start(self, wait: bool = True) -> None:
        if self.running():
            log.info("kafka already running", extra={"pid": self.pid})
            if wait:
                self.wait_ready()
            return
        s = self.stack
        for port in (s.kafka_port, s.kafka_controller_port):
            if port_open(s.host, port):
                raise StackError(
                    f"Cổng {s.host}:{port} đang bị chương trình khác dùng, Kafka không khởi động "
                    f"được. Dừng chương trình đó (xem: ss -ltnp | grep {port}) hoặc đổi "
                    f"stack.kafka_port / stack.kafka_controller_port. (port {port} busy)"
                )
        libs = ensure_libs(s)
        self.write_config()
        self.format_storage(libs)
        argv = self._java(libs, "kafka.Kafka", str(self.properties_path),
                          heap=s.kafka_heap, xms="128m")
        pid = spawn_detached(argv, log_path=self.out_path, pid_path=self.pid_path, cwd=self.dir)
        log.info("kafka started", extra={"pid": pid, "bootstrap": self.bootstrap})
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Block until the broker answers a metadata request."""
        from kafka.errors import KafkaError

        timeout_s = self.stack.start_timeout_s if timeout_s is None else timeout_s
        try:
            poll_ready(self._answers, exited=self._exited, timeout_s=timeout_s, interval_s=0.3,
                       retry_on=(KafkaError, OSError))
        except NotReady as exc:
            raise StackError(self._failure(
                "Kafka đã dừng ngay khi khởi động" if exc.exited else
                f"Kafka không trả lời sau {timeout_s:.0f} giây ({exc.last or 'port closed'})"
            )) from None

    def _exited(self) -> bool:
        return read_pid(self.pid_path) is not None and not self.running()

    def _answers(self) -> bool:
        from sohoa.kafka_clients import make_admin

        if not port_open(self.stack.host, self.stack.kafka_port):
            return False
        admin = make_admin(self.kafka.model_copy(update={"bootstrap": self.bootstrap}),
                           request_timeout_ms=5000)
        try:
            admin.list_topics()
            return True
        finally:
            admin.close()

    def _failure(self, headline: str) -> str:
        return (
            f"{headline}.\n--- {self.out_path} ---\n{log_tail(self.out_path)}\n"
            f"--- {self.server_log} ---\n{log_tail(self.server_log)}\n"
            "Cách xử lý: kiểm tra cổng bị chiếm (ss -ltnp), Java đã cài (java -version), "
            f"dung lượng đĩa; xem đủ nhật ký ở {self.logs_dir}. "
            "(Kafka failed to start: check the ports, java and the logs above)"
        )

    def stop(self, timeout_s: float = 60.0) -> bool:
        """Clean shutdown (SIGTERM), SIGKILL after ``timeout_s``. False if nothing ran."""
        pid = self.pid
        if pid is None:
            self.pid_path.unlink(missing_ok=True)
            return False
        self.resume()  # a stopped (SIGSTOP) JVM cannot handle SIGTERM
        clean = terminate(pid, timeout_s)
        self.pid_path.unlink(missing_ok=True)
        log.info("kafka stopped", extra={"pid": pid, "clean": clean})
        return True

    def kill(self) -> None:
        from infra.procs import kill_now

        kill_now(self.pid, self.pid_path)

    def pause(self) -> None:
        import signal

        from infra.procs import signal_group

        if (pid := self.pid) is not None:
            signal_group(pid, signal.SIGSTOP)

    def resume(self) -> None:
        import signal

        from infra.procs import signal_group

        if (pid := self.pid) is not None:
            signal_group(pid, signal.SIGCONT)
