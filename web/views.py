"""The pages: progress by unit and site, the sites behind schedule, a site's files with their
rescan reasons, a file, the file lookup, report downloads and the runbook."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Blueprint, abort, render_template, request, send_file

from consumers.status import FILE_STATES, STATE_VI
from web import downloads, queries
from web.app import db, parse_day, settings

pages = Blueprint("pages", __name__)


@pages.get("/")
def overview() -> Any:
    data = queries.overview(db(), settings().campaign)
    return render_template("overview.html", data=data, name=queries.site_name)


@pages.get("/cham-tien-do")
def at_risk() -> Any:
    data = queries.overview(db(), settings().campaign)
    return render_template("at_risk.html", sites=data.at_risk, name=queries.site_name)


@pages.get("/diem/<site_id>")
def site(site_id: str) -> Any:
    conn = db()
    s = queries.one_site(conn, settings().campaign, site_id)
    if s is None:
        abort(404, f"Không có điểm số hóa '{site_id}'.")
    state = request.args.get("trang-thai") or None
    if state is not None and state not in FILE_STATES:
        abort(400, f"Trạng thái không hợp lệ: {state}")
    page = max(1, request.args.get("trang", 1, type=int) or 1)
    per_page = settings().web.files_per_page
    files = queries.site_files(conn, site_id, state=state, page=page, per_page=per_page + 1)
    counts = queries.files_by_state(conn, site_id)
    return render_template(
        "site.html", s=s, name=queries.site_name(s), files=files[:per_page],
        more=len(files) > per_page, page=page, state=state, counts=counts,
        states=[(k, STATE_VI[k]) for k in FILE_STATES], state_vi=STATE_VI)


@pages.get("/diem/<site_id>/ho-so")
def file(site_id: str) -> Any:
    fonds = request.args.get("phong", "")
    code = request.args.get("ma", "")
    if not code:
        abort(400, "Thiếu mã hồ sơ.")
    conn = db()
    f = queries.file_detail(conn, site_id, fonds, code)
    if f is None:
        abort(404, f"Không có hồ sơ {fonds + '/' if fonds else ''}{code} tại điểm {site_id}.")
    s = queries.one_site(conn, settings().campaign, site_id)
    return render_template("file.html", f=f, site_name=queries.site_name(s) if s else site_id)


@pages.get("/tra-cuu")
def lookup() -> Any:
    fonds = request.args.get("phong", "").strip()
    code = request.args.get("ma", "").strip()
    rows = queries.lookup(db(), fonds or None, code) if code else None
    return render_template("lookup.html", fonds=fonds, code=code, rows=rows)


@pages.get("/bao-cao")
def reports() -> Any:
    conn = db()
    return render_template("reports.html", months=queries.months_with_pages(conn),
                           contractors=queries.contractors(conn),
                           monthly_formats=downloads.MONTHLY_FORMATS,
                           acceptance_formats=downloads.ACCEPTANCE_FORMATS,
                           budget_formats=downloads.BUDGET_FORMATS)


@pages.get("/bao-cao/tien-do")
def monthly_report() -> Any:
    return _download(lambda tmp: downloads.monthly(
        db(), settings(), request.args.get("thang", ""), request.args.get("dinh-dang", "docx"),
        tmp))


@pages.get("/bao-cao/nghiem-thu")
def acceptance_report() -> Any:
    contractor = request.args.get("nha-thau", "").strip()
    d1, d2 = parse_day(request.args.get("tu")), parse_day(request.args.get("den"))
    if not contractor or d1 is None or d2 is None:
        abort(400, "Cần nhà thầu, ngày bắt đầu và ngày kết thúc (dd/mm/yyyy).")
    return _download(lambda tmp: downloads.acceptance(
        db(), settings(), contractor, d1, d2, request.args.get("dinh-dang", "docx"), tmp))


@pages.get("/bao-cao/du-toan")
def budget_report() -> Any:
    return _download(lambda tmp: downloads.budget(
        db(), settings(), request.args.get("dinh-dang", "xlsx"), tmp))


def _download(build: Callable[[Path], downloads.Built]) -> Any:
    """Build a document in a temp folder and send it (read into memory: the folder goes when
    the request returns); a request the reports refuse is a 400 with their sentence."""
    with downloads.workdir() as tmp:
        try:
            built = build(Path(tmp))
        except downloads.ReportRefused as exc:
            abort(400, str(exc))
        data = built.path.read_bytes()
    return send_file(io.BytesIO(data), mimetype=built.media_type, as_attachment=True,
                     download_name=built.download_name)


@pages.get("/so-tay")
def runbook() -> Any:
    from web.runbook import RUNBOOK, render

    if not RUNBOOK.exists():
        abort(404, "Không tìm thấy docs/runbook.md trong thư mục cài đặt sohoa.")
    title, body, toc = render()
    return render_template("runbook.html", title=title, body=body, toc=toc)
