"""What the CLI prints for a person: `sohoa status` at the width it has, help that is never cut
inside a bracket, months in the format the help promises, logs kept out of interactive
output. No database needed."""

from __future__ import annotations

import io
import logging
import re
from datetime import UTC, date, datetime, timedelta

import pytest
from click.testing import CliRunner
from rich.console import Console

from consumers.progress import SiteProgress
from consumers.status import render

NOW = datetime.now(UTC)


def _site(site_id: str, name: str | None, scanned: int, target: int | None,
          at_risk: bool = False) -> SiteProgress:
    return SiteProgress(
        site_id=site_id, name=name, unit="Huyện Tân Phú" if target else None,
        contractor="Công ty TNHH Số hóa Đông Nam Bộ" if target else None, target_pages=target,
        target_files=40 if target else None,
        deadline=date(2027, 6, 30) if target else None, timezone="Asia/Ho_Chi_Minh",
        auto_created=target is None, pages_scanned=scanned, documents_scanned=scanned,
        checked_pages=scanned, pages_accepted=scanned // 2, files_total=12, files_accepted=6,
        qc_failed_pages=3, remaining_pages=None if target is None else max(0, target - scanned),
        last_page_at=NOW - timedelta(minutes=5), last_heartbeat_at=NOW - timedelta(hours=2),
        outbox_depth=0, oldest_unsent_age_s=None, working_now=True, throughput_per_day=12.5,
        forecast_completion=date(2027, 9, 1) if at_risk else date(2027, 3, 1), at_risk=at_risk)


SITES = [_site("xa-long-hung", "Xã Long Hưng", 1456, 12000),
         _site("thi-tran-dinh-quan", "Thị trấn Định Quán", 23987, 60000, at_risk=True),
         _site("xa-moi", None, 17, None)]
FILES = [{"site_id": "xa-long-hung", "fonds": "UBND-XA-LONG-HUNG", "file_code": "HS-2024-0001",
          "state": "needs_rescan", "documents": 3, "pages": 14, "checked_pages": 14,
          "expected_pages": 15, "qc_failed_pages": 2, "verdict": "needs_rescan",
          "deliverable": None}]


def _render(width: int, files: bool = False) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None, legacy_windows=False)
    data = {"sites": [{"site_id": s.site_id, "deliverable": {}} for s in SITES],
            "files": FILES if files else []}
    render(data, SITES, console)
    return out.getvalue()


@pytest.mark.parametrize("width", [80, 100, 120, 160, 220])
def test_status_fits_the_terminal_and_cuts_no_cell(width: int) -> None:
    text = _render(width, files=True)
    assert max(len(line) for line in text.splitlines()) <= width, text
    assert "…" not in text, text
    for must in ("Xã Long Hưng", "Thị trấn Định Quán", "xa-moi", "1.456", "23.987",
                 "chậm tiến độ", "đúng tiến độ", "chưa có kế hoạch", "HS-2024-0001",
                 "cần quét lại"):
        assert must in text, (width, must, text)
    assert "12,1 %" in text and "40,0 %" in text  # vi-VN shares


def test_a_wider_terminal_shows_more_columns() -> None:
    narrow, wide = _render(80), _render(280)
    assert "Công ty TNHH" not in narrow and "Công ty TNHH Số hóa Đông Nam Bộ" in wide
    assert "màn hình hẹp: ẩn cột" in narrow and "ẩn cột" not in wide
    assert len(wide.splitlines()[1]) > 200  # the width it has is used
    header = next(line for line in narrow.splitlines() if "Điểm" in line)
    for col in ("Đã quét", "Tỷ lệ", "Hạn", "Đánh giá"):  # what matters most, at 80
        assert col in header, header


def test_a_very_narrow_terminal_gets_one_block_per_site() -> None:
    text = _render(36)
    assert max(len(line) for line in text.splitlines()) <= 36
    assert "Đánh giá: chậm tiến độ" in text
    assert "Điểm: Thị trấn Định Quán" in text


def test_top_level_help_never_cuts_a_description_inside_a_bracket() -> None:
    from sohoa.cli import main

    for width in (80, 100):
        res = CliRunner().invoke(main, ["--help"], terminal_width=width)
        assert res.exit_code == 0
        commands = res.output.split("Commands:", 1)[1]
        for line in commands.splitlines():
            assert line.count("(") == line.count(")"), line
            assert len(line) <= width, line
        assert re.search(r"^  status +Tiến độ theo điểm", commands, re.M)


@pytest.mark.parametrize(("text", "month"), [
    ("2026-12", (2026, 12)), ("12/2026", (2026, 12)), ("3/2026", (2026, 3)),
    (" 03/2026 ", (2026, 3))])
def test_a_month_is_taken_in_both_promised_formats(text: str, month: tuple[int, int]) -> None:
    from consumers.monthly import parse_month

    assert parse_month(text) == month


@pytest.mark.parametrize("text", ["13/2026", "2026/12", "tháng 12", "2026-13"])
def test_a_wrong_month_is_refused_naming_the_formats(text: str) -> None:
    from consumers.monthly import parse_month

    with pytest.raises(ValueError, match="MM/YYYY"):
        parse_month(text)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_an_interactive_command_on_a_terminal_shows_warnings_only_and_no_json() -> None:
    from sohoa.logs import setup_logging

    err = _Tty()
    setup_logging("INFO", json_format=True, interactive=True, stream=err)
    logging.getLogger("consumers.campaign").info("plan imported", extra={"sites": 3})
    logging.getLogger("consumers.campaign").warning("sites auto-created", extra={"n": 2})
    text = err.getvalue()
    assert "plan imported" not in text
    assert "sites auto-created" in text and "{" not in text


def test_without_a_terminal_an_interactive_command_logs_json_lines() -> None:
    import json

    from sohoa.logs import setup_logging

    err = io.StringIO()
    setup_logging("INFO", json_format=True, interactive=True, stream=err)
    logging.getLogger("consumers.campaign").info("plan imported", extra={"sites": 3})
    assert json.loads(err.getvalue())["event"] == "plan imported"


def test_a_service_logs_as_configured_even_on_a_terminal() -> None:
    import json

    from sohoa.logs import setup_logging

    err = _Tty()
    setup_logging("INFO", json_format=True, interactive=False, stream=err)
    logging.getLogger("producers.agent").info("agent started")
    assert json.loads(err.getvalue())["event"] == "agent started"
