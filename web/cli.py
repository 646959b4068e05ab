"""`sohoa web` (serve the province page) and `sohoa web hash-password`."""

from __future__ import annotations

import logging

import click

from sohoa.errors import ExitCode, SohoaError

log = logging.getLogger(__name__)


def _settings(ctx: click.Context):
    from sohoa.config import load_config

    obj = ctx.find_root().obj
    return obj if obj is not None else load_config()


@click.group("web", invoke_without_command=True)
@click.option("--host", help="Địa chỉ lắng nghe (default web.host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), help="Cổng (default web.port, 18080).")
@click.pass_context
def web(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Trang tiến độ cho văn phòng tỉnh (read-only web page for the province office).

    \b
    Serves, read-only as the reader role (postgres.reader_dsn): progress by unit and site,
    the sites behind schedule with the pages per day each needs, each site's files with
    their rescan reasons, report downloads, a file lookup and the alerts' runbook (/so-tay).
    Binds web.host (127.0.0.1) unless told otherwise.
    Access: web.auth = "login" (web.users: name = password hash, made by
    `sohoa web hash-password`) or "proxy" (a reverse proxy on web.trusted_proxies sets
    web.proxy_user_header, default X-Remote-User).
    """
    if ctx.invoked_subcommand is not None:
        return
    from waitress import serve

    from web.app import create_app

    settings = _settings(ctx)
    cfg = settings.web
    if cfg.auth == "login" and not cfg.users:
        raise SohoaError(
            "Chưa có tài khoản nào: thêm vào sohoa.toml mục [web.users], ví dụ\n"
            "  [web.users]\n  van-phong = \"<chuỗi của `sohoa web hash-password`>\"\n"
            "hoặc dùng cổng xác thực: web.auth = \"proxy\". (no users configured)",
            ExitCode.CONFIG)
    host = host or cfg.host
    port = port or cfg.port
    app = create_app(settings)
    log.info("sohoa web listening", extra={"host": host, "port": port, "auth": cfg.auth})
    click.echo(f"sohoa web: http://{host}:{port}/ (xác thực: {cfg.auth})", err=True)
    serve(app, host=host, port=port, threads=cfg.threads, ident="sohoa",
          clear_untrusted_proxy_headers=True)


@web.command("hash-password")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from the first line of stdin (scripts).")
@click.argument("user", required=False)
def hash_password(password_stdin: bool, user: str | None) -> None:
    """In ra chuỗi băm mật khẩu cho mục [web.users] (prints a password hash for web.users).

    The password is asked twice without echo (or read from stdin); only its scrypt hash is
    printed, as a line to paste under [web.users] in sohoa.toml.
    """
    import sys

    from web.auth import hash_password as make

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Mật khẩu", hide_input=True, confirmation_prompt="Nhập lại",
                                err=True)
    if len(password) < 10:
        raise SohoaError("Mật khẩu cần ít nhất 10 ký tự.", ExitCode.DATA)
    hashed = make(password)
    click.echo(f'{user} = "{hashed}"' if user else hashed)
