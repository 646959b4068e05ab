"""Commands of the progress store: consume, status, db, campaign, report, reconcile."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from datetime import date, datetime
from pathlib import Path
from typing import overload

import click

from sohoa.errors import ExitCode

log = logging.getLogger(__name__)


def _settings(ctx: click.Context):
    from sohoa.config import load_config

    obj = ctx.find_root().obj
    return obj if obj is not None else load_config()


def _connect(settings, *, reader: bool = False, owner: bool = False):
    import psycopg

    from consumers.db import connect

    try:
        return connect(settings.postgres, autocommit=True, reader=reader, owner=owner)
    except psycopg.OperationalError as exc:
        raise click.ClickException(
            f"Không kết nối được PostgreSQL ({str(exc).strip().splitlines()[0]}). "
            "Kiểm tra postgres.dsn / SOHOA_POSTGRES__DSN và `sohoa up`.") from None


@contextlib.contextmanager
def _schema_needed():
    """A database without the tables gets a sentence, not a traceback."""
    import psycopg

    try:
        yield
    except psycopg.errors.UndefinedTable as exc:
        raise click.ClickException(
            "Cơ sở dữ liệu chưa có bảng tiến độ: chạy `sohoa db migrate` trước "
            f"(schema missing: {str(exc).strip().splitlines()[0]})") from None


def _busy(message: str):
    """A spinner on an interactive terminal (reports over thousands of sites take seconds)."""
    if not sys.stderr.isatty():
        return contextlib.nullcontext()
    from rich.console import Console

    return Console(stderr=True).status(message)


# --- consume --------------------------------------------------------------------------------

@click.command("consume")
@click.option("--migrate/--no-migrate", default=True, show_default=True,
              help="Apply pending database migrations before consuming.")
@click.pass_context
def consume(ctx: click.Context, migrate: bool) -> None:
    """Ghi tiến độ vào PostgreSQL (progress store consumer).

    Reads the site-events, file-events and dead-letters topics and applies every event to
    PostgreSQL exactly once (batch + offsets in one transaction); serves /metrics on
    consumer.metrics_host:consumer.metrics_port.
    """
    from consumers.consumer import ProgressConsumer
    from consumers.db import MigrationsPending, connect_retry
    from consumers.db import migrate as run_migrations
    from consumers.metrics import ConsumerMetrics, start_metrics_server

    settings = _settings(ctx)
    if migrate:
        # As the owner when postgres.owner_dsn is set; as the writer a current schema is a
        # no-op and a stale one a clear error (`sohoa up` migrates before starting this).
        with connect_retry(settings.postgres, deadline_s=120, owner=True) as conn:
            try:
                run_migrations(conn)
            except MigrationsPending as exc:
                raise click.ClickException(str(exc)) from None
    metrics = ConsumerMetrics()
    server = start_metrics_server(settings, metrics)
    pc = ProgressConsumer(settings, metrics)
    pc.install_signal_handlers()
    try:
        pc.run()
    finally:
        server.shutdown()


# --- status ---------------------------------------------------------------------------------

@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="JSON: {sites: [...], files: [...]}.")
@click.option("--site", help="Only this site: its id or its name in the plan.")
@click.option("--state", help="Only files in this state: scanning, accepted, needs_rescan… "
                              "or its Vietnamese name (cần quét lại…).")
@click.option("--files/--no-files", "with_files", default=None,
              help="List files too (default: with --json or --site).")
@click.pass_context
def status(ctx: click.Context, as_json: bool, site: str | None, state: str | None,
           with_files: bool | None) -> None:
    """Tiến độ theo điểm số hóa và theo hồ sơ (progress per site and per file).

    The table takes the terminal's width: the columns that matter most first (site, pages,
    share, deadline, status), more as the width allows, one block per site when narrow.
    """
    from consumers.status import collect, render

    settings = _settings(ctx)
    state = _file_state(state)
    if with_files is None:
        with_files = as_json or site is not None or state is not None
    with _schema_needed(), _connect(settings, reader=True) as conn:
        site = _site_id(conn, site)
        data = collect(conn, settings.campaign, site=site, state=state, with_files=with_files)
        if as_json:
            click.echo(json.dumps(data, ensure_ascii=False, indent=2))
            return
        from rich.console import Console

        from consumers.progress import load_sites

        render(data, load_sites(conn, settings.campaign, site=site), Console())


def _known(items: list[str], what: str, more_hint: str) -> str:
    shown = items[:40]
    text = ", ".join(shown) if shown else "(chưa có)"
    if len(items) > len(shown):
        text += f" … và {len(items) - len(shown)} {what} khác ({more_hint})"
    return text


@overload
def _site_id(conn, site: str) -> str: ...


@overload
def _site_id(conn, site: None) -> None: ...


def _site_id(conn, site: str | None) -> str | None:
    """A site given by its id or its plan name (case and accents aside); an unknown one is a
    usage error listing the known sites."""
    if site is None:
        return None
    from sohoa.naming import fold

    rows = conn.execute("SELECT site_id, name FROM sites ORDER BY site_id").fetchall()
    if any(sid == site for sid, _ in rows):
        return site
    found = {sid for sid, name in rows if fold(site) in (fold(sid), fold(name or ""))}
    if len(found) == 1:
        return found.pop()
    known = [f"{sid} ({name})" if name else sid for sid, name in rows]
    raise click.BadParameter(
        f"không có điểm {site!r}" + (" (trùng tên nhiều điểm)" if found else "")
        + f". Các điểm: {_known(known, 'điểm', 'sohoa campaign show')}", param_hint="--site")


def _file_state(state: str | None) -> str | None:
    if state is None:
        return None
    from consumers.status import FILE_STATES, STATE_VI
    from sohoa.naming import fold

    for key in FILE_STATES:
        if fold(state) in (key, fold(STATE_VI[key])):
            return key
    known = ", ".join(f"{k} ({STATE_VI[k]})" for k in FILE_STATES)
    raise click.BadParameter(f"không có trạng thái {state!r}. Các trạng thái: {known}",
                             param_hint="--state")


# --- db -------------------------------------------------------------------------------------

@click.group("db")
def db() -> None:
    """Cơ sở dữ liệu tiến độ (progress database)."""


@db.command("migrate")
@click.pass_context
def db_migrate(ctx: click.Context) -> None:
    """Apply pending numbered migrations (idempotent, under an advisory lock).

    Runs as the owner (postgres.owner_dsn, else postgres.dsn). Creates the roles sohoa_writer
    (consumer) and sohoa_reader (status, reports, Grafana) when the owner may, and grants each
    what it needs (consumers/migrations/grants.sql). `sohoa up` gives the local stack's roles
    passwords; elsewhere set them (ALTER ROLE … PASSWORD) or use certificate auth.
    """
    from consumers.db import MigrationsPending, migrate

    settings = _settings(ctx)
    with _connect(settings, owner=True) as conn:
        try:
            applied = migrate(conn)
        except MigrationsPending as exc:
            raise click.ClickException(str(exc)) from None
    if applied:
        for name in applied:
            click.echo(f"đã áp dụng {name}")
    else:
        click.echo("cơ sở dữ liệu đã ở phiên bản mới nhất (nothing to apply)")


# --- campaign -------------------------------------------------------------------------------

@click.group("campaign")
def campaign() -> None:
    """Kế hoạch số hóa (campaign plans)."""


@campaign.command("import")
@click.argument("plan", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--name", "campaign_name", help="Campaign name (default: campaign.name).")
@click.option("--start", "start_date", help="Campaign start date dd/mm/yyyy or yyyy-mm-dd.")
@click.option("--dry-run", is_flag=True, help="Validate only.")
@click.pass_context
def campaign_import(ctx: click.Context, plan: Path, campaign_name: str | None,
                    start_date: str | None, dry_run: bool) -> None:
    """Nhập kế hoạch từ PLAN.xlsx hoặc PLAN.csv (import a campaign plan).

    \b
    Columns (header row, any order; CSV in UTF-8, comma or semicolon):
      site_id       mã điểm (slug: a-z 0-9 - _), required
      unit          đơn vị, required
      contractor    nhà thầu (may be empty)
      target_pages  số trang kế hoạch, integer >= 0, required
      target_files  số hồ sơ kế hoạch, integer >= 0, required
      deadline      hạn hoàn thành, dd/mm/yyyy or yyyy-mm-dd, required
    optional:
      name          tên điểm
      timezone      e.g. Asia/Ho_Chi_Minh (default campaign.timezone)
      work_start    giờ bắt đầu làm việc HH:MM (default campaign.work_start)
      work_end      giờ kết thúc HH:MM (default campaign.work_end)
    Errors name the row and column; nothing is written unless every row is valid.
    Re-importing updates the sites in place (pages already counted are kept).
    """
    from consumers.campaign import PlanError, import_plan, read_plan

    settings = _settings(ctx)
    try:
        rows = read_plan(plan, settings.campaign)
    except PlanError as exc:
        _invalid("Kế hoạch không hợp lệ (invalid plan):", exc.errors)
    if dry_run:
        click.echo(f"hợp lệ: {len(rows)} điểm (valid, nothing written)")
        return
    start = _parse_date_opt(start_date)
    with _schema_needed(), _connect(settings) as conn:
        n = import_plan(conn, rows, name=campaign_name or settings.campaign.name,
                        source=str(plan), start_date=start,
                        workdays=list(settings.campaign.workdays))
    click.echo(f"đã nhập {n} điểm từ {plan.name} (imported {n} sites)")


def _invalid(title: str, errors: list[str]) -> None:
    """A file the office typed is refused: every bad cell listed, exit 2, nothing written."""
    click.echo(title, err=True)
    for e in errors:
        click.echo(f"  - {e}", err=True)
    sys.exit(ExitCode.USAGE)


def _parse_date_opt(value: str | None) -> date | None:
    if not value:
        return None
    for fmt in ("%d/%m/%Y", "%Y-%m-%d"):
        try:
            return datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    raise click.BadParameter(f"ngày không hợp lệ: {value!r} (dd/mm/yyyy)")


@campaign.command("show")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def campaign_show(ctx: click.Context, as_json: bool) -> None:
    """Các điểm trong kế hoạch (sites in the plan, with targets and deadlines)."""
    from consumers.campaign import show_rows

    settings = _settings(ctx)
    with _schema_needed(), _connect(settings, reader=True) as conn:
        rows = show_rows(conn)
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    from consumers.vi import num

    t = Table(title="Kế hoạch số hóa (campaign plan)")
    for col in ("Chiến dịch", "Điểm", "Tên", "Đơn vị", "Nhà thầu", "Trang KH", "Hồ sơ KH",
                "Hạn", "Giờ làm việc", "Ghi chú"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["campaign"] or "—", r["site_id"], r["name"] or "—", r["unit"] or "—",
                  r["contractor"] or "—",
                  num(r["target_pages"]) if r["target_pages"] is not None else "—",
                  num(r["target_files"]) if r["target_files"] is not None else "—",
                  r["deadline"].strftime("%d/%m/%Y") if r["deadline"] else "—",
                  f"{r['work_start']:%H:%M}–{r['work_end']:%H:%M}",
                  "tự tạo, chưa có kế hoạch" if r["auto_created"] else "")
    Console().print(t)


@campaign.group("calendar")
def campaign_calendar() -> None:
    """Ngày nghỉ bù, ngày làm bù (one-off days off and make-up working days)."""


@campaign_calendar.command("import")
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--replace", is_flag=True, help="Replace the stored calendar instead of adding.")
@click.option("--dry-run", is_flag=True, help="Validate only.")
@click.pass_context
def calendar_import(ctx: click.Context, file: Path, replace: bool, dry_run: bool) -> None:
    """Nhập lịch nghỉ bù / làm bù từ CSV hoặc XLSX.

    \b
    Columns (header row, any order; Vietnamese headers accepted):
      ngày (day)        dd/mm/yyyy or yyyy-mm-dd, required
      loại (kind)       nghỉ / nghỉ bù (day off) or làm bù / làm việc (working day)
      mã điểm (site_id) one site of the plan            } neither: the whole province
      đơn vị (unit)     every site of a unit of the plan }
      ghi chú (note)    optional
    Errors name the row and column (dòng N, cột X); nothing is written unless every row is
    valid. Forecasts, reports and the alerts' gauges follow the calendar at once.
    """
    from consumers.calendar_days import CalendarError, import_calendar, plan_sites, read_calendar

    settings = _settings(ctx)
    with _schema_needed(), _connect(settings) as conn:
        try:
            entries = read_calendar(file, plan_sites(conn))
        except CalendarError as exc:
            _invalid("Lịch không hợp lệ (invalid calendar):", exc.errors)
        if dry_run:
            click.echo(f"hợp lệ: {len(entries)} ngày (valid, nothing written)")
            return
        n = import_calendar(conn, entries, source=str(file), replace=replace)
    click.echo(f"đã nhập {n} ngày từ {file.name} (imported {n} days)")


@campaign_calendar.command("show")
@click.pass_context
def calendar_show(ctx: click.Context) -> None:
    """Các ngày nghỉ bù, làm bù đã nhập."""
    from consumers.calendar_days import KIND_VI, show_rows

    settings = _settings(ctx)
    with _schema_needed(), _connect(settings, reader=True) as conn:
        rows = show_rows(conn)
    if not rows:
        click.echo("chưa có ngày nghỉ bù / làm bù nào")
    scope_vi = {"all": "toàn tỉnh", "unit": "đơn vị", "site": "điểm"}
    for day, kind, scope_kind, scope, note in rows:
        where = scope_vi[scope_kind] + (f" {scope}" if scope else "")
        click.echo(f"{day:%d/%m/%Y}  {KIND_VI[kind]:<12}  {where}" + (f"  — {note}" if note
                                                                      else ""))


# --- report ---------------------------------------------------------------------------------

@click.group("report")
def report() -> None:
    """Báo cáo (reports), tiếng Việt."""


REPORT_FORMATS = ["docx", "pdf", "xlsx", "csv"]


@report.command("monthly")
@click.option("--month", required=True, help="MM/YYYY or YYYY-MM, e.g. 03/2026")
@click.option("--format", "fmt", type=click.Choice(REPORT_FORMATS), default="docx",
              show_default=True, help="docx (editable), pdf, xlsx (typed cells) or csv (data).")
@click.option("--out", "out", type=click.Path(path_type=Path, dir_okay=False),
              help="Output file (default bao-cao-tien-do-YYYY-MM.<format>).")
@click.option("--date", "doc_date", help="Date of the document, dd/mm/yyyy (default today).")
@click.pass_context
def report_monthly(ctx: click.Context, month: str, fmt: str, out: Path | None,
                   doc_date: str | None) -> None:
    """Báo cáo tiến độ số hóa tài liệu lưu trữ tháng MM/YYYY.

    An official document of the issuing body ([reports.issuer] in the config: state form per
    Nghị định 30/2020/NĐ-CP or Party form per Hướng dẫn 36-HD/VPTW): figures, the at-risk
    sites with the pages per working day each now needs, Nơi nhận, signature; the table per
    unit and site and the chart in the appendix.
    """
    from consumers.monthly import build_monthly, parse_month
    from consumers.monthly_doc import write_monthly

    settings = _settings(ctx)
    try:
        year, mon = parse_month(month)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--month") from None
    signed = _parse_date_opt(doc_date)
    out = out or Path(f"bao-cao-tien-do-{year:04d}-{mon:02d}.{fmt}")
    with _schema_needed(), _busy("Đang tổng hợp số liệu…"), \
            _connect(settings, reader=True) as conn:
        data = build_monthly(conn, settings.campaign, year, mon)
    with _busy(f"Đang ghi {out.name}…"):
        write_monthly(data, fmt, out, settings.reports.issuer, signed)
    click.echo(f"đã ghi {out} ({len(data.planned_rows)} điểm trong kế hoạch"
               + (f", {len(data.unplanned_rows)} điểm ngoài kế hoạch" if data.unplanned_rows
                  else "") + ")")


@report.command("acceptance")
@click.option("--contractor", required=True,
              help="Nhà thầu as in the plan (case and diacritics ignored).")
@click.option("--from", "date_from", required=True, help="dd/mm/yyyy or yyyy-mm-dd")
@click.option("--to", "date_to", required=True, help="dd/mm/yyyy or yyyy-mm-dd (inclusive)")
@click.option("--format", "fmt", type=click.Choice(REPORT_FORMATS), default="docx",
              show_default=True)
@click.option("--out", "out", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--date", "doc_date", help="Date of the record, dd/mm/yyyy (default today).")
@click.pass_context
def report_acceptance(ctx: click.Context, contractor: str, date_from: str, date_to: str,
                      fmt: str, out: Path | None, doc_date: str | None) -> None:
    """Biên bản nghiệm thu khối lượng số hóa (basis for payment).

    Accepted pages by size class and A4 equivalents, their value at the unit prices of the
    contractor's contract ([[reports.contracts]] in the config), pages not accepted with
    their reasons, signature blocks of both parties. An unknown contractor is an error that
    lists the plan's contractors.
    """
    from consumers.acceptance import (
        UnknownContractor,
        build_acceptance,
        contract_for,
        match_contractor,
    )
    from consumers.acceptance_doc import write_acceptance

    settings = _settings(ctx)
    d1, d2 = _parse_date_opt(date_from), _parse_date_opt(date_to)
    assert d1 is not None and d2 is not None
    if d2 < d1:
        raise click.BadParameter("--to trước --from", param_hint="--to")
    with _schema_needed(), _connect(settings, reader=True) as conn:
        try:
            names = match_contractor(conn, contractor)
        except UnknownContractor as exc:
            raise click.BadParameter(str(exc), param_hint="--contractor") from None
        contract = contract_for(settings.reports, names[0])
        data = build_acceptance(conn, names, d1, d2, timezone=settings.campaign.timezone,
                                tolerance=settings.reports.page_size_tolerance,
                                contract=contract)
    slug = re.sub(r"[^\w]+", "-", names[0]).strip("-") or "nha-thau"
    out = out or Path(f"nghiem-thu-{slug}-{d1:%Y%m%d}-{d2:%Y%m%d}.{fmt}")
    write_acceptance(data, fmt, out, settings.reports.issuer, _parse_date_opt(doc_date))
    if contract is None:
        click.echo(f"cảnh báo: chưa có hợp đồng của {names[0]!r} trong cấu hình "
                   "(reports.contracts): biên bản không có đơn giá, thành tiền", err=True)
    click.echo(f"đã ghi {out} ({len(data.rows)} điểm)")


@report.command("budget")
@click.option("--format", "fmt", type=click.Choice(["docx", "pdf", "xlsx"]), default="xlsx",
              show_default=True)
@click.option("--unit", "units", multiple=True,
              help="Only this unit of the plan (repeatable; case and diacritics ignored).")
@click.option("--out", "out", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--date", "doc_date", help="Date of the document, dd/mm/yyyy (default today).")
@click.pass_context
def report_budget(ctx: click.Context, fmt: str, units: tuple[str, ...], out: Path | None,
                  doc_date: str | None) -> None:
    """Dự toán kinh phí số hóa (budget estimate of the remaining work).

    Per unit and site: the plan's remaining pages, split by size class in the mix of the pages
    scanned so far, priced at the contract's unit prices (else reports.budget_unit_prices), with
    the working days left and the pages per day they need; the basis of every figure is stated.
    """
    from consumers.budget import BudgetError, build_budget
    from consumers.budget_doc import write_budget

    settings = _settings(ctx)
    with _schema_needed(), _connect(settings, reader=True) as conn:
        try:
            data = build_budget(conn, settings, units=list(units))
        except BudgetError as exc:
            raise click.ClickException(str(exc)) from None
    out = out or Path(f"du-toan-kinh-phi-{data.as_of:%Y%m%d}.{fmt}")
    write_budget(data, fmt, out, settings.reports.issuer, _parse_date_opt(doc_date))
    click.echo(f"đã ghi {out} ({len(data.rows)} điểm)")


# --- reconcile ------------------------------------------------------------------------------

@click.command("reconcile")
@click.option("--site", required=True, help="Site id or its name in the plan.")
@click.option("--root", required=True, type=click.Path(path_type=Path, exists=True,
                                                       file_okay=False),
              help="The site's hot-folder root as seen from here.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def reconcile(ctx: click.Context, site: str, root: Path, as_json: bool) -> None:
    """Đối chiếu trang trên đĩa với cơ sở dữ liệu (disk vs. database).

    Lists every document missing (in the database, not on disk), extra (on disk, not in the
    database) or altered (SHA-256 differs), with its fonds, file and pages; paths are compared
    as spelled on disk; with [store] set, every document sent as s3:// must be in the object
    store as recorded (not stored: listed; overwritten or hidden by a delete marker:
    listed as tampered). Exit code 0 only when they agree. Read-only;
    symlinks are never followed, FIFOs/sockets/devices never read, files over
    watcher.max_file_bytes never hashed (listed as skipped).
    """
    from consumers.reconcile import reconcile_site

    settings = _settings(ctx)
    store = None
    if settings.store.enabled:
        from sohoa.objectstore import ObjectStore

        store = ObjectStore(settings.store)
    with _schema_needed(), _connect(settings, reader=True) as conn:
        site = _site_id(conn, site)
        res = reconcile_site(conn, settings.watcher, site, root, store=store)
    if as_json:
        click.echo(json.dumps(res.to_json(), ensure_ascii=False, indent=2))
    else:
        for label, items in (("thiếu trên đĩa (missing)", res.missing),
                             ("thừa, chưa có trong CSDL (extra)", res.extra),
                             ("khác nội dung (altered)", res.altered),
                             ("chưa có trong kho lưu trữ (not stored)", res.not_stored),
                             ("bị ghi đè hoặc che trong kho lưu trữ (tampered)",
                              res.tampered),
                             ("bỏ qua (skipped)", res.skipped)):
            for item in items:
                click.echo(f"{label}: {item.describe()}")
        click.echo(f"{site}: {res.matched} trang khớp ({res.matched_documents} văn bản), "
                   f"{len(res.missing)} văn bản thiếu, {len(res.extra)} tệp thừa, "
                   f"{len(res.altered)} văn bản khác, {len(res.skipped)} bỏ qua")
        if res.stored_documents is not None:
            click.echo(f"kho lưu trữ: {res.stored_documents} văn bản có trong kho, "
                       f"{len(res.not_stored)} thiếu, {len(res.tampered)} bị can thiệp, "
                       f"{res.unreferenced_objects} đối tượng "
                       f"không còn trang nào trỏ tới (bản cũ, đã xóa)")
    sys.exit(ExitCode.OK if res.ok else ExitCode.ERROR)
