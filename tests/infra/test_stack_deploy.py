"""The deployment files name commands and options that really exist in the CLI."""

from __future__ import annotations

import configparser
import shlex
import subprocess
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from sohoa.cli import main

INFRA = Path(__file__).resolve().parents[2] / "infra"
UNITS = sorted((INFRA / "systemd").glob("*.service"))


class _CaseSensitive(configparser.ConfigParser):
    def optionxform(self, optionstr: str) -> str:
        return optionstr  # systemd keys are case-sensitive


def _unit(path: Path) -> configparser.ConfigParser:
    cp = _CaseSensitive(strict=False, interpolation=None)
    cp.read(path)
    return cp


def test_the_four_units_exist():
    assert [u.name for u in UNITS] == ["sohoa-consume.service", "sohoa-streams-ocr.service",
                                       "sohoa-streams.service", "sohoa-watch.service"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_execstart_is_a_real_command(unit: Path):
    service = _unit(unit)["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[0].endswith("/sohoa")
    args = argv[1:]
    assert args[:2] == ["--config", "/etc/sohoa/sohoa.toml"]
    # Parse (not run) the command line: click rejects an unknown command, option or choice.
    name, rest = args[2], args[3:]
    with main.make_context("sohoa", [], resilient_parsing=True) as root:
        cmd = main.get_command(root, name)
        assert cmd is not None and "không dùng được" not in (cmd.help or ""), name
        cmd.make_context(name, list(rest), parent=root)
    assert service["Restart"] == "always"


def test_parsing_check_rejects_a_bad_choice():
    root = main.make_context("sohoa", [], resilient_parsing=True)
    with pytest.raises(click.BadParameter):
        main.get_command(root, "streams").make_context("streams", ["--role", "bogus"],
                                                       parent=root)


def test_watch_unit_does_not_restart_on_config_error():
    service = _unit(INFRA / "systemd" / "sohoa-watch.service")["Service"]
    # 78 is the agent's EX_CONFIG exit: restarting cannot fix a wrong config.
    assert service["RestartPreventExitStatus"] == "78"
    result = CliRunner().invoke(main, ["watch", "--help"])
    assert "78" in result.output


def test_install_script_is_valid_and_idempotent():
    script = INFRA / "install-system-deps.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    # Dry run: reports what it would install (nothing on a prepared machine), installs nothing.
    res = subprocess.run(["bash", str(script)], env={"DRY_RUN": "1", "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
