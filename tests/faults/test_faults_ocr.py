"""Faults of the QC/OCR/verdict worker (`sohoa streams --role ocr`) during a real OCR run fed
by the real agent — kill -9 past its group's session and restart; the OCR output's disk full,
then freed — after which every file has exactly one output PDF, made once, and exactly one
verdict, and every count equals the pages on disk (real Kafka, PostgreSQL, Tesseract)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sohoa.events import OcrFailed
from sohoa.samples import PageSpec, write_page
from tests.support.pages import text_lines
from tests.support.procs import wait_for
from tests.support.spine import Spine, read_events
from tests.support.spine_faults import kill_and_restart, spine_fault

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.ocr]

FILES = int(os.environ.get("SOHOA_FAULT_OCR_FILES", "4"))
PAGES_PER_FILE = 20


def write_files(spine: Spine, files: int = 3, per_file: int = 2) -> list[str]:
    """Files of A4 text pages, written as a scanner does, then closed."""
    codes = [f"HS-{k:05d}" for k in range(files)]
    for k, code in enumerate(codes):
        folder = spine.root / "UBND" / code
        for n in range(1, per_file + 1):
            spec = PageSpec(seed=k * 10 + n, text=text_lines(8, k * 3 + n))
            tmp = write_page(folder / f".{n}.tmp.png", spec)
            os.replace(tmp, folder / f"{n:04d}.png")
    time.sleep(2)  # pages stable before the files are closed
    for code in codes:
        (spine.root / "UBND" / code / "DONE").touch()
    return codes


def _pdfs(spine: Spine) -> dict[Path, tuple[int, int]]:
    """Every OCR output PDF now, with its (inode, mtime): a PDF made again changes them."""
    out = Path(spine.env["SOHOA_OCR__OUTPUT_DIR"])
    return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*.pdf")}


_FIRST_SEEN: dict[Path, float] = {}


def _ocr_running(spine: Spine, for_s: float = 0.0) -> bool:
    """An OCR job has been running for ``for_s`` seconds: its scratch folder was first seen
    that long ago (its ctime moves with every page the engine writes into it)."""
    work = spine.tmp / "faust" / spine.env["SOHOA_STREAMS__OCR_APP_ID"] / "work"
    now = time.monotonic()
    try:
        jobs = list(work.iterdir())
    except OSError:
        return False
    return any(now - _FIRST_SEEN.setdefault(job, now) >= for_s for job in jobs)


class CommittedPastUnfinishedFile(AssertionError):
    """The OCR app committed its consumer offset past a FileAssembled it had not finished."""


def unfinished_but_committed(spine: Spine) -> list[str]:
    """FileAssembled records of files with no FileVerdict yet whose partition the OCR app's
    consumer group has committed past: a restarted worker starts after them, so those files
    would never get OCR or a verdict. Read from Kafka once the worker is dead."""
    from kafka import TopicPartition

    from sohoa.kafka_clients import make_admin, make_consumer

    topic = spine.env["SOHOA_TOPICS__FILE_EVENTS"]
    admin = make_admin(spine.stack.settings.kafka)
    try:
        group = spine.env["SOHOA_STREAMS__OCR_APP_ID"]
        committed = {tp.partition: meta.offset for tp, meta in
                     admin.list_group_offsets(group).get(group, {}).items()
                     if tp.topic == topic}
    finally:
        admin.close()
    consumer = make_consumer(spine.stack.settings.kafka, group_id=None,
                             consumer_timeout_ms=3000)
    try:
        consumer.assign([TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)])
        consumer.seek_to_beginning()
        records = [(m.partition, m.offset, json.loads(m.value)) for m in consumer]
    finally:
        consumer.close()
    name = lambda r: r[2].get("schema", {}).get("name")  # noqa: E731
    done = {r[2].get("file_code") for r in records if name(r) == "FileVerdict"}
    return [f"{r[2]['file_code']} (partition {r[0]}, offset {r[1]}, committed "
            f"{committed[r[0]]})" for r in records
            if name(r) == "FileAssembled" and r[2].get("file_code") not in done
            and committed.get(r[0], -1) > r[1]]


# With two actors the OCR app acks out of order: while one actor OCRs a file, the other acks
# that file's own PageChecked records (same key, later offsets of the same partition).
# faust-streaming 0.15.3 alone then commits past the unfinished FileAssembled
# (streams/commits.py says how); the check at the kill fails the test if that happens again.
def test_kill9_ocr_worker_mid_run(stack, tmp_path: Path) -> None:
    """Small text pages that pass QC, so OCR really runs; the kill lands while a file is in
    OCR, after some files got their verdict and PDF and before the others. Files close one at
    a time, as a station finishes them, and the kill waits until the file in OCR has been in
    it for a few of the worker's commit intervals: the window in which a crash loses work if
    the worker's commits run ahead of it."""
    stamps: dict[Path, tuple[int, int]] = {}
    commit_s = 0.5  # SOHOA_STREAMS__COMMIT_INTERVAL_S of the spine

    def at_kill(spine: Spine) -> None:
        assert float(spine.env["SOHOA_STREAMS__COMMIT_INTERVAL_S"]) == commit_s
        stamps.update(_pdfs(spine))
        verdicts = spine.pg_verdict_files()
        spine.note(f"at the kill: {len(stamps)} PDFs on disk, {verdicts} verdicts")
        assert 1 <= len(stamps) < FILES, f"PDFs at the kill: {sorted(stamps)}"
        lost = unfinished_but_committed(spine)
        if lost:
            spine.note(f"committed past unfinished files: {lost}")
            raise CommittedPastUnfinishedFile(
                f"the OCR app's committed offsets pass unfinished files, which a restart "
                f"will never process: {lost}")

    spine_fault(stack, tmp_path, "phuong-ocr-kill", kill_and_restart("ocr", at_kill),
                measure="verdicts", pages=FILES * PAGES_PER_FILE, per_file=PAGES_PER_FILE,
                kind="text", delay=0.3, ready=lambda spine: _ocr_running(spine, 3 * commit_s),
                settle_timeout=600,
                after=lambda spine: spine.assert_ocr_once(stamps),
                ocr=True, SOHOA_OCR__BACKOFF_S="1")


def disk_full_errors(spine: Spine) -> list[dict]:
    """The OCR worker's structured 'disk full' error lines so far (JSON logs)."""
    out = []
    for line in spine.procs["ocr"].log.read_text(encoding="utf-8", errors="replace").splitlines():
        if "disk full" not in line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("level") == "error":
            out.append(rec)
    return out


@contextlib.contextmanager
def full_tmpfs(mnt: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``mnt``, filled to the last block by a ballast file (yielded:
    unlink it to free the space); unmounted afterwards."""
    mnt.mkdir()
    cmd = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"no tmpfs mount possible here: {out.stderr.strip()}")
    try:
        ballast = mnt / "ballast"
        with ballast.open("wb") as fh:
            os.posix_fallocate(fh.fileno(), 0, shutil.disk_usage(mnt).free)
        assert shutil.disk_usage(mnt).free < 65536, "the tmpfs is not full"
        yield ballast
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_ocr_output_disk_full_then_freed(stack, tmp_path: Path) -> None:
    """The OCR output's file system is full while the files arrive: the worker says so (an
    ERROR line per attempt), keeps waiting past its retry budget without failing any file,
    and once space is freed every file gets exactly one PDF, one OcrCompleted, one verdict."""
    with full_tmpfs(tmp_path / "ocr-fs", "4m") as ballast:
        mnt = ballast.parent
        retries = 1
        spine = Spine(stack, tmp_path, "phuong-ocr-full", ocr=True, SOHOA_OCR__BACKOFF_S="1",
                      SOHOA_OCR__RETRIES=str(retries), SOHOA_OCR__OUTPUT_DIR=str(mnt))
        spine.start()
        try:
            codes = write_files(spine)
            # More disk-full attempts than the retry budget allows: a plain transient error
            # would have become OcrFailed by now.
            wait_for(lambda: len(disk_full_errors(spine)) > retries + 1, 300,
                     "the OCR worker reporting the full disk", spine.alive_procs(), interval=1)
            err = disk_full_errors(spine)[-1]
            spine.note(f"ocr worker while full: {err}")
            assert err.get("output_dir") == str(mnt) and err.get("file_code") in codes, err
            assert "No space left on device" in err.get("reason", ""), err
            assert spine.pg_verdict_files() == 0, "a file got its verdict with no OCR output"
            failed = read_events(stack, spine.env["SOHOA_TOPICS__FILE_EVENTS"], {"OcrFailed"})
            assert not [e for e in failed if isinstance(e, OcrFailed)], failed
            ballast.unlink()
            spine.note("ballast removed")
            pages = len(codes) * 2
            spine.wait_settled(pages=pages, timeout=480)
            spine.assert_restarts()
            spine.assert_exact(pages=pages)  # one verdict per file, no dead letters
            spine.assert_ocr_once({})
            failed = read_events(stack, spine.env["SOHOA_TOPICS__FILE_EVENTS"], {"OcrFailed"})
            assert not [e for e in failed if isinstance(e, OcrFailed)], failed
            assert not list(mnt.rglob(".*.tmp")), "temp outputs left behind"
        finally:
            spine.stop_all()
