"""Bad input: each gets a log line, a counter by reason and a DeadLetter; the agent carries on
and never touches an original."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from producers.agent import Agent
from producers.metrics import AgentMetrics
from sohoa.config import Settings, WatcherConfig
from sohoa.events import DeadLetter
from tests.support.typed_events import each
from tests.support.watch_helpers import (
    BAD_EXPECTED,
    MAX_BYTES_FOR_BAD,
    agent_env,
    hot,
    make_bad_inputs,
    of_type,
    read_topic,
    snapshot,
)

# Root reads anything; without these two capabilities it honours file modes like an operator's
# account does, so a chmod 000 page really is unreadable to the agent.
NO_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]


def _in_process(tmp_path: Path, root: Path) -> tuple[Agent, AgentMetrics]:
    cfg = WatcherConfig(site_id="xa-bad", roots=[root], stability_window_s=0.2,
                        outbox_path=tmp_path / "ob" / "outbox.sqlite3",
                        max_file_bytes=MAX_BYTES_FOR_BAD, incomplete_grace_s=0)
    metrics = AgentMetrics("xa-bad")
    agent = Agent(Settings(watcher=cfg), metrics)
    return agent, metrics


def test_every_bad_input_is_counted_by_reason_and_litter_is_ignored(tmp_path: Path) -> None:
    root = tmp_path / "hot"
    make_bad_inputs(root, tmp_path / "elsewhere")
    agent, metrics = _in_process(tmp_path, root)
    agent.run(once=True)
    unreadable_possible = os.geteuid() != 0  # root reads a chmod 000 file
    for reason, paths in BAD_EXPECTED.items():
        if reason == "unreadable" and not unreadable_possible:
            continue
        assert metrics.rejected_count(reason) == len(paths), reason
    rows = dict(agent.ob.db.execute("SELECT path, state FROM pages"))
    for rel in ("F/HS-1/Thumbs.db", "F/HS-1/.DS_Store", "F/HS-1/desktop.ini"):
        assert rel not in rows
    assert rows["F/HS-1/001.png"] == "sent" and rows["F/HS-1/002.PNG"] == "sent"
    # The symlinked folder was not followed: nothing from outside the root is known.
    assert not [p for p in rows if p.startswith("F/HS-LINK/")]
    dead = [json.loads(v) for (v,) in agent.ob.db.execute(
        "SELECT value FROM outbox WHERE kind = 'dead_letters'")]
    assert all(d["source"] == "watcher" and d["site_id"] == "xa-bad" for d in dead)
    # A second pass reports nothing twice.
    before = len(dead)
    agent2, metrics2 = _in_process(tmp_path, root)
    agent.close()
    agent2.run(once=True)
    n = agent2.ob.db.execute("SELECT count(*) FROM outbox WHERE kind='dead_letters'").fetchone()
    assert n[0] == before
    assert sum(metrics2.rejected_count(r) for r in BAD_EXPECTED) == 0
    agent2.close()


@pytest.mark.integration
def test_bad_inputs_reach_the_centre_and_originals_are_untouched(stack, tmp_path: Path) -> None:
    env = agent_env(stack, tmp_path, site="xa-bad",
                    SOHOA_WATCHER__MAX_FILE_BYTES=str(MAX_BYTES_FOR_BAD),
                    SOHOA_WATCHER__INCOMPLETE_GRACE_S="0")
    root = hot(env)
    root.rmdir()
    good = make_bad_inputs(root, tmp_path / "elsewhere")
    before = snapshot(root)
    (tmp_path / "outbox").mkdir()
    r = subprocess.run([*NO_DAC, sys.executable, "-m", "sohoa.cli", "watch", "--once"],
                       env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert snapshot(root) == before, "an original was changed, moved or deleted"

    dead = each(read_topic(stack, env["SOHOA_TOPICS__DEAD_LETTERS"], 1500), DeadLetter)
    got: dict[str, list[str]] = {}
    for d in dead:
        got.setdefault(d.reason.split(":")[0], []).append(json.loads(d.payload)["path"])
    assert {k: sorted(v) for k, v in got.items()} == {
        k: sorted(v) for k, v in BAD_EXPECTED.items()}
    # One clear log line per bad input, with the path and the reason.
    lines = [json.loads(x) for x in r.stderr.splitlines() if x.startswith("{")]
    rejected = [x for x in lines if x.get("event") == "file rejected"]
    assert len(rejected) == sum(len(v) for v in BAD_EXPECTED.values())
    assert all(x["path"].startswith(str(root)) and x["reason"] for x in rejected)
    assert not [x for x in lines if "Thumbs.db" in json.dumps(x) or "DS_Store" in json.dumps(x)]
    # The agent carried on: the good pages are on Kafka.
    scanned = of_type(read_topic(stack, env["SOHOA_TOPICS__SITE_EVENTS"], 1000), "PageScanned")
    assert sorted(e.path for e in scanned) == sorted(good)
