"""Report downloads: the documents `sohoa report` writes, built on request into a temp folder.

The one place the page calls the report code (``consumers.monthly``/``monthly_doc``,
``acceptance``/``acceptance_doc``, ``budget``/``budget_doc``), with the same settings the CLI
passes: the issuing body (``reports.issuer``), the contracts and today's date.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import psycopg

from sohoa.config import Settings

MONTHLY_FORMATS = ("docx", "pdf", "xlsx", "csv")
ACCEPTANCE_FORMATS = ("docx", "pdf", "xlsx", "csv")
BUDGET_FORMATS = ("xlsx", "docx", "pdf")
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


def _format(fmt: str, allowed: tuple[str, ...]) -> str:
    if fmt not in allowed:
        raise ReportRefused(f"định dạng không hỗ trợ: {fmt} (có: {', '.join(allowed)})")
    return fmt


def monthly(conn: psycopg.Connection, settings: Settings, month: str, fmt: str,
            workdir: Path) -> Built:
    from consumers.monthly import build_monthly, parse_month
    from consumers.monthly_doc import write_monthly

    fmt = _format(fmt, MONTHLY_FORMATS)
    try:
        year, mon = parse_month(month)
    except ValueError as exc:
        raise ReportRefused(str(exc)) from None
    data = build_monthly(conn, settings.campaign, year, mon)
    name = f"bao-cao-tien-do-{year:04d}-{mon:02d}.{fmt}"
    out = write_monthly(data, fmt, workdir / name, settings.reports.issuer)
    return Built(Path(out), name, MEDIA_TYPES[fmt])


def acceptance(conn: psycopg.Connection, settings: Settings, contractor: str, d1: date,
               d2: date, fmt: str, workdir: Path) -> Built:
    from consumers.acceptance import (
        UnknownContractor,
        build_acceptance,
        contract_for,
        match_contractor,
    )
    from consumers.acceptance_doc import write_acceptance

    fmt = _format(fmt, ACCEPTANCE_FORMATS)
    if d2 < d1:
        raise ReportRefused("ngày kết thúc trước ngày bắt đầu")
    try:
        names = match_contractor(conn, contractor)
    except UnknownContractor as exc:
        raise ReportRefused(str(exc)) from None
    data = build_acceptance(conn, names, d1, d2, timezone=settings.campaign.timezone,
                            tolerance=settings.reports.page_size_tolerance,
                            contract=contract_for(settings.reports, names[0]))
    slug = re.sub(r"[^\w]+", "-", names[0]).strip("-") or "nha-thau"
    name = f"nghiem-thu-{slug}-{d1:%Y%m%d}-{d2:%Y%m%d}.{fmt}"
    out = write_acceptance(data, fmt, workdir / name, settings.reports.issuer)
    return Built(Path(out), name, MEDIA_TYPES[fmt])


def budget(conn: psycopg.Connection, settings: Settings, fmt: str, workdir: Path) -> Built:
    from consumers.budget import BudgetError, build_budget
    from consumers.budget_doc import write_budget

    fmt = _format(fmt, BUDGET_FORMATS)
    try:
        data = build_budget(conn, settings)
    except BudgetError as exc:
        raise ReportRefused(str(exc)) from None
    name = f"du-toan-kinh-phi-{data.as_of:%Y%m%d}.{fmt}"
    out = write_budget(data, fmt, workdir / name, settings.reports.issuer)
    return Built(Path(out), name, MEDIA_TYPES[fmt])


def workdir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="sohoa-web-")
