"""What make_app hands Faust (no broker needed: the app is only built, not started)."""

from __future__ import annotations

from pathlib import Path

from sohoa.config import Settings
from streams.faustapp import make_app


def test_metadata_is_refreshed_well_inside_the_default_five_minutes(tmp_path: Path) -> None:
    # A rebalance during a broker's return can leave a topic unassigned until the next metadata
    # refresh (the fault suite saw a 5-minute verdict stall): both clients must refresh sooner.
    settings = Settings(streams={"data_dir": tmp_path, "metadata_max_age_s": 20})
    app = make_app(settings, "t-meta", web_port=16999, partitions=3)
    assert app.conf.consumer_metadata_max_age_ms == 20_000
    assert app.conf.producer_metadata_max_age_ms == 20_000
    default = make_app(Settings(streams={"data_dir": tmp_path}), "t-meta2", 16998, 3)
    assert default.conf.consumer_metadata_max_age_ms <= 60_000
