"""What the monitoring tests share: the alert names the rules must define (``EXPECTED_ALERTS``)
and the Grafana boards' builder, loaded from its file (``load_builder``)."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from infra.monitoring import MONITORING

EXPECTED_ALERTS = {
    "SohoaSiteStalled", "SohoaSiteAgentDown", "SohoaSiteOffline", "SohoaSiteBehindSchedule",
    "SohoaQcFailureRateHigh", "SohoaOcrBacklogGrowing", "SohoaOcrFailing", "SohoaDeadLetters",
    "SohoaConsumerLagHigh", "SohoaSiteUploadBacklog", "SohoaPageObjectTampered",
}


def load_builder() -> ModuleType:
    """monitoring/grafana/build_dashboards.py, which is a script, not a package module."""
    spec = importlib.util.spec_from_file_location(
        "build_dashboards", MONITORING / "grafana" / "build_dashboards.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
