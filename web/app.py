"""The Flask application of `sohoa web`: the login or proxy gate, the database connection of
a request (the reader role, read-only) and the template filters (vi-VN numbers and dates)."""

from __future__ import annotations

import logging
import secrets
import time
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from flask import Flask, abort, g, redirect, render_template, request, session, url_for

from consumers import vi
from sohoa.config import Settings
from web import auth

log = logging.getLogger(__name__)

PUBLIC = {"login", "static", "health"}


def create_app(settings: Settings) -> Flask:
    app = Flask(__name__)
    cfg = settings.web
    secret = cfg.session_secret.get_secret_value() if cfg.session_secret else None
    if secret is None and cfg.auth == "login":
        log.warning("web.session_secret not set: sessions end when sohoa web restarts")
    app.config.update(
        SECRET_KEY=secret or secrets.token_hex(32),
        SESSION_COOKIE_NAME="sohoa_phien",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=cfg.cookie_secure,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=cfg.session_hours),
        MAX_CONTENT_LENGTH=64 * 1024,  # the login form is the only body the page takes
    )
    app.extensions["sohoa"] = settings
    throttle = auth.LoginThrottle(cfg.login_attempts, cfg.login_lockout_s)
    tz = ZoneInfo(settings.campaign.timezone)

    def num(v: Any, d: int = 0) -> str:
        return "—" if v is None else vi.num(v, d)

    app.jinja_env.filters.update({
        "num": num,
        "pct": lambda v: "—" if v is None else vi.pct(v),
        "dmy": lambda v: vi.dmy(v) or "—",
        "dt": lambda v: "—" if v is None else v.astimezone(tz).strftime("%d/%m/%Y %H:%M"),
    })

    @app.before_request
    def gate() -> Any:
        if request.endpoint in PUBLIC or request.endpoint is None:
            return None
        if cfg.auth == "proxy":
            user, why = auth.proxy_user(cfg, request.remote_addr, request.headers)
            if user is None:
                return render_template("denied.html", why=why), 403
            g.user = user
            return None
        user = session.get("user")
        if user and user in cfg.users and session.get("until", 0) > time.time():
            g.user = user
            return None
        session.clear()
        return redirect(url_for("login", next=request.full_path.rstrip("?")))

    @app.after_request
    def headers(resp):
        resp.headers.setdefault("Cache-Control", "no-store")
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Referrer-Policy"] = "same-origin"
        resp.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'none'; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
        return resp

    @app.teardown_request
    def close_db(_exc: BaseException | None) -> None:
        conn = g.pop("db", None)
        if conn is not None:
            conn.close()

    @app.context_processor
    def common() -> dict[str, Any]:
        if "csrf" not in session:
            session["csrf"] = auth.new_token()
        return {"user": g.get("user"), "csrf": session["csrf"],
                "login_mode": cfg.auth == "login", "campaign_name": settings.campaign.name,
                "today": datetime.now(tz).date()}

    @app.route("/dang-nhap", methods=["GET", "POST"], endpoint="login")
    def login() -> Any:
        if cfg.auth != "login":
            return redirect(url_for("pages.overview"))
        target = _safe_next(request.values.get("next"))
        error = None
        if request.method == "POST":
            if not auth.same_token(request.form.get("csrf"), session.get("csrf")):
                abort(400)
            name = request.form.get("ten", "").strip()
            address = request.remote_addr or ""
            if throttle.locked(name, address):
                error = "Sai quá nhiều lần: thử lại sau ít phút."
            elif auth.check_login(cfg, name, request.form.get("mat-khau", "")):
                throttle.succeeded(name, address)
                session.clear()
                session.permanent = True
                session.update(user=name, csrf=auth.new_token(),
                               until=time.time() + cfg.session_hours * 3600)
                log.info("web login", extra={"user": name, "address": address})
                return redirect(target)
            else:
                throttle.failed(name, address)
                log.warning("web login refused", extra={"user": name, "address": address})
                error = "Tên đăng nhập hoặc mật khẩu không đúng."
        return render_template("login.html", error=error, next=target), (401 if error else 200)

    @app.post("/dang-xuat")
    def logout() -> Any:
        if not auth.same_token(request.form.get("csrf"), session.get("csrf")):
            abort(400)
        session.clear()
        return redirect(url_for("login"))

    @app.get("/suc-khoe", endpoint="health")
    def health() -> Any:
        return {"status": "ok"}

    from web.views import pages

    app.register_blueprint(pages)
    app.register_error_handler(404, lambda e: (render_template(
        "message.html", title="Không tìm thấy", message=e.description), 404))
    app.register_error_handler(400, lambda e: (render_template(
        "message.html", title="Yêu cầu không hợp lệ", message=e.description), 400))

    import psycopg

    @app.errorhandler(psycopg.OperationalError)
    def store_down(exc: psycopg.OperationalError) -> Any:
        log.warning("progress store unreachable", extra={"error": str(exc).strip()[:200]})
        return render_template(
            "message.html", title="Chưa đọc được số liệu",
            message="Không kết nối được cơ sở dữ liệu tiến độ; thử lại sau ít phút. Nếu vẫn "
                    "lỗi, báo bộ phận vận hành (postgres.reader_dsn)."), 503
    return app


def _safe_next(target: str | None) -> str:
    """Only a path of this site: never an address elsewhere (an open redirect)."""
    if not target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


def settings() -> Settings:
    from flask import current_app

    return current_app.extensions["sohoa"]


def db():
    """The request's connection: the reader role, every transaction read-only."""
    if "db" not in g:
        from consumers.db import connect

        conn = connect(settings().postgres, reader=True, autocommit=True)
        conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        g.db = conn
    return g.db


def parse_day(text: str | None) -> date | None:
    """dd/mm/yyyy (typed) or yyyy-mm-dd (a date field)."""
    for fmt in ("%d/%m/%Y", "%Y-%m-%d"):
        try:
            return datetime.strptime((text or "").strip(), fmt).date()
        except ValueError:
            continue
    return None
