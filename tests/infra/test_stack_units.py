"""Unit checks of the local-stack helpers (no services started)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.kafka import KafkaNode, ensure_libs
from infra.postgres import FALLBACK_ROOT, PostgresNode
from infra.procs import (
    NotReady,
    StackError,
    free_port,
    poll_ready,
    running_pid,
    spawn_detached,
    terminate,
)
from sohoa.config import StackConfig


def test_stale_pid_file_of_another_program_is_not_ours(tmp_path):
    pid_file = tmp_path / "kafka.pid"
    pid_file.write_text(f"{os.getpid()}\n")  # alive, but it is pytest, not a broker
    assert running_pid(pid_file, "kafka.Kafka") is None
    # "pytest" is in our command line whether run as `pytest` or `python -m pytest`.
    assert running_pid(pid_file, "pytest") == os.getpid()
    pid_file.write_text("not a pid\n")
    assert running_pid(pid_file, "") is None


def test_detached_process_group_is_stopped_with_its_children(tmp_path):
    pid_file = tmp_path / "run" / "x.pid"
    # A leader that ignores SIGTERM and a child: both must be gone after terminate().
    script = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']);"
              "time.sleep(600)")
    pid = spawn_detached([sys.executable, "-c", script], log_path=tmp_path / "x.log",
                         pid_path=pid_file)
    assert running_pid(pid_file, "no such marker") == pid  # our own child: no marker needed
    import time
    time.sleep(0.5)
    children = subprocess.run(["pgrep", "-g", str(pid)], capture_output=True, text=True)
    assert len(children.stdout.split()) == 2
    assert terminate(pid, timeout_s=1.0) is False  # needed SIGKILL
    deadline = time.monotonic() + 10
    while True:  # the killed child is reaped by init a moment later
        left = subprocess.run(["pgrep", "-g", str(pid)], capture_output=True, text=True)
        if not left.stdout.split() or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert left.stdout.split() == []


def test_kafka_home_without_jars_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("KAFKA_HOME", str(tmp_path))
    with pytest.raises(StackError, match="KAFKA_HOME"):
        ensure_libs(StackConfig())


def test_kafka_config_is_one_kraft_node_on_the_configured_host(tmp_path):
    node = KafkaNode(StackConfig(state_dir=tmp_path, kafka_port=1234,
                                 kafka_controller_port=1235))
    node.write_config()
    props = dict(line.split("=", 1) for line in node.properties_path.read_text().splitlines()
                 if line and not line.startswith("#"))
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:1235"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:1234"
    assert props["log.dirs"] == str(tmp_path.resolve() / "kafka" / "data")
    assert props["auto.create.topics.enable"] == "true"
    assert "kafka-server.log" in node.log4j_path.read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="the fallback only applies when run as root")
def test_postgres_cluster_leaves_a_state_dir_postgres_cannot_reach(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    node = PostgresNode(StackConfig(state_dir=private / "state", postgres_port=free_port()))
    assert FALLBACK_ROOT in node.root.parents
    assert (private / "state" / "pg" / "datadir").read_text().strip() == str(node.root)
    # The choice is recorded: a later run finds the same cluster.
    again = PostgresNode(StackConfig(state_dir=private / "state"))
    assert again.root == node.root

    open_dir = Path("/tmp") / f"sohoa-open-{os.getpid()}"
    try:
        open_dir.mkdir(mode=0o755)
        open_dir.chmod(0o755)
        node = PostgresNode(StackConfig(state_dir=open_dir / "state"))
        assert node.root == open_dir / "state" / "pg"
    finally:
        subprocess.run(["rm", "-rf", str(open_dir)], check=False)


def test_component_without_pid_file_is_still_found_and_stopped(tmp_path):
    from infra.components import Components
    from infra.stack import settings_for_stack
    from sohoa.config import Settings

    settings = settings_for_stack(Settings(), tmp_path)
    state = str(Path(settings.stack.state_dir))
    env = {**os.environ, "SOHOA_STACK__STATE_DIR": state}
    # Same command-line tail and state dir as a real component; no pid file anywhere.
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)",
                             "sohoa.cli", "consume"], env=env, start_new_session=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)",
                              "sohoa.cli", "consume"],
                             env={**env, "SOHOA_STACK__STATE_DIR": "/elsewhere"},
                             start_new_session=True)
    try:
        import time
        time.sleep(0.3)  # let both exec
        comps = Components(settings, None, {})
        assert comps.pid("consume") == proc.pid  # not the one of another state dir
        assert comps.pid_path("consume").read_text().strip() == str(proc.pid)
        assert comps.stop(["consume"]) == {"consume": True}
        assert proc.wait(timeout=10) is not None
        assert other.poll() is None
    finally:
        for p in (proc, other):
            p.kill()
            p.wait()


def test_poll_ready_retries_until_the_probe_answers():
    answers = iter([ConnectionRefusedError("not yet"), False, True])

    def probe() -> bool:
        a = next(answers)
        if isinstance(a, Exception):
            raise a
        return a

    poll_ready(probe, exited=lambda: False, timeout_s=10, interval_s=0.01, retry_on=(OSError,))
    assert next(answers, "drained") == "drained"


def test_poll_ready_gives_up_at_once_when_the_process_died():
    calls = []
    with pytest.raises(NotReady) as info:
        poll_ready(lambda: calls.append(1) or False, exited=lambda: True, timeout_s=60,
                   interval_s=0.01, retry_on=(OSError,))
    assert info.value.exited and calls == []


def test_poll_ready_timeout_keeps_the_last_error_and_other_errors_escape():
    def refused() -> bool:
        raise ConnectionRefusedError("port 1 refused")

    with pytest.raises(NotReady) as info:
        poll_ready(refused, exited=lambda: False, timeout_s=0.05, interval_s=0.01,
                   retry_on=(OSError,))
    assert not info.value.exited and "port 1 refused" in str(info.value.last)
    with pytest.raises(ValueError):
        poll_ready(lambda: int("x") > 0, exited=lambda: False, timeout_s=1, interval_s=0.01,
                   retry_on=(OSError,))
