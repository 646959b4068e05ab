"""The operator interface: every command loads and teaches; the schema commands work."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from sohoa.cli import LAZY_COMMANDS, main
from sohoa.events import PageScanned


@pytest.mark.parametrize("name", sorted(LAZY_COMMANDS))
def test_every_component_command_loads_with_help(name: str) -> None:
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "không dùng được" not in result.output, result.output
    assert "Usage:" in result.output


def test_top_level_help_lists_the_operator_interface() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in ("up", "down", "watch", "streams", "consume", "status", "report", "reconcile",
                 "simulate", "config", "schema"):
        assert f"  {name}" in result.output


def test_schema_export_and_validate(tmp_path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["schema", "export", str(tmp_path / "schemas")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "schemas" / "page_scanned.v2.schema.json").exists()

    good = PageScanned.make(site_id="s", file_code="F", document="1.png", number=1,
                            uri="file:///a", sha256="0" * 64, size_bytes=1,
                            media_type="image/png").to_json().decode()
    ok = runner.invoke(main, ["schema", "validate"], input=good + "\n")
    assert ok.exit_code == 0 and "PageScanned hợp lệ" in ok.output
    bad = json.loads(good)
    bad["page_index"] = "một"
    fail = runner.invoke(main, ["schema", "validate"], input=good + "\n" + json.dumps(bad) + "\n")
    assert fail.exit_code == 1
    assert "dòng 2" in fail.output and "page_index" in fail.output
