"""What every benchmark shares: printing and saving its result, and tearing down what it ran."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path


def emit(result: dict, json_path: Path | None) -> dict:
    """Print the result as JSON and, for `python -m bench`, also write it to ``json_path``."""
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    if json_path:
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
        shutil.rmtree(state, ignore_errors=True)


def pages_in_postgres(dsn: str) -> int:
    """Current pages in the progress store, read directly (the /metrics gauges are cached)."""
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            return conn.execute("SELECT count(*) FROM pages WHERE NOT removed").fetchone()[0]
    except psycopg.OperationalError:
        return 0
