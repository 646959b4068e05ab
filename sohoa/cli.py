"""The `sohoa` command. Component commands are loaded lazily from their own packages so the
site agent never imports Faust or psycopg, and each component owns its command code."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import click

from sohoa import __version__
from sohoa.config import load_config
from sohoa.errors import ConfigError, ExitCode
from sohoa.logs import setup_logging

# command name -> "module:attribute" of a click.Command, imported only when used.
LAZY_COMMANDS: dict[str, str] = {
    "up": "infra.cli:up",
    "down": "infra.cli:down",
    "topics": "infra.cli:topics",
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


# sohoa's own top-level packages: a module of these missing is a bug, never an install step.
OWN_PACKAGES = frozenset({"sohoa", "producers", "streams", "consumers", "infra", "bench"})


def _unavailable(name: str, missing: str) -> click.Command:
    @click.command(name, help=f"(không dùng được: thiếu {missing})", add_help_option=False,
                   context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def cmd(args: tuple[str, ...]) -> None:
        click.echo(
            f"Lệnh '{name}' cần gói chưa cài: {missing}. Trên máy chủ trung tâm, cài bằng: "
            f"pip install -e '.[central]' trong thư mục mã nguồn sohoa (máy quét chỉ cần "
            f"'.[site]' và lệnh 'sohoa watch'). (command '{name}' needs the third-party "
            f"package {missing}: install sohoa's central extra)", err=True)
        sys.exit(ExitCode.UNAVAILABLE)
    return cmd


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
    setup_logging(settings.logging.level, settings.logging.json_format)
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
            sys.exit(1)
        click.echo(f"dòng {n}: {ev.NAME} hợp lệ")


if __name__ == "__main__":
    main()
