"""A throw-away Prometheus (Debian's package) on loopback for one run — a test or a bench —
with the repository's rule files, scraping the given targets and evaluating the rules every
``interval_s`` (1 s: a compressed run's changes show within seconds). Its data lives under the
given directory; `LocalMonitoring` is the one `sohoa up --monitoring` keeps."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

from infra.monitoring import MONITORING
from infra.procs import free_port


class ScratchPrometheus:
    def __init__(self, tmp: Path, targets: list[str], interval_s: int = 1) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed (infra/install-system-deps.sh)")
        if not all(t.startswith("127.0.0.1:") for t in targets):
            raise ValueError(f"loopback targets only: {targets}")
        self.dir = tmp / "prometheus"
        self.dir.mkdir(parents=True, exist_ok=True)
        rules = MONITORING / "prometheus" / "rules"
        (self.dir / "prometheus.yml").write_text(
            # The timeout is the interval: the consumer's /metrics of thousands of sites is
            # computed at scrape time and may take longer than Prometheus's default 10 s.
            f"global: {{scrape_interval: {interval_s}s, scrape_timeout: {interval_s}s, "
            f"evaluation_interval: {interval_s}s}}\n"
            f"rule_files: ['{rules / 'recording.yml'}', '{rules / 'alerts.yml'}']\n"
            "scrape_configs:\n  - job_name: sohoa\n    static_configs:\n"
            f"      - targets: {targets!r}\n", encoding="utf-8")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.dir / "prometheus.log"
        self.proc = subprocess.Popen(
            [binary, f"--config.file={self.dir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(self.log.read_text(errors="replace")[-2000:])
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("Prometheus not ready: " + self.log.read_text(errors="replace"))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
