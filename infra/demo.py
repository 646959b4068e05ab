"""`make run`'s demo: drop a few Vietnamese sample pages into the local stack's hot folder and
follow them until PostgreSQL counts them (`python -m infra.demo`)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import click

from sohoa.config import Settings, load_config
from sohoa.errors import ExitCode
from sohoa.samples import PageSpec, write_page

DEMO_FILES = {
    # file folder -> (title, pages)
    ("UBND-XA-TAN-PHU", "HS-2024-001"): ("Hồ sơ giao đất ở năm 2024 — hộ ông Nguyễn Văn Hùng", 3),
    ("UBND-XA-TAN-PHU", "HS-2024-002"): ("Hồ sơ hộ tịch: đăng ký khai sinh tháng 3/2024", 2),
}


def drop_pages(settings: Settings) -> tuple[Path, int]:
    root = Path(settings.watcher.roots[0]).resolve()
    total = 0
    for n_file, ((fonds, file_code), (title, pages)) in enumerate(DEMO_FILES.items()):
        folder = root / fonds / file_code
        folder.mkdir(parents=True, exist_ok=True)
        manifest = {"title": title, "expected_pages": pages, "classification": "public"}
        (folder / settings.watcher.manifest_name).write_text(
            json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")
        for page in range(1, pages + 1):
            target = folder / f"{page:03d}.png"
            if not target.exists():
                write_page(target, PageSpec(dpi=200, skew_deg=0.4 * page, noise=0.0005,
                                            seed=n_file * 100 + page))
            total += 1
        (folder / settings.watcher.close_marker).touch()
    return root, total


def _status() -> dict | None:
    out = subprocess.run([sys.executable, "-m", "sohoa.cli", "status", "--json"],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        return None
    try:
        return json.loads(out.stdout)
    except json.JSONDecodeError:
        return None


@click.command()
@click.option("--timeout", default=240.0, show_default=True, help="Seconds to wait for the pages.")
def main(timeout: float) -> None:
    """Đặt vài trang quét mẫu (tiếng Việt) vào thư mục quét và theo dõi đến khi được ghi nhận."""
    from rich.progress import Progress

    settings = load_config()
    root, total = drop_pages(settings)
    click.echo(f"Đã đặt {total} trang mẫu vào thư mục quét: {root}")
    site = settings.watcher.site_id
    deadline = time.monotonic() + timeout
    seen = 0
    with Progress() as progress:
        task = progress.add_task(f"Trang đã ghi nhận tại điểm '{site}'", total=total)
        while time.monotonic() < deadline:
            status = _status() or {}
            seen = sum(s.get("pages", 0) for s in status.get("sites", [])
                       if s.get("site_id") == site)
            progress.update(task, completed=min(seen, total))
            if seen >= total:
                break
            time.sleep(2)
    subprocess.run([sys.executable, "-m", "sohoa.cli", "status"], check=False)
    if seen < total:
        click.echo(f"Chỉ ghi nhận {seen}/{total} trang sau {timeout:.0f} giây. "
                   "Xem nhật ký trong .state/logs/ (watch.log, streams.log, consume.log).",
                   err=True)
        sys.exit(ExitCode.ERROR)
    click.echo("Xong: mọi trang mẫu đã đi từ thư mục quét qua Kafka vào PostgreSQL.")


if __name__ == "__main__":
    main()
