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


def test_the_loader_advises_an_install_only_for_a_missing_third_party_module(
        monkeypatch) -> None:
    """A missing third-party package is an install step; an ImportError raised by a bug in
    sohoa's own code must surface with its traceback, not as advice to install."""
    import importlib

    from sohoa import cli as cli_mod
    from sohoa.errors import ExitCode

    real = importlib.import_module

    def fake(name: str, *a, **kw):
        if name == "consumers.cli":
            raise ModuleNotFoundError("No module named 'psycopg'", name="psycopg")
        if name == "infra.cli":
            raise ModuleNotFoundError("No module named 'consumers.gone'",
                                      name="consumers.gone")
        return real(name, *a, **kw)

    monkeypatch.setattr(cli_mod.importlib, "import_module", fake)
    runner = CliRunner()
    third_party = runner.invoke(main, ["status"])
    assert third_party.exit_code == ExitCode.UNAVAILABLE
    assert "psycopg" in third_party.output and "central" in third_party.output
    own_bug = runner.invoke(main, ["up"])
    assert isinstance(own_bug.exception, ModuleNotFoundError)
    assert "install" not in own_bug.output
