"""Run real `sohoa` component processes in tests, and wait for conditions with clear failures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class SohoaProcess:
    """One `sohoa …` process with its own log file; stopped (or killed) by the test."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path,
                 user: int | None = None, group: int | None = None,
                 python: str | None = None) -> None:
        self.args = args
        self.log = log
        full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log_fh = log.open("ab")
        # ``user``: run as that Unix user (setuid in the child; the log fd is ours).
        ids: dict[str, Any] = (
            {"user": user, "group": group, "extra_groups": []} if user is not None else {})
        self.proc = subprocess.Popen(
            [python or sys.executable, "-m", "sohoa.cli", *args], env=full_env,
            stdout=self._log_fh, stderr=subprocess.STDOUT, start_new_session=True, **ids)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill9(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self._log_fh.close()
        return self.proc.returncode

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def run_sohoa(args: list[str], env: dict[str, str],
              timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sohoa.cli", *args],
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=timeout)


def wait_for(check: Callable[[], T | None], timeout: float, what: str,
             procs: tuple[SohoaProcess, ...] = (), interval: float = 0.5) -> T:
    """Poll ``check`` until it returns a truthy value; on timeout fail with the processes' logs."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        for p in procs:
            if not p.alive():
                raise AssertionError(
                    f"while waiting for {what}: `sohoa {' '.join(p.args)}` exited "
                    f"with {p.proc.returncode}\n{p.tail()}")
        time.sleep(interval)
    logs = "\n".join(f"--- sohoa {' '.join(p.args)}\n{p.tail()}" for p in procs)
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what}; last={last!r}\n{logs}")
