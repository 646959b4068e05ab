"""Monitoring configuration for a deployment, and Prometheus + Alertmanager beside the local
stack (`sohoa monitoring build`, `sohoa up --monitoring`).

`build` copies ``monitoring/`` with every alert's ``runbook_url`` and the boards' link made
absolute on ``monitoring.runbook_base_url`` (the committed files carry the default, the page
`sohoa web` serves on this machine). `LocalMonitoring` runs Debian's ``prometheus`` and
``prometheus-alertmanager`` on loopback against the local stack's components, with the shipped
rules and Alertmanager configuration, so a user of `make run` sees the alerts.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from infra.procs import log_tail, running_pid, spawn_detached, terminate
from sohoa.config import Settings

MONITORING = Path(__file__).resolve().parents[1] / "monitoring"
_RUNBOOK_URL = re.compile(r"""(runbook_url: ["'])[^"'#]*#""")


def build(settings: Settings, out: Path) -> Path:
    """Write a deployable copy of monitoring/ into ``out`` (replaced if present)."""
    base = settings.monitoring.runbook_base_url
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(MONITORING, out, ignore=shutil.ignore_patterns("__pycache__"))
    prom = out / "prometheus"
    # The alerts and the promtool tests' expectations, so `promtool test rules` still passes.
    for path in [prom / "rules" / "alerts.yml", *sorted((prom / "tests").glob("*.yml"))]:
        text = path.read_text(encoding="utf-8")
        path.write_text(_RUNBOOK_URL.sub(lambda m: f"{m.group(1)}{base}#", text),
                        encoding="utf-8")
    boards = _board_builder().render(base)
    for name, text in boards.items():
        (out / "grafana" / "dashboards" / name).write_text(text, encoding="utf-8")
    return out


def _board_builder():
    path = MONITORING / "grafana" / "build_dashboards.py"
    spec = importlib.util.spec_from_file_location("sohoa_build_dashboards", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@dataclass
class Started:
    name: str
    pid: int | None
    url: str
    already_running: bool = False
    error: str = ""


class LocalMonitoring:
    """Prometheus and Alertmanager of the local stack: state under <state_dir>/monitoring."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = Path(settings.stack.state_dir).resolve() / "monitoring"
        self.run_dir = Path(settings.stack.state_dir).resolve() / "run"
        self.logs_dir = Path(settings.stack.state_dir).resolve() / "logs"
        host = settings.stack.host
        self.prometheus_url = f"http://{host}:{settings.stack.prometheus_port}"
        self.alertmanager_url = f"http://{host}:{settings.stack.alertmanager_port}"

    @staticmethod
    def binaries() -> dict[str, str | None]:
        return {"prometheus": shutil.which("prometheus"),
                "alertmanager": (shutil.which("prometheus-alertmanager")
                                 or shutil.which("alertmanager"))}

    def write_config(self) -> None:
        conf = build(self.settings, self.root / "config")
        s = self.settings
        targets = {"sohoa-consumer": [f"{s.consumer.metrics_host}:{s.consumer.metrics_port}"],
                   "sohoa-streams": [f"{s.streams.web_host}:{s.streams.web_port}",
                                     f"{s.streams.web_host}:{s.streams.ocr_web_port}"]}
        if s.watcher.metrics_port:
            targets["sohoa-watch"] = [f"{s.watcher.metrics_addr}:{s.watcher.metrics_port}"]
        jobs = "".join(f"  - job_name: {job}\n    static_configs:\n      - targets: {t!r}\n"
                       for job, t in targets.items())
        am = self.alertmanager_url.removeprefix("http://")
        (conf / "prometheus" / "local.yml").write_text(
            "# Written by `sohoa up --monitoring` for the local stack; see prometheus.yml.\n"
            "global: {scrape_interval: 15s, evaluation_interval: 30s}\n"
            "rule_files: [rules/recording.yml, rules/alerts.yml]\n"
            f"alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{am}']\n"
            f"scrape_configs:\n{jobs}", encoding="utf-8")

    def _argv(self, name: str, binary: str) -> tuple[list[str], Path]:
        s = self.settings.stack
        if name == "prometheus":
            return ([binary, "--config.file=local.yml",
                     f"--storage.tsdb.path={self.root / 'prometheus-data'}",
                     f"--web.listen-address={s.host}:{s.prometheus_port}"],
                    self.root / "config" / "prometheus")
        return ([binary, "--config.file=alertmanager.yml",
                 f"--storage.path={self.root / 'alertmanager-data'}",
                 f"--web.listen-address={s.host}:{s.alertmanager_port}",
                 "--cluster.listen-address="],  # one node: no gossip port
                self.root / "config" / "alertmanager")

    def pid_path(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def log_path(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def pid(self, name: str) -> int | None:
        return running_pid(self.pid_path(name), str(self.root))

    def _exited(self, name: str) -> bool:
        return self.pid(name) is None

    def start(self) -> list[Started]:
        from infra.procs import NotReady, poll_ready, port_open

        out = []
        bins = self.binaries()
        missing = [n for n, b in bins.items() if b is None]
        if missing:
            return [Started(n, None, "", error="chưa cài (infra/install-system-deps.sh)")
                    for n in missing]
        self.write_config()
        s = self.settings.stack
        for name, port, url in (("alertmanager", s.alertmanager_port, self.alertmanager_url),
                                ("prometheus", s.prometheus_port, self.prometheus_url)):
            pid = self.pid(name)
            if pid is not None:
                out.append(Started(name, pid, url, already_running=True))
                continue
            argv, cwd = self._argv(name, bins[name] or "")
            env = {**os.environ, "TZ": self.settings.campaign.timezone}
            pid = spawn_detached(argv, log_path=self.log_path(name),
                                 pid_path=self.pid_path(name), env=env, cwd=cwd)
            try:
                poll_ready(functools.partial(port_open, s.host, port),
                           exited=functools.partial(self._exited, name), timeout_s=30,
                           interval_s=0.2, retry_on=(OSError,))
                error = ""
            except NotReady:
                error = f"không khởi động được:\n{log_tail(self.log_path(name), 10)}"
            out.append(Started(name, pid, url, error=error))
        return out

    def stop(self) -> dict[str, bool | None]:
        return {name: (terminate(pid, self.settings.stack.stop_timeout_s)
                       if (pid := self.pid(name)) is not None else None)
                for name in ("prometheus", "alertmanager")}
