"""What every benchmark shares: printing and saving its result, and tearing down what it ran."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def emit(result: dict, json_path: Path | None) -> dict:
    """Print the result as JSON and, for `python -m bench`, also write it to ``json_path``."""
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(text + "\n", encoding="utf-8")
    return result


def teardown(procs: list[subprocess.Popen], stack, state: Path, keep: bool) -> None:
    """Stop the component processes (SIGTERM, then SIGKILL), the throw-away stack, and remove
    its state dir unless ``keep`` (logs for a post-mortem)."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
    stack.stop_services()
    if not keep:
        from infra.postgres import discard_cluster

        discard_cluster(state)
        shutil.rmtree(state, ignore_errors=True)


def pages_in_postgres(dsn: str) -> int:
    """Current pages in the progress store, read directly (the /metrics gauges are cached)."""
    import psycopg

    from consumers.db import scalar

    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            return scalar(conn, "SELECT count(*) FROM pages WHERE NOT removed")
    except psycopg.OperationalError:
        return 0


def start_throwaway_stack(name: str) -> tuple[Path, Any, Any]:
    """Kafka + PostgreSQL on free ports in a new temp state dir, started, topics applied.
    Returns (state dir, settings, LocalStack); stop it with :func:`teardown`."""
    from infra.procs import free_port
    from infra.stack import LocalStack, settings_for_stack
    from sohoa.config import load_config

    state = Path(tempfile.mkdtemp(prefix=f"sohoa-bench-{name}-"))
    # No object store here: bench_upload starts its own on free ports when it needs one.
    settings = settings_for_stack(load_config(), state, kafka_port=free_port(),
                                  kafka_controller_port=free_port(), postgres_port=free_port(),
                                  object_store=False)
    stack = LocalStack(settings)
    print(f"starting a throw-away stack in {state} …", file=sys.stderr)
    stack.start_services(progress=lambda m: print(m, file=sys.stderr))
    try:
        stack.apply_topics()
    except BaseException:
        stack.stop_services()
        raise
    return state, settings, stack


def spine_env(settings: Any, state: Path, tag: str, **extra: str) -> dict[str, str]:
    """Environment for `sohoa consume` / `sohoa streams` on a throw-away stack: this run's own
    Faust app ids and consumer group, free ports, QC and OCR off; the database migrated."""
    from infra.stack import owner_env, run_env, stack_env

    env = {**os.environ, **stack_env(settings, reader=True), **run_env(f"bench-{tag}", state),
           "SOHOA_LOGGING__LEVEL": "WARNING",
           "SOHOA_STREAMS__QC_ENABLED": "false",
           **extra}
    subprocess.run([sys.executable, "-m", "sohoa.cli", "db", "migrate"],
                   env={**env, **owner_env(settings)}, check=True, capture_output=True)
    return env


def start_component(args: list[str], env: dict[str, str], logs: Path,
                    name: str | None = None) -> subprocess.Popen:
    """`sohoa <args>` as its own process, output to ``logs/<name>.log``."""
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / f"{name or args[0]}.log").open("ab") as fh:
        return subprocess.Popen([sys.executable, "-m", "sohoa.cli", *args], env=env,
                                stdout=fh, stderr=subprocess.STDOUT)


def raw_consume(kafka: Any, topic: str, n: int, timeout_ms: int = 10_000,
                **consumer_args: Any) -> tuple[int, float]:
    """Read up to ``n`` records of ``topic`` with a plain kafka-python consumer (no group):
    the raw read rate a stage is compared with. Returns (records read, seconds)."""
    import time

    from sohoa.kafka_clients import make_consumer

    consumer = make_consumer(kafka, topic, group_id=None, consumer_timeout_ms=timeout_ms,
                             **consumer_args)
    t0 = time.perf_counter()
    seen = 0
    for _ in consumer:
        seen += 1
        if seen >= n:
            break
    elapsed = time.perf_counter() - t0
    consumer.close()
    return seen, elapsed

