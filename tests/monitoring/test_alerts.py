"""Alert rules, recording rules, scrape config and Alertmanager routing, checked by the real
Prometheus tools (promtool, amtool) so `make test` covers them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sohoa.config import MonitoringConfig
from tests.support.monitoring_helpers import EXPECTED_ALERTS

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "monitoring" / "prometheus"
ALERTS = PROM / "rules" / "alerts.yml"
RECORDING = PROM / "rules" / "recording.yml"
AM = ROOT / "monitoring" / "alertmanager" / "alertmanager.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"
ARCH = ROOT / "docs" / "architecture.md"

RUNBOOK_BASE = MonitoringConfig().runbook_base_url


def _installed(tool: str, package: str) -> None:
    """The set-up installs the Prometheus tools (infra/install-system-deps.sh): one missing
    is a failure, never a silent skip."""
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} not installed: run infra/install-system-deps.sh ({package})")


@pytest.fixture
def promtool() -> None:
    _installed("promtool", "prometheus")


@pytest.fixture
def amtool() -> None:
    _installed("amtool", "prometheus-alertmanager")


needs_promtool = pytest.mark.usefixtures("promtool")
needs_amtool = pytest.mark.usefixtures("amtool")

VIETNAMESE = re.compile(r"[ăâđêôơưạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ]", re.I)


def _run(*argv: str, cwd: Path = PROM) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=120)


def _alert_blocks() -> dict[str, str]:
    text = ALERTS.read_text(encoding="utf-8")
    parts = re.split(r"^      - alert: ", text, flags=re.M)[1:]
    return {p.split("\n", 1)[0].strip(): p for p in parts}


@needs_promtool
def test_rules_pass_promtool_check() -> None:
    res = _run("promtool", "check", "rules", str(RECORDING), str(ALERTS))
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in res.stdout


@needs_promtool
def test_scrape_config_is_valid() -> None:
    res = _run("promtool", "check", "config", "prometheus.yml")
    assert res.returncode == 0, res.stdout + res.stderr


@needs_promtool
def test_default_config_scrapes_only_loopback_targets(tmp_path: Path) -> None:
    """Prometheus itself reads the shipped configuration (rules, discovery and all) and says
    what it would scrape and where it would send alerts: only this machine's loopback."""
    import contextlib
    import ipaddress
    import json
    import time
    import urllib.request
    from urllib.parse import urlsplit

    from infra.procs import free_port

    shutil.copytree(PROM, tmp_path / "prometheus")
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        ["prometheus", "--config.file=prometheus.yml", f"--storage.tsdb.path={tmp_path / 'db'}",
         f"--web.listen-address=127.0.0.1:{port}"], cwd=tmp_path / "prometheus",
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def get(path: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return json.loads(resp.read())["data"]

    try:
        deadline = time.monotonic() + 60
        targets: list[dict] = []
        while time.monotonic() < deadline and len(targets) < 3:
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            with contextlib.suppress(OSError):
                targets = get("/api/v1/targets")["activeTargets"]
            time.sleep(0.5)
        time.sleep(6)  # a discovery update later (file_sd, if any, has been read by now)
        targets = get("/api/v1/targets")["activeTargets"]
        managers = get("/api/v1/alertmanagers")["activeAlertmanagers"]
        config = get("/api/v1/status/config")["yaml"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    hosts = {urlsplit(t["scrapeUrl"]).hostname for t in targets}
    hosts |= {urlsplit(m["url"]).hostname for m in managers}
    assert len(targets) == 3 and managers, (targets, managers)
    assert all(ipaddress.ip_address(h).is_loopback for h in hosts), hosts
    assert "_sd_configs" not in config  # no discovery that could add remote targets


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    files = sorted(str(p.relative_to(PROM)) for p in (PROM / "tests").glob("*.yml"))
    assert files, "no promtool tests"
    res = _run("promtool", "test", "rules", *files)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("SUCCESS") == len(files)


def test_every_alert_is_defined_and_documented() -> None:
    blocks = _alert_blocks()
    assert set(blocks) == EXPECTED_ALERTS
    runbook = RUNBOOK.read_text(encoding="utf-8")
    anchors = {re.sub(r"[^a-z0-9]", "", h.lower())
               for h in re.findall(r"^#+ (.+)$", runbook, flags=re.M)}
    for name, block in blocks.items():
        summary = re.search(r'summary: "(.+)"', block)
        description = re.search(r"description: >-\n((?:\s{12}.+\n)+)", block)
        assert summary and VIETNAMESE.search(summary.group(1)), f"{name}: Vietnamese summary"
        assert description and VIETNAMESE.search(description.group(1)), f"{name}: description"
        url = re.search(r'runbook_url: "(.+)#(\w+)"', block)
        assert url and url.group(2) == name.lower(), f"{name}: runbook_url"
        assert url.group(1) == RUNBOOK_BASE, f"{name}: runbook_url is absolute, the default"
        assert name.lower() in anchors, f"{name}: no section in docs/runbook.md"


def test_every_alert_has_a_firing_and_a_silent_test_case() -> None:
    fires: set[str] = set()
    silent: set[str] = set()
    for path in (PROM / "tests").glob("*.yml"):
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"alertname: (\w+)\n\s+exp_alerts:( \[\])?", text):
            (silent if m.group(2) else fires).add(m.group(1))
    assert fires >= EXPECTED_ALERTS, EXPECTED_ALERTS - fires
    assert silent >= EXPECTED_ALERTS, EXPECTED_ALERTS - silent


def test_rules_use_only_documented_metrics() -> None:
    documented = set(re.findall(r"sohoa_[a-z_]+", ARCH.read_text(encoding="utf-8")))
    used = set()
    for path in (ALERTS, RECORDING):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip().startswith("#") or "summary" in line or "runbook" in line:
                continue
            used |= set(re.findall(r"\bsohoa_[a-z_]+", line))
    assert used - documented == set()


@needs_promtool
@pytest.mark.parametrize(("gate", "weakened", "why"), [
    ("max by (site) (min_over_time(sohoa_site_working_now[2h])) == 1",
     "max by (site) (min_over_time(sohoa_site_working_now[2h])) >= 0", "lunch/weekend/Tết gate"),
    ("max by (site) (sohoa_site_remaining_pages) > 0",
     "max by (site) (sohoa_site_remaining_pages) >= 0", "finished-site gate"),
])
def test_unit_tests_catch_a_missing_gate(tmp_path: Path, gate: str, weakened: str,
                                         why: str) -> None:
    """The silent cases have teeth: weakening a gate of SohoaSiteStalled fails promtool."""
    text = ALERTS.read_text(encoding="utf-8")
    assert text.index(gate) < text.index("alert: SohoaSiteAgentDown"), why
    mutated = text.replace(gate, weakened, 1)
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "rules" / "alerts.yml").write_text(mutated, encoding="utf-8")
    shutil.copy(RECORDING, tmp_path / "rules" / "recording.yml")
    shutil.copy(PROM / "tests" / "sites_test.yml", tmp_path / "tests" / "sites_test.yml")
    assert _run("promtool", "check", "rules", "rules/alerts.yml", cwd=tmp_path).returncode == 0
    res = _run("promtool", "test", "rules", "tests/sites_test.yml", cwd=tmp_path)
    assert res.returncode != 0, f"weakening the {why} went unnoticed"
    assert "SohoaSiteStalled" in res.stdout + res.stderr


@needs_amtool
def test_alertmanager_config_is_valid() -> None:
    res = _run("amtool", "check-config", str(AM))
    assert res.returncode == 0, res.stdout + res.stderr


@needs_amtool
@pytest.mark.parametrize(("labels", "receivers"), [
    (["alertname=SohoaSiteStalled", "unit_key=huyen-tan-phu", "site=xa-a",
      "severity=warning"], "huyen-tan-phu"),
    # However the plan spells the unit, its key routes it.
    (["alertname=SohoaSiteStalled", "unit_key=ubnd-huyen-tan-phu", "site=xa-a",
      "severity=warning"], "huyen-tan-phu"),
    (["alertname=SohoaSiteOffline", "unit_key=xa-phu-lam-huyen-tan-phu", "site=xa-b",
      "severity=warning"], "huyen-tan-phu"),
    (["alertname=SohoaSiteBehindSchedule", "unit_key=so-noi-vu", "site=kho",
      "severity=warning"], "so-noi-vu"),
    (["alertname=SohoaSiteOffline", "unit_key=van-phong-tinh-uy", "site=vp",
      "severity=warning"], "van-phong-tinh-uy"),
    # Near the deadline the central operators hear of it too.
    (["alertname=SohoaSiteBehindSchedule", "unit_key=so-noi-vu", "site=kho",
      "severity=critical"], "trung-tam,so-noi-vu"),
    (["alertname=SohoaSiteStalled", "unit_key=chua-ro", "site=xa-b", "severity=warning"],
     "trung-tam"),
    (["alertname=SohoaOcrFailing", "site=xa-a", "severity=warning"], "trung-tam"),
    (["alertname=SohoaConsumerLagHigh", "severity=warning"], "trung-tam"),
])
def test_alertmanager_routes_by_unit(labels: list[str], receivers: str) -> None:
    res = _run("amtool", "config", "routes", "test", f"--config.file={AM}",
               f"--verify.receivers={receivers}", *labels)
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_consumer_gives_each_unit_the_key_the_routes_match() -> None:
    from sohoa.naming import slug

    assert slug("Huyện Tân Phú") == "huyen-tan-phu"
    assert slug("UBND huyện  Tân Phú") == "ubnd-huyen-tan-phu"
    assert slug("Sở Nội vụ") == "so-noi-vu"
    assert slug("Văn phòng Tỉnh ủy") == "van-phong-tinh-uy"
    assert slug("Đảng ủy xã Đông Hòa") == "dang-uy-xa-dong-hoa"


def test_alertmanager_groups_by_unit_and_site() -> None:
    route = AM.read_text(encoding="utf-8").split("\nroute:\n", 1)[1]
    top = route.split("  routes:", 1)[0]
    assert "group_by: [unit_key, site]" in top
