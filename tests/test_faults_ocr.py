"""Faults of the OCR worker (`sohoa streams --role ocr`) during a real OCR run fed by the real
agent — kill -9 and restart; the OCR output's disk full, then freed — after which every file
has exactly one output PDF and exactly one verdict (real Kafka, PostgreSQL, Tesseract)."""

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

from sohoa.events import OcrCompleted, OcrFailed
from sohoa.samples import PageSpec, write_page
from tests.ocr_helpers import assert_pdfa
from tests.pages import text_lines
from tests.procs import wait_for
from tests.test_faults import PAUSE_S, Spine, read_events

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.ocr]

FILES = int(os.environ.get("SOHOA_FAULT_OCR_FILES", "3"))
PAGES_PER_FILE = 2


def write_files(spine: Spine) -> list[str]:
    """FILES files of PAGES_PER_FILE text pages each, written as a scanner does, then closed."""
    codes = [f"HS-{k:05d}" for k in range(FILES)]
    for k, code in enumerate(codes):
        folder = spine.root / "UBND" / code
        for n in range(1, PAGES_PER_FILE + 1):
            spec = PageSpec(seed=k * 10 + n, text=text_lines(8, k * 3 + n))
            tmp = write_page(folder / f".{n}.tmp.png", spec)
            os.replace(tmp, folder / f"{n:04d}.png")
    time.sleep(2)  # pages stable before the files are closed
    for code in codes:
        (spine.root / "UBND" / code / "DONE").touch()
    return codes


def assert_one_output_each(spine: Spine, stack, output_dir: Path, codes: list[str]) -> None:
    outputs = []
    for code in codes:
        pdfs = sorted(output_dir.rglob(f"{code}/*.pdf"))
        assert len(pdfs) == 1, (code, pdfs)
        outputs += pdfs
    assert_pdfa(outputs)
    done = [e for e in read_events(stack, spine.env["SOHOA_TOPICS__FILE_EVENTS"],
                                   {"OcrCompleted"}) if isinstance(e, OcrCompleted)]
    ids = {c: {e.event_id for e in done if e.file_code == c} for c in codes}
    assert all(len(v) == 1 for v in ids.values()), f"OcrCompleted per file: {ids}"


def test_kill9_ocr_worker_during_ocr(stack, tmp_path: Path) -> None:
    spine = Spine(stack, tmp_path, "phuong-ocr-kill", ocr=True, SOHOA_OCR__BACKOFF_S="1")
    spine.start()
    try:
        codes = write_files(spine)
        work = tmp_path / "faust" / spine.env["SOHOA_STREAMS__OCR_APP_ID"] / "work"
        wait_for(lambda: work.exists() and any(work.iterdir()), 240, "an OCR job running",
                 spine.alive_procs(), interval=0.2)
        time.sleep(1.5)  # inside the engine process, between pages
        assert spine.pg_verdict_files() < FILES, "every verdict was in before the kill"
        spine.kill9("ocr")
        time.sleep(PAUSE_S)
        spine.start("ocr")
        pages = FILES * PAGES_PER_FILE
        spine.files_expected = lambda count=pages: set(codes)  # type: ignore[method-assign]
        spine.wait_settled(pages=pages, timeout=480)
        spine.assert_exact(pages=pages)
        assert_one_output_each(spine, stack, tmp_path / "ocr", codes)
    finally:
        spine.stop_all()


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
            pages = FILES * PAGES_PER_FILE
            spine.files_expected = lambda count=pages: set(codes)  # type: ignore[method-assign]
            spine.wait_settled(pages=pages, timeout=480)
            spine.assert_exact(pages=pages)  # one verdict per file, no dead letters
            assert_one_output_each(spine, stack, mnt, codes)
            failed = read_events(stack, spine.env["SOHOA_TOPICS__FILE_EVENTS"], {"OcrFailed"})
            assert not [e for e in failed if isinstance(e, OcrFailed)], failed
            assert not list(mnt.rglob(".*.tmp")), "temp outputs left behind"
        finally:
            spine.stop_all()
