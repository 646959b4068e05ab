"""The sohoa components (`watch`, `streams`, `consume`, `web`) as detached processes of
`sohoa up`."""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from infra.procs import find_process, log_tail, running_pid, spawn_detached, terminate
from sohoa.config import Settings

log = logging.getLogger(__name__)

COMPONENTS = ("watch", "streams", "consume", "web")
MARKER = "sohoa.cli"

# How to fix the usual reasons a component dies at start.
HINTS = {
    "watch": "kiểm tra watcher.roots (thư mục quét có tồn tại, đọc được?) và watcher.site_id; "
             "mã thoát 78 = cấu hình sai",
    "streams": "kiểm tra Kafka đang chạy, streams.web_port / streams.ocr_web_port chưa bị chiếm, "
               "tesseract + gói tiếng Việt (tesseract-ocr-vie) đã cài",
    "consume": "kiểm tra PostgreSQL (postgres.dsn), đã chạy `sohoa db migrate`, "
               "consumer.metrics_port chưa bị chiếm",
    "web": "thêm tài khoản vào [web.users] (`sohoa web hash-password`) hoặc đặt "
           "web.auth = \"proxy\"; web.port chưa bị chiếm",
}


@dataclass
class Started:
    name: str
    pid: int | None
    already_running: bool = False
    died: bool = False
    log_path: Path | None = None
    tail: str = ""


class Components:
    def __init__(self, settings: Settings, config_path: Path | None, env: dict[str, str],
                 own_env: dict[str, dict[str, str]] | None = None) -> None:
        self.settings = settings
        self.config_path = config_path
        self.env = env
        # Per component, on top of ``env``: each gets only its own object store key.
        self.own_env = own_env or {}
        state = Path(settings.stack.state_dir).resolve()
        self.state_dir = state
        self.run_dir = state / "run"
        self.logs_dir = state / "logs"

    def pid_path(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def log_path(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def pid(self, name: str) -> int | None:
        pid = running_pid(self.pid_path(name), MARKER)
        if pid is None:
            # Pid file lost (deleted, or an older `up` misjudged a start): find the component
            # by its command line and state dir so `down` can still stop it.
            pid = find_process([MARKER, name], "SOHOA_STACK__STATE_DIR", str(self.state_dir))
            if pid is not None:
                self.pid_path(name).parent.mkdir(parents=True, exist_ok=True)
                self.pid_path(name).write_text(f"{pid}\n")
                log.warning("component found without pid file",
                            extra={"component": name, "pid": pid})
        return pid

    def argv(self, name: str) -> list[str]:
        argv = [sys.executable, "-m", "sohoa.cli"]
        if self.config_path is not None:
            argv += ["--config", str(self.config_path.resolve())]
        return [*argv, name]

    def start(self, names: list[str]) -> list[Started]:
        """Start those not running, then watch them for ``component_grace_s``."""
        results = []
        for name in names:
            pid = self.pid(name)
            if pid is not None:
                results.append(Started(name, pid, already_running=True))
                continue
            pid = spawn_detached(self.argv(name), log_path=self.log_path(name),
                                 pid_path=self.pid_path(name),
                                 env={**os.environ, **self.env,
                                      **self.own_env.get(name, {})}, cwd=Path.cwd())
            log.info("component started", extra={"component": name, "pid": pid})
            results.append(Started(name, pid, log_path=self.log_path(name)))
        fresh = [r for r in results if not r.already_running]
        deadline = time.monotonic() + self.settings.stack.component_grace_s
        while fresh and time.monotonic() < deadline:
            for r in fresh:
                if not r.died and self.pid(r.name) is None:
                    r.died = True
                    r.tail = log_tail(self.log_path(r.name), 15)
                    self.pid_path(r.name).unlink(missing_ok=True)
                    log.warning("component died at start", extra={"component": r.name})
            if all(r.died for r in fresh):
                break
            time.sleep(0.25)
        return results

    def stop(self, names: list[str]) -> dict[str, bool | None]:
        """SIGTERM all at once (they drain in parallel), SIGKILL after stack.stop_timeout_s.
        Returns name -> clean stop (None: was not running)."""
        import concurrent.futures as cf

        pids = {n: self.pid(n) for n in names}
        out: dict[str, bool | None] = {n: None for n, p in pids.items() if p is None}
        running = {n: p for n, p in pids.items() if p is not None}
        if running:
            with cf.ThreadPoolExecutor(len(running)) as pool:
                futures = {n: pool.submit(terminate, p, self.settings.stack.stop_timeout_s)
                           for n, p in running.items()}
                out.update({n: f.result() for n, f in futures.items()})
        for n in names:
            if self.pid(n) is None:
                self.pid_path(n).unlink(missing_ok=True)
        return out
