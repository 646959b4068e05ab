"""Fault injection on the whole spine with real parts (`pytest -m faults`, `make test-faults`).

A real site agent watches a hot folder that a separate writer process fills with tiny valid PNG
pages (closing each file with its DONE marker); a real Faust assembly worker, a real QC/verdict
worker and the real consumer carry them into PostgreSQL (tests/support/spine.py). During the run
one part is hurt — kill -9 of the agent, a Faust worker, the consumer, the Kafka broker or
PostgreSQL, the broker frozen (SIGSTOP, a network partition), the outbox's disk full — for
longer than the timeouts of the clients that meet the fault (tests/support/client_timeouts.py,
read from the clients sohoa builds), then brought back.

Each test proves its fault: it happened (the process group is gone, the port refused or the
process stopped at every check for the whole outage), it was felt (the outbox grew, the
clients logged it, work piled up behind it), part of the work was done before it and part was
left for after it. Then: only the component the test hurt was ever started again, and every
figure of the centre — reconcile, status, the pages table, one verdict per file with its page
total, the files' last assemblies, the daily counts — equals what the writer put on disk.

Size: ``SOHOA_FAULT_PAGES`` pages per run (default 300, so the suite stays reasonable on two
cores). Issue 7 asks for 10,000: ``SOHOA_FAULT_PAGES=10000 make test-faults``.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from infra.procs import port_open
from tests.support.client_timeouts import ClientTimeouts
from tests.support.procs import wait_for
from tests.support.spine import PAGES, PER_FILE, Spine, log_records
from tests.support.spine_faults import kill_and_restart, spine_fault

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def _client_errors(spine: Spine, names: tuple[str, ...], since, until) -> dict[str, int]:
    """Per component: warnings and errors its Kafka client logged within [since, until]. (The
    agent silences its own Kafka client: its outbox shows what it felt.)"""
    def kafka_trouble(r: dict) -> bool:
        return r.get("level") in ("warning", "error") and \
            str(r.get("logger", "")).startswith(("kafka", "aiokafka"))
    return {n: len(log_records(spine.logs(n), since, until, kafka_trouble)) for n in names}


# --- kill -9 of a component ----------------------------------------------------------------

@pytest.mark.parametrize("component", ["watch", "assembly", "consume"])
def test_kill9_component_mid_run(stack, tmp_path: Path, component: str) -> None:
    # The QC/OCR worker's kill runs with OCR on: tests/faults/test_faults_ocr.py.
    measure = "assemblies" if component == "assembly" else "pages"
    spine_fault(stack, tmp_path, f"xa-kill-{component}", kill_and_restart(component),
                measure=measure)


# --- the broker and the database -----------------------------------------------------------

def _kafka_address(stack) -> tuple[str, int]:
    host, port = stack.kafka_bootstrap.rsplit(":", 1)
    return host, int(port)


def test_kill9_kafka_broker_mid_run(stack, tmp_path: Path) -> None:
    host, port = _kafka_address(stack)

    def hurt(spine: Spine, t: ClientTimeouts) -> None:
        unsent = spine.outbox_rows("sent IS NULL")
        spine.note("kill -9 kafka")
        stack.kill_kafka()
        try:
            since, until = spine.outage(t.broker_gone(), lambda: not port_open(host, port),
                                        "kafka killed", spine.pg_pages)
            piled = spine.outbox_rows("sent IS NULL")
        finally:
            spine.note("start kafka")
            stack.start_kafka()
        assert piled > unsent, f"the outbox did not grow while Kafka was gone ({unsent}->{piled})"
        errors = _client_errors(spine, ("consume", "assembly", "ocr"), since, until)
        spine.note(f"kafka client errors during the outage: {errors}")
        assert all(errors.values()), f"a component never met the dead broker: {errors}"
    spine_fault(stack, tmp_path, "xa-kill-kafka", hurt)


def test_postgres_down_mid_run(stack, tmp_path: Path) -> None:
    def hurt(spine: Spine, t: ClientTimeouts) -> None:
        counted = spine.pg_pages()
        spine.note(f"stop postgres (immediate) at {counted} pages counted")
        stack.stop_postgres()
        try:
            t0 = time.time()
            since, until = spine.outage(t.postgres_gone(), lambda: not spine.pg_up(),
                                        "postgres stopped")
            on_kafka = spine.outbox_rows("sent BETWEEN ? AND ?", t0, time.time())
        finally:
            spine.note("start postgres")
            stack.start_postgres()
        # PostgreSQL refused every connection meanwhile, so what reached Kafka during the
        # outage was counted after it; what was counted before is `counted`.
        spine.progress_after_fault = counted
        assert on_kafka > 0, "no page reached Kafka while PostgreSQL was down"
        lost = log_records(spine.logs("consume"), since, until,
                           lambda r: r.get("logger", "").startswith("consumers")
                           and r.get("level") == "warning" and "postgres" in r.get("event", ""))
        spine.note(f"consumer while postgres was down: {len(lost)} warnings, "
                   f"{on_kafka} pages reached Kafka")
        assert lost, "the consumer never noticed PostgreSQL was gone"
    spine_fault(stack, tmp_path, "xa-pg-down", hurt)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def test_broker_partition_sigstop(stack, tmp_path: Path) -> None:
    def hurt(spine: Spine, t: ClientTimeouts) -> None:
        pid = stack.local.kafka.pid
        assert pid is not None
        unsent = spine.outbox_rows("sent IS NULL")
        spine.note("SIGSTOP kafka (partition)")
        stack.pause_kafka()
        try:
            wait_for(lambda: _state(pid) == "T", 10, "the broker stopped")
            since, until = spine.outage(t.broker_silent(), lambda: _state(pid) == "T",
                                        "kafka frozen", spine.pg_pages)
            piled = spine.outbox_rows("sent IS NULL")
        finally:
            spine.note("SIGCONT kafka")
            stack.resume_kafka()
        assert piled > unsent, f"the outbox did not grow while Kafka was frozen ({unsent}->{piled})"
        errors = _client_errors(spine, ("consume", "assembly", "ocr"), since, until)
        spine.note(f"kafka client errors during the partition: {errors}")
        assert all(errors.values()), f"a component never felt the frozen broker: {errors}"
    spine_fault(stack, tmp_path, "xa-partition", hurt)


def test_outbox_disk_full(stack, tmp_path: Path) -> None:
    """The outbox's file system fills up mid-run; once space is freed nothing is lost."""
    mnt = tmp_path / "outbox-fs"
    mnt.mkdir()
    # 16 MiB, not 2: the SQLite outbox and its WAL pass 2 MiB within a few hundred pages, so a
    # 2 MiB disk is full before the fault; the ballast file below fills the rest on cue.
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the outbox here: {mounted.stderr.strip()}")
    ballast = mnt / "ballast"
    try:
        def hurt(spine: Spine, t: ClientTimeouts) -> None:
            try:
                with ballast.open("wb") as fh:
                    while True:
                        fh.write(b"\0" * 65536)
                        fh.flush()
            except OSError:
                pass  # ENOSPC: the file system is full, which is the point
            free = shutil.disk_usage(mnt).free
            spine.note(f"outbox disk full ({free} bytes free)")
            assert free < 65536, "the outbox's disk is not full"
            before = spine.pg_pages()
            # Past the agent's send block: the sender keeps acks it cannot record in memory
            # meanwhile, and the agent's write retry (1, 2, 4, 8 s) tries several times.
            since, until = spine.outage(t.agent_block_s + 5, lambda: shutil.disk_usage(
                mnt).free < 65536, "outbox disk full", spine.pg_pages)
            written = sum(spine.disk_pages().values())
            counted = spine.progress_after_fault or 0
            spine.note(f"agent alive while full: {spine.procs['watch'].alive()}; "
                       f"pages counted {before} -> {counted}, {written} on disk")
            assert written > counted, "no page arrived while the disk was full"
            full = log_records(spine.logs("watch"), since, until,
                               lambda r: r.get("level") == "error"
                               and "disk is full" in r.get("event", ""))
            assert full, "the agent never reported its full disk"
            ballast.unlink()
            spine.note("ballast removed")
        # Slow scanning, so most pages arrive while the outbox's disk is full.
        spine_fault(stack, tmp_path, "xa-disk-full", hurt, delay=max(0.02, 40 / PAGES),
                     outbox_dir=mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_site_clock_skew_counts_once(stack, tmp_path: Path) -> None:
    """A site whose clock is years off (events far in the future or the past): every page is
    counted once, every file still gets one verdict, nothing goes to dead letters."""
    from datetime import UTC, datetime, timedelta

    from sohoa.events import Event
    from sohoa.samples import tiny_png
    from tests.support.streams_helpers import closed, page_event, send

    spine = Spine(stack, tmp_path, "xa-lech-gio")
    spine.start("consume", "assembly", "ocr")
    try:
        now = datetime.now(UTC)
        skews = {"HS-00000": timedelta(days=3650), "HS-00001": -timedelta(days=3650),
                 "HS-00002": timedelta(hours=9)}
        events: list[Event] = []
        for k, (code, skew) in enumerate(skews.items()):
            for n in range(1, PER_FILE + 1):
                f = spine.root / "UBND" / code / f"{n:04d}.png"
                tiny_png(f, seed=k * 1000 + n)
                ev = page_event(spine.site, code, n, f)
                events.append(ev.model_copy(update={"occurred_at": now + skew}))
            events.append(closed(spine.site, code).model_copy(
                update={"occurred_at": now + skew}))
        send(stack, spine.env["SOHOA_TOPICS__SITE_EVENTS"], events)
        send(stack, spine.env["SOHOA_TOPICS__SITE_EVENTS"], events[:10])  # a re-send too
        pages = PER_FILE * len(skews)
        spine.wait_settled(pages=pages, timeout=240)
        spine.assert_restarts()
        spine.assert_exact(pages=pages)
    finally:
        spine.stop_all()
