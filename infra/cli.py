"""`sohoa up`, `sohoa down`, `sohoa topics`: the local stack for one machine."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Protocol

import click

from sohoa.config import Settings, StackConfig, load_config
from sohoa.errors import ExitCode

log = logging.getLogger(__name__)

_DEFAULT_STATE = StackConfig().state_dir


class _Node(Protocol):
    """A server of the local stack (Kafka, PostgreSQL, the object store)."""

    def running(self) -> bool: ...

    def stop(self) -> object: ...


def _settings(ctx: click.Context) -> Settings:
    obj = ctx.find_root().obj
    return obj if obj is not None else load_config()


def _config_path(ctx: click.Context) -> Path | None:
    return ctx.find_root().params.get("config_path")


def _local_settings(settings: Settings, state_dir: Path | None) -> Settings:
    """The settings the local stack runs with: Kafka and PostgreSQL are the ones `up` starts,
    and component paths left at their ``.state/…`` defaults follow a moved state dir."""
    from infra.stack import settings_for_stack

    base_state = Path(state_dir or settings.stack.state_dir)
    local = settings_for_stack(settings, base_state)
    state = Path(local.stack.state_dir)
    if Path(settings.stack.state_dir) != _DEFAULT_STATE or state_dir is not None:
        defaults = Settings.model_construct()
        moves = {
            ("watcher", "outbox_path"): state / "outbox.sqlite3",
            ("ocr", "output_dir"): state / "ocr",
            ("streams", "data_dir"): state / "faust",
        }
        for (section, field), new in moves.items():
            if getattr(getattr(settings, section), field) == getattr(getattr(defaults, section),
                                                                      field):
                setattr(getattr(local, section), field, new)
        if settings.watcher.roots == defaults.watcher.roots:
            local.watcher.roots = [state / "hotfolder"]
    return local


def _component_env(local: Settings) -> dict[str, str]:
    from infra.stack import stack_env

    return stack_env(local, with_paths=True, reader=True)


def _say(msg: str) -> None:
    click.echo(msg)


def _ok(msg: str) -> None:
    click.secho(f"✔ {msg}", fg="green")


def _fail(msg: str) -> None:
    from sohoa.masking import mask_text

    # Failures quote the logs and output of other programs: mask what they may hold.
    click.secho(f"✘ {mask_text(msg)}", fg="red", err=True)


@click.command("up")
@click.option("--no-components", is_flag=True,
              help="Chỉ khởi động Kafka và PostgreSQL (just Kafka + PostgreSQL).")
@click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Thư mục trạng thái (default: stack.state_dir, .state/).")
@click.option("--monitoring/--no-monitoring", default=None,
              help="Chạy cả Prometheus và Alertmanager trên máy này (default stack.monitoring).")
@click.pass_context
def up(ctx: click.Context, no_components: bool, state_dir: Path | None,
       monitoring: bool | None) -> None:
    """Khởi động Kafka, PostgreSQL, các topic, cơ sở dữ liệu và các thành phần trên máy này.

    Start the local stack: Kafka (one KRaft node), PostgreSQL (a private cluster), the topic
    spec (infra/topics.toml), database migrations, then `sohoa watch`, `sohoa streams` and
    `sohoa consume` as background processes (stack.components). With --monitoring, also
    Prometheus (stack.prometheus_port) with sohoa's rules and Alertmanager
    (stack.alertmanager_port), on loopback. Data is kept between runs; `sohoa down` stops
    everything. Exit code 0: all parts up; 1: a part failed.
    """
    from infra.components import HINTS, Components
    from infra.procs import StackError
    from infra.stack import LocalStack

    local = _local_settings(_settings(ctx), state_dir)
    stack = LocalStack(local)
    _say(f"Thư mục trạng thái (state dir): {stack.state_dir}")
    try:
        stack.start_services(progress=_say)
    except StackError as exc:
        _fail(str(exc))
        sys.exit(ExitCode.ERROR)
    _ok(f"Kafka sẵn sàng tại {stack.kafka.bootstrap}")
    _ok(f"PostgreSQL sẵn sàng tại {local.stack.host}:{local.stack.postgres_port}")
    if stack.objects is not None:
        _ok(f"Kho đối tượng (S3) sẵn sàng tại {stack.objects.endpoint}")
    failed = False

    _say("Đang áp dụng cấu hình topic (infra/topics.toml)…")
    try:
        result = stack.apply_topics()
    except Exception as exc:  # any admin error is reported, not a traceback
        _fail(f"Không áp dụng được cấu hình topic: {exc}")
        failed = True
    else:
        for change in result.changes:
            _say(f"  {change.topic}: {change.action} {change.detail}".rstrip())
        _ok("Topic đã đúng cấu hình" if not result.changed else "Topic đã được cập nhật")

    env = {**os.environ, **_component_env(local)}
    config_path = _config_path(ctx)
    if importlib.util.find_spec("consumers.cli") is None:
        click.secho("⚠ Chưa có lệnh `sohoa db migrate`; bỏ qua bước tạo bảng "
                    "(consumers package missing: migrations skipped)", fg="yellow")
    else:
        _say("Đang cập nhật cơ sở dữ liệu (sohoa db migrate)…")
        argv = [sys.executable, "-m", "sohoa.cli"]
        if config_path:
            argv += ["--config", str(Path(config_path).resolve())]
        from infra.stack import owner_env

        # Only this step runs as the owner of the database.
        res = subprocess.run([*argv, "db", "migrate"], env={**env, **owner_env(local)},
                             capture_output=True, text=True, timeout=600)
        if res.returncode == 0:
            for line in res.stdout.strip().splitlines():
                _say(f"  {line}")
            _ok("Cơ sở dữ liệu đã ở phiên bản mới nhất")
        else:
            tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-15:])
            _fail(f"`sohoa db migrate` thất bại (exit {res.returncode}):\n{tail}")
            failed = True

    if not no_components and local.stack.components:
        for root in local.watcher.roots:
            Path(root).mkdir(parents=True, exist_ok=True)
        comps = Components(local, Path(config_path) if config_path else None,
                           _component_env(local), stack.component_env())
        _say("Đang khởi động các thành phần: " + ", ".join(local.stack.components) + "…")
        for r in comps.start(list(local.stack.components)):
            if r.already_running:
                _ok(f"sohoa {r.name} đang chạy sẵn (pid {r.pid})")
            elif r.died:
                failed = True
                _fail(f"sohoa {r.name} dừng ngay sau khi khởi động. Nhật ký {r.log_path}:\n"
                      f"{r.tail}\nCách xử lý: {HINTS.get(r.name, 'xem nhật ký')}.")
            else:
                _ok(f"sohoa {r.name} đã chạy (pid {r.pid}, nhật ký {r.log_path})")

    if monitoring if monitoring is not None else local.stack.monitoring:
        from infra.monitoring import LocalMonitoring

        _say("Đang khởi động Prometheus và Alertmanager…")
        for m in LocalMonitoring(local).start():
            if m.error:
                failed = True
                _fail(f"{m.name}: {m.error}")
            elif m.already_running:
                _ok(f"{m.name} đang chạy sẵn (pid {m.pid}): {m.url}")
            else:
                _ok(f"{m.name} đã chạy (pid {m.pid}): {m.url}")

    _print_endpoints(local, stack, with_components=not no_components)
    sys.exit(ExitCode.ERROR if failed else ExitCode.OK)


def _print_endpoints(local: Settings, stack, with_components: bool) -> None:
    host = local.stack.host
    click.echo("")
    click.secho("Điểm truy cập (endpoints):", bold=True)
    from infra.postgres import pgpass_path

    masked = local.masked()["postgres"]
    rows = [
        ("Kafka (bootstrap)", stack.kafka.bootstrap),
        ("PostgreSQL ghi (writer DSN)", masked["dsn"]),
        ("PostgreSQL đọc (reader DSN)", masked["reader_dsn"] or masked["dsn"]),
        ("PostgreSQL chủ sở hữu (owner DSN)", masked["owner_dsn"] or masked["dsn"]),
        ("Mật khẩu PostgreSQL (passfile)", str(pgpass_path(stack.state_dir))),
    ]
    if stack.objects is not None:
        rows += [("Kho đối tượng S3 (object store)", stack.objects.endpoint),
                 ("Khóa S3 theo vai trò (keys)", str(stack.objects.keys_path))]
    comps = set(local.stack.components) if with_components else set()
    if "watch" in comps:
        rows.append(("Chỉ số tác tử quét (watcher metrics)",
                     f"http://{host}:{local.watcher.metrics_port}/metrics"
                     if local.watcher.metrics_port else "tắt (watcher.metrics_port chưa đặt)"))
    if "streams" in comps:
        rows.append(("Chỉ số xử lý luồng (streams metrics)",
                     f"http://{host}:{local.streams.web_port}/metrics"))
        rows.append(("Chỉ số OCR (streams OCR metrics)",
                     f"http://{host}:{local.streams.ocr_web_port}/metrics"))
    if "consume" in comps:
        rows.append(("Chỉ số tiến độ (consumer metrics)",
                     f"http://{local.consumer.metrics_host}:{local.consumer.metrics_port}/metrics"))
    if "web" in comps:
        rows.append(("Trang tiến độ (sohoa web)", f"http://{local.web.host}:{local.web.port}/"))
    for root in local.watcher.roots:
        rows.append(("Thư mục quét (hot folder)", str(Path(root).resolve())))
    rows += [
        ("Thư mục trạng thái (state dir)", str(stack.state_dir)),
        ("Nhật ký (logs)", str(stack.logs_dir)),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"  {key.ljust(width)} : {value}")


@click.command("down")
@click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Thư mục trạng thái (default: stack.state_dir, .state/).")
@click.pass_context
def down(ctx: click.Context, state_dir: Path | None) -> None:
    """Dừng các thành phần, Kafka và PostgreSQL (dữ liệu được giữ lại).

    Stop the components (SIGTERM, SIGKILL after stack.stop_timeout_s), Kafka (clean shutdown)
    and PostgreSQL (pg_ctl stop -m fast). Data stays; the next `sohoa up` reuses it.
    """
    from infra.components import COMPONENTS, Components
    from infra.stack import LocalStack

    local = _local_settings(_settings(ctx), state_dir)
    stack = LocalStack(local)
    comps = Components(local, None, {})
    stopped_any = False
    from infra.monitoring import LocalMonitoring

    stopped = {f"sohoa {n}": c for n, c in comps.stop(list(COMPONENTS)).items()}
    stopped.update({n.capitalize(): c for n, c in LocalMonitoring(local).stop().items()})
    for name, clean in stopped.items():
        if clean is None:
            continue
        stopped_any = True
        if clean:
            _ok(f"Đã dừng {name}")
        else:
            click.secho(f"⚠ sohoa {name} không tự dừng kịp, đã buộc dừng (SIGKILL)", fg="yellow")
    nodes: list[tuple[str, _Node]] = [("Kafka", stack.kafka), ("PostgreSQL", stack.pg)]
    if stack.objects is not None:
        nodes.append(("kho đối tượng (SeaweedFS)", stack.objects))
    for label, node in nodes:
        if not node.running():
            continue
        _say(f"Đang dừng {label}…")
        node.stop()
        stopped_any = True
        _ok(f"Đã dừng {label}")
    if not stopped_any:
        _say(f"Không có gì đang chạy (nothing running in {stack.state_dir}).")
    else:
        _say(f"Dữ liệu vẫn giữ ở {stack.state_dir}; `sohoa up` để chạy lại.")


@click.group("topics")
def topics() -> None:
    """Cấu hình topic Kafka (topic spec: infra/topics.toml)."""


_spec_opt = click.option("--spec", type=click.Path(path_type=Path, dir_okay=False, exists=True),
                         help="Spec file (default: topics.spec, else infra/topics.toml).")


@topics.command("apply")
@_spec_opt
@click.option("--replication-factor", type=click.IntRange(1), help="Override the spec (e.g. 3).")
@click.option("--min-insync-replicas", type=click.IntRange(1), help="Override the spec (e.g. 2).")
@click.pass_context
def topics_apply(ctx: click.Context, spec: Path | None, replication_factor: int | None,
                 min_insync_replicas: int | None) -> None:
    """Tạo topic còn thiếu, chỉnh cấu hình, tăng số phân vùng (không bao giờ xóa).

    Idempotent: a second run changes nothing. Uses kafka.bootstrap from the config.
    """
    from kafka.errors import KafkaError

    from infra.topics import apply_spec, load_spec

    settings = _settings(ctx)
    specs = load_spec(settings.topics, spec, replication_factor=replication_factor,
                      min_insync_replicas=min_insync_replicas)
    try:
        result = apply_spec(settings.kafka, specs)
    except KafkaError as exc:
        raise click.ClickException(
            f"Không áp dụng được topic trên {settings.kafka.bootstrap}: {exc}. "
            "Kafka đang chạy chưa? (`sohoa up`)") from None
    for c in result.changes:
        click.echo(f"{c.topic}: {c.action} {c.detail}".rstrip())
    if not result.changed:
        click.echo("Không có thay đổi: các topic đã đúng cấu hình (nothing to change).")


@topics.command("show")
@_spec_opt
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def topics_show(ctx: click.Context, spec: Path | None, as_json: bool) -> None:
    """Topic trên Kafka so với spec (what the broker has vs. the spec)."""
    from kafka.errors import KafkaError

    from infra.topics import describe, load_spec

    settings = _settings(ctx)
    try:
        rows = describe(settings.kafka, load_spec(settings.topics, spec))
    except KafkaError as exc:
        raise click.ClickException(
            f"Không đọc được topic trên {settings.kafka.bootstrap}: {exc}") from None
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    for r in rows:
        state = "đúng spec" if r["in_sync"] else ("chưa có" if not r["exists"] else "lệch spec")
        click.echo(f"{r['topic']}: {state}; phân vùng {r['partitions']}/{r['spec_partitions']}, "
                   f"rf {r['replication_factor']}, "
                   f"retention.ms {r['configs'].get('retention.ms', '-')}, "
                   f"cleanup {r['configs'].get('cleanup.policy', '-')}, "
                   f"min ISR {r['configs'].get('min.insync.replicas', '-')}")


@topics.command("grant-site")
@click.argument("site_id")
@click.pass_context
def topics_grant_site(ctx: click.Context, site_id: str) -> None:
    """Cấp tài khoản Kafka riêng cho một điểm số hóa (a site's own Kafka user).

    Creates (or resets) the SCRAM-SHA-512 user ``site-<SITE_ID>`` allowed to write only the
    site-events and dead-letters topics, and a fresh signing secret; prints the site's and
    the centre's config blocks. Needs a broker with an authorizer and the centre's user.
    """
    import re

    from kafka.errors import KafkaError

    from infra.access import grant_site
    from sohoa.events import SITE_ID_RE

    if not re.match(SITE_ID_RE, site_id):
        raise click.BadParameter(f"mã điểm không hợp lệ (not a site id): {site_id!r}")
    settings = _settings(ctx)
    try:
        access = grant_site(settings.kafka, settings.topics, site_id)
    except (KafkaError, RuntimeError) as exc:
        raise click.ClickException(
            f"Không cấp được quyền trên {settings.kafka.bootstrap}: {exc}") from None
    click.echo(f"# sohoa.toml của điểm {site_id} (site agent):\n"
               f"{access.site_toml(settings.kafka.bootstrap)}")
    click.echo(f"# thêm vào sohoa.toml của trung tâm (centre):\n{access.centre_toml()}")


@click.group("monitoring")
def monitoring() -> None:
    """Cấu hình giám sát: Prometheus, Alertmanager, Grafana (monitoring/)."""


@monitoring.command("build")
@click.option("--out", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Thư mục ghi bản cấu hình (replaced if present).")
@click.pass_context
def monitoring_build(ctx: click.Context, out: Path) -> None:
    """Ghi bản cấu hình giám sát để triển khai (a deployable copy of monitoring/).

    Every alert's runbook_url and the boards' link to the runbook are made absolute on
    monitoring.runbook_base_url (default: the runbook `sohoa web` serves on this machine,
    http://127.0.0.1:18080/so-tay). Point Prometheus at OUT/prometheus/prometheus.yml,
    Alertmanager at OUT/alertmanager/alertmanager.yml, Grafana at OUT/grafana.
    """
    from infra.monitoring import build

    settings = _settings(ctx)
    path = build(settings, out)
    click.echo(f"đã ghi {path} (runbook: {settings.monitoring.runbook_base_url})")
