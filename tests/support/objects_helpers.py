"""The object-store tests' site: its environment (``objects_env``: site key, uploads on), its
row on `sohoa status` (``site_row``), and the sites the session store has keys for
(``OBJECT_SITES``, read by the ``objects`` fixture)."""

from __future__ import annotations

import json
from pathlib import Path

from infra.stack import run_env
from tests.support.procs import run_sohoa

OBJECT_SITES = ["xa-obj", "xa-khac", "xa-bench"]
SITE = "xa-obj"
MIB = 1024 * 1024


def objects_env(stack, objects, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The agent's and the consumer's environment (as root): site key, uploads on."""
    topics = stack.new_topics()
    hot = tmp_path / "hot"
    hot.mkdir(exist_ok=True)
    return {
        **stack.env,
        **run_env("obj", tmp_path, ocr=False),
        **objects.env(f"site:{SITE}"),
        "SOHOA_LOGGING__JSON": "true",
        "SOHOA_TOPICS__SITE_EVENTS": topics.site_events,
        "SOHOA_TOPICS__FILE_EVENTS": topics.file_events,
        "SOHOA_TOPICS__DEAD_LETTERS": topics.dead_letters,
        **stack.database_env("obj"),
        "SOHOA_WATCHER__SITE_ID": SITE,
        "SOHOA_WATCHER__ROOTS": json.dumps([str(hot)]),
        "SOHOA_WATCHER__OUTBOX_PATH": str(tmp_path / "outbox.sqlite3"),
        "SOHOA_WATCHER__STABILITY_WINDOW_S": "0.5",
        "SOHOA_WATCHER__RECONCILE_INTERVAL_S": "5",
        "SOHOA_WATCHER__HEARTBEAT_INTERVAL_S": "1",
        "SOHOA_UPLOAD__ENABLED": "true",
        "SOHOA_UPLOAD__MULTIPART_THRESHOLD_BYTES": str(MIB),
        "SOHOA_UPLOAD__PART_SIZE_BYTES": str(5 * MIB),
        "SOHOA_UPLOAD__RETRY_MAX_S": "2",
        "SOHOA_STREAMS__QC_ENABLED": "true",
        "SOHOA_STREAMS__SITE_DUPLICATE_CHECK": "false",
        "SOHOA_STREAMS__LATE_PAGE_SETTLE_S": "2",
        "SOHOA_OCR__ENABLED": "false",
        "SOHOA_CONSUMER__GAUGE_CACHE_S": "0",
        **extra,
    }


def status(env: dict[str, str]) -> dict:
    out = run_sohoa(["status", "--json"], env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def site_row(env: dict[str, str]) -> dict:
    return next((s for s in status(env)["sites"] if s["site_id"] == SITE), {})
