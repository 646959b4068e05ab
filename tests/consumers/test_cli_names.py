"""Names a person types into the CLI: a wrong site, state or contractor is an error that lists
the known ones (never an empty answer with exit 0); a plan name works as well as an id; and an
interactive command in a terminal prints no JSON log lines among its output."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from sohoa.errors import ExitCode
from tests.support.procs import run_sohoa
from tests.support.progress_store import apply_events, fresh_db
from tests.support.store_events import page

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def planned(stack, tmp_path_factory):
    dsn = fresh_db(stack, "names")
    env = {**stack.env, "SOHOA_POSTGRES__DSN": dsn, "COLUMNS": "120"}
    plan = tmp_path_factory.mktemp("names") / "plan.csv"
    plan.write_text("site_id,name,unit,contractor,target_pages,target_files,deadline\n"
                    "xa-long-hung,Xã Long Hưng,Huyện Tân Phú,Cty Số Việt,100,4,31/12/2030\n"
                    "xa-phu-lam,Xã Phú Lâm,Huyện Tân Phú,Cty Đông Nam,100,4,31/12/2030\n",
                    encoding="utf-8")
    assert run_sohoa(["campaign", "import", str(plan)], env).returncode == 0
    now = datetime.now(UTC)
    with psycopg.connect(dsn) as conn:
        apply_events(conn, [page(site="xa-long-hung", code="F1", no=i,
                                 t=now - timedelta(minutes=9 - i)) for i in range(1, 4)])
    return env


def test_an_unknown_site_exits_non_zero_listing_the_known_ones(planned) -> None:
    res = run_sohoa(["status", "--site", "xa-khong-co"], planned)
    assert res.returncode == ExitCode.USAGE
    assert "không có điểm 'xa-khong-co'" in res.stderr
    assert "xa-long-hung (Xã Long Hưng)" in res.stderr and "xa-phu-lam (Xã Phú Lâm)" in res.stderr
    assert "Traceback" not in res.stderr


def test_a_site_may_be_named_as_the_plan_names_it(planned) -> None:
    res = run_sohoa(["status", "--site", "xã long hưng"], planned)
    assert res.returncode == 0, res.stderr
    assert "F1" in res.stdout and "Xã Phú Lâm" not in res.stdout


def test_an_unknown_state_exits_non_zero_listing_the_states(planned) -> None:
    res = run_sohoa(["status", "--state", "xong"], planned)
    assert res.returncode == ExitCode.USAGE
    assert "needs_rescan (cần quét lại)" in res.stderr and "scanning (đang quét)" in res.stderr
    ok = run_sohoa(["status", "--state", "đang quét", "--json"], planned)
    assert ok.returncode == 0, ok.stderr
    assert '"state": "scanning"' in ok.stdout


def test_an_unknown_contractor_writes_nothing_and_lists_the_known_ones(planned, tmp_path) -> None:
    out = tmp_path / "nghiem-thu.xlsx"
    res = run_sohoa(["report", "acceptance", "--contractor", "Cty Không Có", "--from",
                     "01/01/2026", "--to", "31/01/2026", "--out", str(out)], planned)
    assert res.returncode == ExitCode.USAGE
    assert "Cty Số Việt" in res.stderr and "Cty Đông Nam" in res.stderr
    assert not out.exists()
    ok = run_sohoa(["report", "acceptance", "--contractor", "cty so viet", "--from",
                    "01/01/2026", "--to", "31/01/2026", "--out", str(out)], planned)
    assert ok.returncode == 0, ok.stderr
    assert out.exists()


def test_a_month_written_mm_yyyy_makes_the_monthly_report(planned, tmp_path) -> None:
    out = tmp_path / "thang.csv"
    res = run_sohoa(["report", "monthly", "--month", "12/2026", "--format", "csv", "--out",
                     str(out)], planned)
    assert res.returncode == 0, res.stderr
    assert out.exists()


def _in_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run `sohoa ARGS` with stdin, stdout and stderr on a pseudo-terminal: what a person at
    the keyboard sees."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "sohoa.cli", *args],
                            env={**os.environ, **env, "COLUMNS": "120"}, stdin=follower,
                            stdout=follower, stderr=follower, close_fds=True)
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            proc.kill()
            break
        try:
            data = os.read(leader, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return proc.wait(timeout=30), b"".join(chunks).decode("utf-8", "replace")


def test_an_interactive_command_in_a_terminal_prints_no_json_log_lines(stack) -> None:
    owner = stack.new_database("tty")
    env = {**stack.env, "SOHOA_POSTGRES__DSN": owner, "SOHOA_POSTGRES__OWNER_DSN": owner,
           "SOHOA_LOGGING__LEVEL": "INFO"}
    rc, screen = _in_terminal(["db", "migrate"], env)
    assert rc == 0, screen
    assert "đã áp dụng 001_schema.sql" in screen
    assert '{"ts"' not in screen and "migration applied" not in screen
    # Redirected (a script, cron): the same command logs its JSON lines on stderr only.
    again = stack.new_database("pipe")
    res = run_sohoa(["db", "migrate"], {**stack.env, "SOHOA_POSTGRES__DSN": again,
                                        "SOHOA_LOGGING__LEVEL": "INFO"})
    assert res.returncode == 0
    assert '"event": "migration applied"' in res.stderr
    assert "{" not in res.stdout
