"""Long-lived OCR engine processes: one file at a time each, Tesseract kept loaded between
files (``streams.ocr.Engines``), so a file costs no interpreter start, no import and no model
load.

Each engine is a ``spawn`` child (the OCR worker runs an event loop and threads, which a fork
would copy half-way). The caller's thread sends it a job and waits for its answer, reading
the progress messages it sends after every page; on timeout the engine is killed (its temp
output removed) and replaced by a fresh one on next use, as is an engine that died. An engine
exits by itself when the worker that started it is gone (kill -9), so a replaced worker never
races an orphan to the same output, and is replaced after ``max_files`` files to bound what
the libraries may keep.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from streams.ocr import OcrJob, OcrResult, failure, temp_name

Progress = Callable[[int, int], None]


def _watch_parent(parent: int) -> None:
    from streams import ocr

    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            for tmp in list(ocr.WRITING):
                tmp.unlink(missing_ok=True)
            os._exit(3)


def _engine_main(conn: Any, threads: int, parent: int) -> None:
    # Before libtesseract loads: OpenMP reads it once.
    os.environ["OMP_THREAD_LIMIT"] = str(threads)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True,
                     name="sohoa-ocr-parent-watch").start()
    from streams.ocr import Engines, ocr_file

    engines = Engines()
    try:
        while True:
            try:
                job = conn.recv()
            except EOFError:
                return
            result = ocr_file(job, engines,
                              lambda done, total: conn.send(("progress", done, total)))
            conn.send(("done", result))
    finally:
        engines.close()
        conn.close()


class _Engine:
    def __init__(self, threads: int, name: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_engine_main, args=(child, threads, os.getpid()),
                                daemon=True, name=name)
        self.proc.start()
        child.close()
        self.files = 0

    def alive(self) -> bool:
        return self.proc.is_alive()

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()

    def stop(self) -> None:
        self.conn.close()  # the engine reads EOF and exits
        self.proc.join(5)
        if self.proc.is_alive():
            self.kill()


class EnginePool:
    """At most ``size`` engines, each running one job at a time. :meth:`run` blocks: call it
    from a thread, never from the event loop."""

    def __init__(self, size: int, threads: int = 1, max_files: int = 200,
                 name: str = "sohoa-ocr-engine") -> None:
        self.size = max(1, size)
        self.threads = threads
        self.max_files = max(1, max_files)
        self.name = name
        self._slots = threading.Semaphore(self.size)
        self._idle: list[_Engine] = []
        self._lock = threading.Lock()
        self._closed = False

    def _take(self) -> _Engine:
        with self._lock:
            while self._idle:
                eng = self._idle.pop()
                if eng.alive():
                    return eng
                eng.kill()
        return _Engine(self.threads, self.name)

    def _give_back(self, eng: _Engine) -> None:
        with self._lock:
            if self._closed or eng.files >= self.max_files:
                eng.stop()
            else:
                self._idle.append(eng)

    def run(self, job: OcrJob, timeout_s: float,
            progress: Progress | None = None) -> OcrResult:
        job = replace(job, parent_pid=os.getpid())
        with self._slots:
            eng = self._take()
            healthy = False
            try:
                result, healthy = self._exchange(eng, job, timeout_s, progress)
                return result
            finally:
                if healthy:
                    eng.files += 1
                    self._give_back(eng)
                else:
                    pid = eng.proc.pid
                    eng.kill()
                    final = Path(job.pdf)
                    final.with_name(temp_name(final.name, pid)).unlink(missing_ok=True)
                shutil.rmtree(job.work_dir, ignore_errors=True)

    def _exchange(self, eng: _Engine, job: OcrJob, timeout_s: float,
                  progress: Progress | None) -> tuple[OcrResult, bool]:
        deadline = time.monotonic() + timeout_s
        try:
            eng.conn.send(job)
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not eng.conn.poll(left):
                    return failure("timeout", f"timeout after {timeout_s:.0f}s"), False
                kind, *body = eng.conn.recv()
                if kind == "progress":
                    if progress is not None:
                        progress(*body)
                    continue
                result: OcrResult = body[0]
                return result, True
        except (EOFError, OSError):
            eng.proc.join(2)
            return failure("transient", f"ocr process died (exit {eng.proc.exitcode})"), False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for eng in idle:
            eng.stop()
