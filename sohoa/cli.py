"""The `sohoa` command. Component commands are loaded lazily from their own packages so the
site agent never imports Faust or psycopg, and each component owns its command code."""

from __future__ import annotations

import importlib
import json
import re
import sys
from pathlib import Path

import click

from sohoa import __version__
from sohoa.config import load_config
from sohoa.errors import ConfigError, ExitCode, SohoaError
from sohoa.logs import setup_logging

# command name -> "module:attribute" of a click.Command, imported only when used.
LAZY_COMMANDS: dict[str, str] = {
    "up": "infra.cli:up",
    "down": "infra.cli:down",
    "topics": "infra.cli:topics",
    "monitoring": "infra.cli:monitoring",
    "watch": "producers.cli:watch",
    "streams": "streams.cli:streams",
    "consume": "consumers.cli:consume",
    "status": "consumers.cli:status",
    "db": "consumers.cli:db",
    "campaign": "consumers.cli:campaign",
    "report": "consumers.cli:report",
    "reconcile": "consumers.cli:reconcile",
    "simulate": "producers.simulate:simulate",
    "metadata": "producers.metadata_cli:metadata",
    "sign": "deliver.cli:sign",
    "package": "deliver.cli:package",
    "handover": "deliver.cli:handover",
    "web": "web.cli:web",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(LAZY_COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None or cmd_name not in LAZY_COMMANDS:
            return cmd
        module, attr = LAZY_COMMANDS[cmd_name].split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if not missing or missing.split(".")[0] in OWN_PACKAGES:
                raise  # a bug in sohoa itself: its traceback, not advice to install
            return _unavailable(cmd_name, missing)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """One line per command, its description whole or cut between words, never inside a
        bracket (click's own cut stops at the limit, wherever it falls)."""
        commands = [(name, cmd) for name in self.list_commands(ctx)
                    if (cmd := self.get_command(ctx, name)) is not None and not cmd.hidden]
        if not commands:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in commands)
        with formatter.section("Commands"):
            formatter.write_dl([(name, short_help(cmd, limit)) for name, cmd in commands])

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SohoaError as exc:
            # A fault the person at the keyboard can fix: the message and its exit code,
            # never a traceback.
            click.echo(f"Lỗi: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except ModuleNotFoundError as exc:
            # Commands import their heavy libraries when they run (the site agent's install
            # has no psycopg, Faust…): a missing third-party one is an install step.
            missing = exc.name or ""
            if not missing or missing.split(".")[0] in OWN_PACKAGES:
                raise
            _say_install(ctx.invoked_subcommand or "", missing)
            ctx.exit(ExitCode.UNAVAILABLE)


def short_help(cmd: click.Command, limit: int) -> str:
    """The command's first paragraph if it fits ``limit``; else without its bracketed asides
    (the English gloss); else cut after a whole word outside any bracket, with "…"."""
    text = cmd.short_help or ""
    if not text:
        paragraphs = [p for p in (cmd.help or "").split("\n\n") if p.strip() != "\b"]
        text = " ".join(paragraphs[0].split()) if paragraphs else ""
    if len(text) <= limit:
        return text
    bare = re.sub(r"\s*\([^()]*\)", "", text).strip()
    if len(bare) <= limit:
        return bare
    out, depth = "", 0
    for word in bare.split():
        depth += word.count("(") - word.count(")")
        candidate = f"{out} {word}".strip()
        if len(candidate) + 1 > limit:
            break
        if depth == 0:
            out = candidate
    return out.rstrip(",;:") + "…"


# Long-running commands a supervisor runs: they log as configured, terminal or not.
SERVICES = frozenset({"watch", "streams", "consume", "web"})

# sohoa's own top-level packages: a module of these missing is a bug, never an install step.
OWN_PACKAGES = frozenset({"sohoa", "producers", "streams", "consumers", "infra", "deliver",
                          "web", "bench"})


def _unavailable(name: str, missing: str) -> click.Command:
    @click.command(name, help=f"(không dùng được: thiếu {missing})", add_help_option=False,
                   context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def cmd(args: tuple[str, ...]) -> None:
        _say_install(name, missing)
        sys.exit(ExitCode.UNAVAILABLE)
    return cmd


def _say_install(name: str, missing: str) -> None:
    click.echo(
        f"Lệnh '{name}' cần gói chưa cài: {missing}. Lệnh này chạy ở máy chủ trung tâm; cài "
        f"bằng: pip install '.[central]' trong thư mục mã nguồn sohoa (máy quét chỉ cần "
        f"'.[site]' và lệnh 'sohoa watch'). (command '{name}' needs the third-party "
        f"package {missing}: install sohoa's central extra)", err=True)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
              envvar="SOHOA_CONFIG", help="TOML config file (default ./sohoa.toml if present).")
@click.version_option(__version__, prog_name="sohoa")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None) -> None:
    """sohoa — số hóa tài liệu lưu trữ: theo dõi, kiểm tra và đếm từng trang quét.

    \b
    Bắt đầu nhanh (quick start):
      sohoa up            khởi động Kafka, PostgreSQL và các thành phần trên máy này
      sohoa status        tiến độ theo điểm số hóa và theo hồ sơ
      sohoa down          dừng tất cả

    Settings come from --config / $SOHOA_CONFIG / ./sohoa.toml and SOHOA_* environment
    variables (nested with '__', e.g. SOHOA_KAFKA__BOOTSTRAP=host:9092); see `sohoa config show`.
    """
    try:
        settings = load_config(config_path)
    except FileNotFoundError as exc:
        raise click.ClickException(f"Không tìm thấy tệp cấu hình: {exc}") from None
    except ConfigError as exc:
        click.echo(f"Lỗi cấu hình: {exc}", err=True)
        ctx.exit(exc.exit_code)
    setup_logging(settings.logging.level, settings.logging.json_format,
                  interactive=ctx.invoked_subcommand not in SERVICES)
    ctx.obj = settings


@main.group()
def config() -> None:
    """Cấu hình hiệu lực (effective configuration)."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of TOML.")
@click.pass_obj
def config_show(settings, as_json: bool) -> None:
    """Print the effective configuration, secrets masked."""
    data = settings.masked()
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    import tomli_w

    click.echo(tomli_w.dumps(_drop_none(data)))


def _drop_none(value):
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


@main.group()
def schema() -> None:
    """Hợp đồng sự kiện (event contract)."""


@schema.command("export")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
def schema_export(directory: Path) -> None:
    """Write one JSON Schema file per event into DIRECTORY, for scanner vendors' software."""
    from sohoa.events import export_schemas

    for path in export_schemas(directory):
        click.echo(str(path))


@schema.command("validate")
@click.argument("file", type=click.File("rb"), default="-")
def schema_validate(file) -> None:
    """Validate JSON events (one per line) from FILE or stdin; exit 1 on the first bad one."""
    from sohoa.events import InvalidEvent, parse_event

    for n, line in enumerate(file, 1):
        if not line.strip():
            continue
        try:
            ev = parse_event(line)
        except InvalidEvent as exc:
            click.echo(f"dòng {n}: không hợp lệ — {exc.reason}", err=True)
            sys.exit(ExitCode.ERROR)
        click.echo(f"dòng {n}: {ev.NAME} hợp lệ")


if __name__ == "__main__":
    main()
