"""The spine, with real parts: a page dropped into a hot folder travels through the real agent,
a real Kafka broker, a real Faust worker and the real consumer into PostgreSQL, `sohoa status`
and the consumer's /metrics."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from infra.stack import run_env
from sohoa.events import parse_event
from sohoa.kafka_clients import make_consumer
from sohoa.samples import PageSpec, write_page
from tests.support.procs import SohoaProcess, run_sohoa, wait_for

pytestmark = pytest.mark.integration


def _component_env(stack, tmp_path: Path, site: str) -> dict[str, str]:
    topics = stack.new_topics()
    db = stack.database_env("e2e")
    hot = tmp_path / "hot"
    hot.mkdir()
    return {
        **stack.env,
        **run_env("e2e", tmp_path),
        "SOHOA_LOGGING__JSON": "true",
        "SOHOA_TOPICS__SITE_EVENTS": topics.site_events,
        "SOHOA_TOPICS__FILE_EVENTS": topics.file_events,
        "SOHOA_TOPICS__DEAD_LETTERS": topics.dead_letters,
        **db,
        "SOHOA_WATCHER__SITE_ID": site,
        "SOHOA_WATCHER__ROOTS": json.dumps([str(hot)]),
        "SOHOA_WATCHER__OUTBOX_PATH": str(tmp_path / "outbox.sqlite3"),
        "SOHOA_WATCHER__STABILITY_WINDOW_S": "0.5",
        "SOHOA_WATCHER__POLL_INTERVAL_S": "0.5",
        "SOHOA_WATCHER__HEARTBEAT_INTERVAL_S": "2",
    }


def _status(env: dict[str, str]) -> dict:
    out = run_sohoa(["status", "--json"], env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _metrics(port: str) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return resp.read().decode()
    except OSError:
        return ""


def _file_events(stack, topic: str, timeout_ms: int = 1000) -> list:
    consumer = make_consumer(stack.settings.kafka, topic, group_id=None,
                             consumer_timeout_ms=timeout_ms)
    try:
        return [parse_event(m.value) for m in consumer]
    finally:
        consumer.close()


def test_one_page_goes_from_hot_folder_to_postgres_and_metrics(stack, tmp_path: Path) -> None:
    site = "xa-tan-phu"
    env = _component_env(stack, tmp_path, site)
    migrated = run_sohoa(["db", "migrate"], env)
    assert migrated.returncode == 0, migrated.stderr

    logs = tmp_path / "logs"
    procs = (
        SohoaProcess(["consume"], env, logs / "consume.log"),
        SohoaProcess(["streams", "--role", "assembly"], env, logs / "streams.log"),
        SohoaProcess(["watch"], env, logs / "watch.log"),
    )
    try:
        folder = Path(json.loads(env["SOHOA_WATCHER__ROOTS"])[0]) / "UBND" / "HS-2024-001"
        write_page(folder / "001.png", PageSpec(dpi=200))

        def page_counted():
            st = _status(env)
            sites = [s for s in st["sites"] if s["site_id"] == site and s["pages"] == 1]
            files = [f for f in st["files"]
                     if f["site_id"] == site and f["file_code"] == "HS-2024-001"]
            return (sites, files) if sites and files else None

        sites, files = wait_for(page_counted, 180, "the page in `sohoa status --json`", procs)
        assert sites[0]["files"] == 1
        assert files[0]["pages"] == 1
        assert files[0]["state"] == "scanning"

        metrics_line = f'sohoa_site_pages_scanned{{site="{site}"}} 1.0'
        wait_for(lambda: metrics_line in _metrics(env["SOHOA_CONSUMER__METRICS_PORT"]), 60,
                 f"'{metrics_line}' on the consumer's /metrics", procs)

        # The closing marker makes the Faust worker assemble the file from its table.
        (folder / "DONE").touch()

        def assembled():
            evs = _file_events(stack, env["SOHOA_TOPICS__FILE_EVENTS"])
            return [e for e in evs if e.NAME == "FileAssembled" and e.file_code == "HS-2024-001"]

        found = wait_for(assembled, 120, "FileAssembled from the Faust worker", procs,
                         interval=1.0)
        assert [p.number for p in found[0].pages] == [1]
        assert found[0].site_id == site

        def file_assembled_in_db():
            st = _status(env)
            return [f for f in st["files"] if f["file_code"] == "HS-2024-001"
                    and f["state"] in {"assembled", "checked", "accepted"}]

        wait_for(file_assembled_in_db, 60, "the file's assembled state in PostgreSQL", procs)
    finally:
        for p in reversed(procs):
            p.stop()
