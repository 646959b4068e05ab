"""`sohoa watch`: the site agent as one process (systemd service, Windows service or cron)."""

from __future__ import annotations

import logging
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from sohoa.config import Settings
from sohoa.errors import ExitCode

log = logging.getLogger(__name__)


_SITE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class ConfigProblem(Exception):
    pass


def check_config(settings: Settings) -> None:
    from producers.layout import Layout, LayoutError

    cfg = settings.watcher
    if not _SITE_RE.match(cfg.site_id):
        raise ConfigProblem(f"watcher.site_id {cfg.site_id!r}: chỉ gồm chữ thường không dấu, "
                            f"số, '-' hoặc '_' (lower-case slug)")
    if not cfg.roots:
        raise ConfigProblem("watcher.roots trống: cần ít nhất một thư mục quét (no roots)")
    try:
        Layout(cfg.layout)
    except LayoutError as exc:
        raise ConfigProblem(f"watcher.layout: {exc}") from None
    if cfg.stability_window_s < 0 or cfg.send_batch < 1:
        raise ConfigProblem("watcher.stability_window_s >= 0 và watcher.send_batch >= 1")
    for root in cfg.roots:
        try:
            if cfg.outbox_path.resolve().is_relative_to(Path(root).resolve()):
                raise ConfigProblem(f"watcher.outbox_path nằm trong thư mục quét {root} "
                                    f"(the outbox must live outside the hot folder)")
        except OSError:
            continue


class InstanceLock:
    """One agent per outbox: a second one would send the same pages twice."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: Any = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a+b")  # noqa: SIM115 - held for the process lifetime
        try:
            if sys.platform == "win32":
                import msvcrt

                msvcrt.locking(self._fh.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._fh.close()
            self._fh = None
            return False
        return True

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def run_agent(settings: Settings, once: bool) -> ExitCode:
    """Run the agent; return the process exit code."""
    from producers.agent import Agent
    from producers.metrics import AgentMetrics
    from producers.sender import SenderProcess
    from sohoa import __version__

    cfg = settings.watcher
    # kafka-python logs every failed reconnect at ERROR; during an outage of hours that buries
    # the agent's own one-line-per-state-change reports, which carry the same facts.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    try:
        check_config(settings)
    except ConfigProblem as exc:
        click.echo(f"Lỗi cấu hình: {exc}", err=True)
        log.error("bad configuration", extra={"error": str(exc)})
        return ExitCode.CONFIG
    lock = InstanceLock(cfg.outbox_path.with_name(cfg.outbox_path.name + ".lock"))
    try:
        if not lock.acquire():
            click.echo(f"Một tác tử khác đang chạy với cùng hàng đợi {cfg.outbox_path} "
                       f"(another agent holds the outbox lock)", err=True)
            return ExitCode.TEMPFAIL
    except OSError as exc:
        click.echo(f"Lỗi cấu hình: không tạo được {cfg.outbox_path}: {exc}", err=True)
        return ExitCode.CONFIG
    metrics = AgentMetrics(cfg.site_id)
    if cfg.metrics_port is not None:
        try:
            metrics.serve(cfg.metrics_port, cfg.metrics_addr)
        except OSError as exc:
            click.echo(f"Lỗi cấu hình: cổng metrics {cfg.metrics_port}: {exc}", err=True)
            return ExitCode.CONFIG
    try:
        agent = Agent(settings, metrics)
    except Exception as exc:
        # sqlite3 errors opening the outbox (bad path, read-only disk) land here.
        click.echo(f"Lỗi cấu hình: không mở được hàng đợi {cfg.outbox_path}: {exc}", err=True)
        log.error("cannot open outbox", extra={"error": str(exc)})
        return ExitCode.CONFIG
    sender = SenderProcess(settings, metrics, __version__, agent.roots)
    agent.wake_sender = sender.wake
    agent.sender = sender

    def on_signal(signum: int, _frame: Any) -> None:
        # Only a flag: the loop stops, then tells the sender (a pipe write here could
        # interleave with one the interrupted loop was making).
        log.info("stopping on signal", extra={"signal": signum})
        agent.stop_event.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
    log.info("agent starting", extra={"site": cfg.site_id, "version": __version__,
                                      "once": once, "outbox": str(cfg.outbox_path)})
    try:
        sender.start()
    except Exception as exc:
        log.error("cannot start the outbox sender process", extra={"error": str(exc)})
        agent.close()
        lock.release()
        return ExitCode.ERROR
    code = ExitCode.OK
    try:
        agent.run(once=once)
    except Exception:
        log.exception("agent failed")
        code = ExitCode.ERROR
    if once and code == ExitCode.OK and not agent.stop_event.is_set():
        sender.stop_when_drained(cfg.once_timeout_s)
    else:
        sender.stop(cfg.shutdown_flush_s)
    sender.join()
    agent.close()
    lock.release()
    if sender.error is not None:
        return ExitCode.ERROR
    if code != ExitCode.OK:
        return code
    if once and not sender.drained.is_set():
        click.echo(f"Kafka không truy cập được: còn {sender.depth} sự kiện trong hàng đợi, "
                   f"sẽ gửi lần sau (events kept in the outbox)", err=True)
        return ExitCode.TEMPFAIL
    log.info("agent stopped", extra={"outbox_depth": sender.depth})
    return ExitCode.OK


@click.command("watch")
@click.option("--once", is_flag=True,
              help="Quét một lần, gửi hết hàng đợi rồi thoát (dùng với cron / Task Scheduler).")
@click.option("--root", "roots", multiple=True, type=click.Path(path_type=Path),
              help="Thư mục quét (thay cho watcher.roots); dùng nhiều lần được.")
@click.option("--site", "site_id", help="Mã điểm số hóa (thay cho watcher.site_id).")
@click.pass_obj
def watch(settings: Settings, once: bool, roots: tuple[Path, ...], site_id: str | None) -> None:
    """Theo dõi thư mục quét, ghi từng trang vào hàng đợi cục bộ và gửi lên Kafka.

    Mỗi trang chỉ được tính khi tệp đã ghi xong (kích thước và thời gian sửa không đổi trong
    watcher.stability_window_s giây) và đọc được phần đầu ảnh. Trang đã gửi không gửi lại;
    quét lại (nội dung mới) thành một phiên bản mới của cùng trang. Tệp gốc không bao giờ bị
    xóa, di chuyển hay sửa.

    \b
    Mã thoát (exit codes, for systemd / cron / Windows services):
      0   dừng bình thường (SIGTERM/SIGINT), hoặc --once đã gửi hết
      1   lỗi không lường trước (xem nhật ký); khởi động lại được
      75  --once: Kafka không truy cập được, sự kiện vẫn nằm trong hàng đợi (EX_TEMPFAIL);
          hoặc một tác tử khác đang dùng cùng hàng đợi
      78  cấu hình sai (EX_CONFIG): sửa cấu hình, khởi động lại không giúp được
    """
    updates: dict[str, Any] = {}
    if roots:
        updates["roots"] = [Path(r) for r in roots]
    if site_id:
        updates["site_id"] = site_id
    if updates:
        settings = settings.model_copy(
            update={"watcher": settings.watcher.model_copy(update=updates)})
    sys.exit(run_agent(settings, once))
