"""A commune's PC: a copy of the repository and `pip install '.[site]'` in a fresh venv (what
README.md tells a site to do). The agent's commands work; a central command says what to
install instead of a traceback. Needs PyPI (the one network the tests use: a registry)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sohoa.errors import ExitCode

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def site_venv(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("site-install")
    src = tmp / "sohoa"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".state", "*.egg-info", "build", "dist", "__pycache__", "artefacts",
        ".pytest_cache", ".ruff_cache", "bench"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    res = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"{src}[site]"],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    return venv


def _sohoa(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / "sohoa"), *args], capture_output=True,
                          text=True, timeout=120, cwd=venv.parent,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(venv.parent),
                               "SOHOA_LOGGING__JSON": "false"})


def test_the_site_install_has_no_central_library(site_venv: Path) -> None:
    res = subprocess.run([str(site_venv / "bin" / "python"), "-c",
                          "import importlib.util as u; print([m for m in ('psycopg', 'faust',"
                          " 'flask', 'matplotlib') if u.find_spec(m)])"],
                         capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == "[]", res.stdout + res.stderr


def test_the_agent_commands_work_in_a_site_install(site_venv: Path) -> None:
    for args in (["--help"], ["watch", "--help"], ["metadata", "--help"],
                 ["config", "show"]):
        res = _sohoa(site_venv, *args)
        assert res.returncode == 0, (args, res.stdout + res.stderr)
        assert "Traceback" not in res.stderr


@pytest.mark.parametrize("args", [
    ["status"], ["report", "monthly", "--month", "12/2026"], ["streams"], ["consume"],
    ["web"], ["campaign", "show"], ["db", "migrate"],
])
def test_a_central_command_in_a_site_install_says_what_to_install(site_venv: Path,
                                                                  args: list[str]) -> None:
    res = _sohoa(site_venv, *args)
    assert res.returncode == ExitCode.UNAVAILABLE, (args, res.stdout + res.stderr)
    assert "pip install '.[central]'" in res.stderr
    assert "Traceback" not in res.stderr and "ModuleNotFoundError" not in res.stderr
