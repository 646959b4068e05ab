"""`sohoa monitoring build` (runbook links absolute on monitoring.runbook_base_url) and the
Prometheus + Alertmanager that `sohoa up --monitoring` (`make run`) starts beside the stack."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner

from infra.monitoring import MONITORING, LocalMonitoring, build
from infra.procs import free_port
from sohoa.cli import main
from sohoa.config import MonitoringConfig, Settings
from sohoa.errors import ConfigError
from tests.support.monitoring_helpers import EXPECTED_ALERTS, load_builder
from tests.support.procs import wait_for

BASE = "https://sohoa.tinh.example.gov.vn/so-tay"


def _runbook_urls(root: Path) -> list[str]:
    text = (root / "prometheus" / "rules" / "alerts.yml").read_text(encoding="utf-8")
    return re.findall(r'runbook_url: "([^"]+)"', text)


def test_the_committed_rules_and_boards_link_to_the_default_runbook() -> None:
    default = MonitoringConfig().runbook_base_url
    assert default == load_builder().DEFAULT_RUNBOOK
    urls = _runbook_urls(MONITORING)
    assert len(urls) == len(EXPECTED_ALERTS) and all(u.startswith(default + "#") for u in urls)


def test_build_links_every_alert_and_board_to_the_configured_runbook(tmp_path: Path) -> None:
    out = build(Settings(monitoring={"runbook_base_url": BASE + "/"}), tmp_path / "mon")
    urls = _runbook_urls(out)
    assert len(urls) == len(EXPECTED_ALERTS)
    assert all(re.fullmatch(re.escape(BASE) + r"#sohoa[a-z]+", u) for u in urls), urls
    for board in (out / "grafana" / "dashboards").glob("*.json"):
        links = json.loads(board.read_text(encoding="utf-8"))["links"]
        assert [link["url"] for link in links] == [BASE], board.name
    # The copy is still valid, and its promtool tests (expectations rewritten) still pass.
    prom = out / "prometheus"
    res = subprocess.run(["promtool", "test", "rules", *sorted(
        str(p.relative_to(prom)) for p in (prom / "tests").glob("*.yml"))],
        cwd=prom, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert subprocess.run(["amtool", "check-config", str(out / "alertmanager" /
                                                        "alertmanager.yml")],
                          capture_output=True, timeout=60).returncode == 0


def test_monitoring_build_command_uses_the_setting(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SOHOA_MONITORING__RUNBOOK_BASE_URL", BASE)
    res = CliRunner().invoke(main, ["monitoring", "build", "--out", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    assert all(u.startswith(BASE + "#") for u in _runbook_urls(tmp_path / "m"))


@pytest.mark.parametrize("bad", ["docs/runbook.md", "/so-tay", "ftp://x/y", "http://x/y#a"])
def test_a_relative_or_odd_runbook_address_is_refused(bad: str) -> None:
    from sohoa.config import load_config

    with pytest.raises(ConfigError, match="runbook_base_url"):
        load_config(monitoring={"runbook_base_url": bad})


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def test_make_run_starts_prometheus_and_alertmanager_on_loopback(tmp_path: Path) -> None:
    settings = Settings(stack={"state_dir": tmp_path, "prometheus_port": free_port(),
                               "alertmanager_port": free_port()},
                        consumer={"metrics_port": free_port()})
    mon = LocalMonitoring(settings)
    try:
        started = {r.name: r for r in mon.start()}
        assert set(started) == {"prometheus", "alertmanager"}
        assert not any(r.error for r in started.values()), started
        # A second start finds them running.
        assert all(r.already_running for r in mon.start())
        rules = _get(f"{mon.prometheus_url}/api/v1/rules")["data"]["groups"]
        alerts = {r["name"] for g in rules for r in g["rules"] if r["type"] == "alerting"}
        assert alerts == EXPECTED_ALERTS
        runbooks = {r["annotations"]["runbook_url"] for g in rules for r in g["rules"]
                    if r["type"] == "alerting"}
        assert all(u.startswith(MonitoringConfig().runbook_base_url + "#") for u in runbooks)
        managers = wait_for(lambda: _get(f"{mon.prometheus_url}/api/v1/alertmanagers")[
            "data"]["activeAlertmanagers"], 30, "Prometheus to find its Alertmanager")
        assert [urlsplit(m["url"]).port for m in managers] == [settings.stack.alertmanager_port]
        targets = wait_for(lambda: _get(f"{mon.prometheus_url}/api/v1/targets")["data"][
            "activeTargets"], 30, "Prometheus to list its targets")
        assert {urlsplit(t["scrapeUrl"]).hostname for t in targets} == {"127.0.0.1"}
        assert f"127.0.0.1:{settings.consumer.metrics_port}" in {
            urlsplit(t["scrapeUrl"]).netloc for t in targets}
        status = _get(f"{mon.alertmanager_url}/api/v2/status")
        assert "receiver: trung-tam" in status["config"]["original"]
        assert status["cluster"]["status"] == "disabled"
    finally:
        stopped = mon.stop()
    assert all(stopped.values()), stopped
    assert mon.pid("prometheus") is None and mon.pid("alertmanager") is None
