"""Jars from Maven Central: each Java tool the stack runs has a pinned ``pom.xml`` (its own
folder under infra/) whose build copies the tool's jars into a cache folder."""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from infra.procs import StackError

log = logging.getLogger(__name__)


def fetch_jars(name: str, version: str, pom_dir: Path, libs: Path, props: dict[str, str],
               present: Callable[[Path], bool], hint: str = "") -> None:
    """Run ``pom_dir``'s build with ``-Dkey=value`` for each of ``props``; StackError (in
    Vietnamese first, then English) unless the jars are then in ``libs``. ``hint``: one more
    way out, added to the failure's advice."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(
            f"Thiếu Maven để tải {name}. Cài bằng: apt-get install -y maven (hoặc chạy "
            f"infra/install-system-deps.sh). (maven not found: needed to fetch {name})")
    libs.mkdir(parents=True, exist_ok=True)
    log.info("resolving jars with maven", extra={"tool": name, "libs": str(libs),
                                                 "version": version})
    cmd = [mvn, "-q", "-B", "package", *(f"-D{k}={v}" for k, v in props.items())]
    res = subprocess.run(cmd, cwd=pom_dir, capture_output=True, text=True, timeout=1800)
    shutil.rmtree(pom_dir / "target", ignore_errors=True)  # Maven's scratch, in the source tree
    if res.returncode != 0 or not present(libs):
        tail = "\n".join((res.stdout + res.stderr).splitlines()[-20:])
        raise StackError(
            f"Maven không tải được {name} {version} (exit {res.returncode}).\n{tail}\n"
            f"Kiểm tra mạng tới Maven Central / ~/.m2/settings.xml{hint}. "
            f"(maven failed: `{' '.join(cmd)}` in {pom_dir})")
