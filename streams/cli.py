"""`sohoa streams`: the centre's Faust apps (assembly; QC + OCR + verdicts)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import click


@click.command("streams")
@click.option("--role", type=click.Choice(["assembly", "ocr", "all"]), default="all",
              show_default=True,
              help="assembly: ghép trang thành hồ sơ; ocr: kiểm tra trang, OCR, kết luận; "
                   "all: cả hai (hai tiến trình).")
@click.pass_obj
def streams(settings, role: str) -> None:
    """Xử lý luồng: ghép hồ sơ, kiểm tra từng trang, OCR ra PDF/A, kết luận từng hồ sơ.

    Stream processing: assemble files, check pages, OCR into PDF/A-2b, give each file a verdict.
    """
    if role == "all":
        root = click.get_current_context().find_root()
        sys.exit(_run_both(root.params.get("config_path")))
    if role == "assembly":
        from streams.app_assembly import build
    else:
        from streams.app_ocr import build
    from streams.faustapp import run_worker

    app = build(settings)
    run_worker(app, settings.streams.loglevel)


def _run_both(config_path) -> int:
    """Two child processes (each app is its own consumer group and event loop); SIGTERM or
    SIGINT is passed on, and if one child dies the other is stopped too."""
    base = [sys.executable, "-m", "sohoa.cli"]
    if config_path:
        base += ["--config", str(config_path)]
    children = [subprocess.Popen([*base, "streams", "--role", r]) for r in ("assembly", "ocr")]
    stopping = False

    def forward(signum, _frame):
        nonlocal stopping
        stopping = True
        for c in children:
            if c.poll() is None:
                c.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while True:
        codes = [c.poll() for c in children]
        if all(code is not None for code in codes):
            return max(abs(c) for c in codes)  # type: ignore[arg-type]
        if any(code is not None for code in codes) and not stopping:
            forward(signal.SIGTERM, None)
        time.sleep(0.2)
