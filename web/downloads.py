"""Report downloads: the documents `sohoa report` writes, built on request into a temp folder.

The one place the page calls the report code (consumers' ``build_*`` and ``write_*``), so a
change of the reports' form reaches the page by this module alone.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import psycopg

from sohoa.config import Settings

MONTHLY_FORMATS = ("xlsx", "pdf", "csv")
ACCEPTANCE_FORMATS = ("xlsx", "csv")
MEDIA_TYPES = {
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "pdf": "application/pdf",
    "csv": "text/csv; charset=utf-8",
}


class ReportRefused(ValueError):
    """A request the reports cannot answer; the message is for the person who asked."""


@dataclass
class Built:
    path: Path
    download_name: str
    media_type: str


def parse_month(text: str) -> tuple[int, int]:
    from consumers.reports import parse_month as parse

    try:
        return parse(text)
    except ValueError as exc:
        raise ReportRefused(str(exc)) from None


def monthly(conn: psycopg.Connection, settings: Settings, month: str, fmt: str,
            workdir: Path) -> Built:
    from consumers.reports import build_monthly, write_monthly

    if fmt not in MONTHLY_FORMATS:
        raise ReportRefused(f"định dạng không hỗ trợ: {fmt}")
    year, mon = parse_month(month)
    data = build_monthly(conn, settings.campaign, year, mon)
    name = f"bao-cao-tien-do-{year:04d}-{mon:02d}.{fmt}"
    out = write_monthly(data, fmt, workdir / name)
    return Built(Path(out), name, MEDIA_TYPES[fmt])


def acceptance(conn: psycopg.Connection, settings: Settings, contractor: str, d1: date,
               d2: date, fmt: str, workdir: Path) -> Built:
    from consumers.reports import build_acceptance, write_acceptance

    if fmt not in ACCEPTANCE_FORMATS:
        raise ReportRefused(f"định dạng không hỗ trợ: {fmt}")
    if d2 < d1:
        raise ReportRefused("ngày kết thúc trước ngày bắt đầu")
    data = build_acceptance(conn, contractor, d1, d2, timezone=settings.campaign.timezone,
                            tolerance=settings.reports.page_size_tolerance)
    slug = re.sub(r"[^\w]+", "-", contractor).strip("-") or "nha-thau"
    name = f"nghiem-thu-{slug}-{d1:%Y%m%d}-{d2:%Y%m%d}.{fmt}"
    out = write_acceptance(data, fmt, workdir / name)
    return Built(Path(out), name, MEDIA_TYPES[fmt])


def workdir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="sohoa-web-")
