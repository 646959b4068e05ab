"""The assembly worker killed with kill -9 and started again on its own disk is back at work in
well under a minute (real Kafka, real Faust worker on RocksDB).

The restarted process joins the group under a new member id, and the coordinator holds the
rebalance until the dead member's session expires: with Faust's default session of 60 s every
restart after a crash took a minute, whatever the table held (``streams.session_timeout_s``)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from sohoa.events import FileAssembled
from tests.support.procs import SohoaProcess, wait_for
from tests.support.streams_helpers import closed, fake_page, read_all, send, streams_env

pytestmark = pytest.mark.integration
SITE = "xa-khoi-dong"
FAUST_DEFAULT_SESSION_S = 60.0


def _assembled_codes(stack, topic: str) -> set[str]:
    return {e.file_code for e in read_all(stack, topic) if isinstance(e, FileAssembled)}


def test_restart_after_kill9_does_not_wait_out_the_dead_members_session(
        stack, tmp_path: Path) -> None:
    env = streams_env(stack, tmp_path, SOHOA_STREAMS__STORE="rocksdb")
    site_topic, file_topic = env["SOHOA_TOPICS__SITE_EVENTS"], env["SOHOA_TOPICS__FILE_EVENTS"]

    first = SohoaProcess(["streams", "--role", "assembly"], env, tmp_path / "first.log")
    try:
        send(stack, site_topic, [fake_page(SITE, "HS-1", 1), closed(SITE, "HS-1")])
        # a member of the group, heartbeating, when it dies
        wait_for(lambda: "HS-1" in _assembled_codes(stack, file_topic), 180,
                 "the first file assembled", (first,))
    finally:
        first.kill9()
    assert first.proc.returncode == -signal.SIGKILL   # it really died by kill -9

    send(stack, site_topic, [fake_page(SITE, "HS-2", 1), closed(SITE, "HS-2")])
    t0 = time.monotonic()
    second = SohoaProcess(["streams", "--role", "assembly"], env, tmp_path / "second.log")
    try:
        wait_for(lambda: "HS-2" in _assembled_codes(stack, file_topic), 180,
                 "the file sent while it was down assembled", (second,))
        took = time.monotonic() - t0
    finally:
        assert second.stop() == 0
    print(f"restart after kill -9 to the first file assembled: {took:.1f} s")
    # Start-up itself is a few seconds (up to ~15 under load); waiting out the default
    # session alone would take longer than this bound.
    assert took < FAUST_DEFAULT_SESSION_S - 15, f"{took:.1f} s"
