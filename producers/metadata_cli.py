"""`sohoa metadata template|import`: the contractors' spreadsheet of hồ sơ and văn bản."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from sohoa.config import Settings
from sohoa.errors import ExitCode


@click.group("metadata")
def metadata() -> None:
    """Siêu dữ liệu hồ sơ và văn bản (mục lục hồ sơ, danh mục văn bản)."""


@metadata.command("template")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
def template(path: Path) -> None:
    """Write the empty XLSX template contractors fill in to PATH."""
    from producers.metadata_xlsx import write_template

    if path.exists():
        raise click.ClickException(f"{path} đã có; chọn tên khác (will not overwrite)")
    write_template(path)
    click.echo(f"Đã ghi mẫu: {path}")


@metadata.command("import")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--root", type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="Thư mục quét chứa các hồ sơ (mặc định: watcher.roots đầu tiên).")
@click.option("--dry-run", is_flag=True, help="Chỉ kiểm tra, không ghi gì.")
@click.pass_obj
def import_(settings: Settings, path: Path, root: Path | None, dry_run: bool) -> None:
    """Check PATH (XLSX) and load each file's metadata into its folder's hoso.json.

    Every bad cell is listed as 'dòng N, cột X: …' and nothing is written (exit 2)."""
    from producers.layout import Layout
    from producers.metadata_xlsx import MetadataImportError, apply_import, plan_import

    w = settings.watcher
    if root is None:
        if not w.roots:
            raise click.ClickException("cần --root hoặc watcher.roots")
        root = Path(w.roots[0])
    try:
        plan = plan_import(path, root, Layout(w.layout), w.site_id, w.manifest_name)
    except MetadataImportError as exc:
        for line in exc.errors:
            click.echo(line, err=True)
        click.echo(f"{len(exc.errors)} lỗi; không ghi gì.", err=True)
        sys.exit(ExitCode.USAGE)
    if dry_run:
        click.echo(f"Hợp lệ: {plan.files} hồ sơ, {plan.documents} văn bản (chạy thử, không ghi).")
        return
    apply_import(plan)
    for target, _ in plan.writes:
        click.echo(f"đã ghi {target}")
    click.echo(f"Đã nạp {plan.files} hồ sơ, {plan.documents} văn bản.")
