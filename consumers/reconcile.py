"""`sohoa reconcile`: pages on disk vs. the current pages PostgreSQL holds for a site.

Read-only: files are opened for reading and hashed, never moved or changed. A page is matched
by its path relative to the hot-folder root (``PageScanned.path``, else the path of its
``file://`` URI under the root).
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg

from sohoa.config import WatcherConfig


@dataclass(frozen=True)
class Discrepancy:
    path: str
    file_code: str | None = None
    page_no: int | None = None
    db_sha256: str | None = None
    disk_sha256: str | None = None

    def describe(self) -> str:
        where = f" (hồ sơ {self.file_code}, trang {self.page_no})" if self.file_code else ""
        if self.db_sha256 and self.disk_sha256:
            return (f"{self.path}{where}: CSDL {self.db_sha256[:12]}…, "
                    f"đĩa {self.disk_sha256[:12]}…")
        return f"{self.path}{where}"


@dataclass
class ReconcileResult:
    site_id: str
    root: str
    matched: int = 0
    missing: list[Discrepancy] = field(default_factory=list)
    extra: list[Discrepancy] = field(default_factory=list)
    altered: list[Discrepancy] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.altered)

    def to_json(self) -> dict[str, Any]:
        def items(xs: list[Discrepancy]) -> list[dict[str, Any]]:
            return [x.__dict__ for x in xs]

        return {"site_id": self.site_id, "root": self.root, "ok": self.ok,
                "matched": self.matched, "missing": items(self.missing),
                "extra": items(self.extra), "altered": items(self.altered)}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_page(name: str, cfg: WatcherConfig) -> bool:
    low = name.lower()
    if low in {n.lower() for n in cfg.ignore_names}:
        return False
    if any(name.startswith(p) for p in cfg.ignore_prefixes):
        return False
    return any(low.endswith(ext.lower()) for ext in cfg.extensions)


def disk_pages(root: Path, cfg: WatcherConfig) -> dict[str, Path]:
    """Relative path (POSIX) → absolute path of every page file under ``root``."""
    out: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames
                       if not any(d.startswith(p) for p in cfg.ignore_prefixes)]
        for name in filenames:
            if _is_page(name, cfg):
                full = Path(dirpath) / name
                # The agent sends NFC paths; a Vietnamese name may sit on disk decomposed.
                out[unicodedata.normalize("NFC", full.relative_to(root).as_posix())] = full
    return out


def _rel_path(path: str, uri: str, root: Path) -> str | None:
    if path:
        return unicodedata.normalize("NFC", Path(path).as_posix().lstrip("/"))
    parts = urlsplit(uri)
    if parts.scheme != "file":
        return None
    p = Path(unquote(parts.path))
    for base, cand in ((root, p), (root.resolve(), p.resolve())):
        try:
            return unicodedata.normalize("NFC", cand.relative_to(base).as_posix())
        except ValueError:
            continue
    return None


def reconcile_site(conn: psycopg.Connection, cfg: WatcherConfig, site_id: str,
                   root: Path, *, progress: bool = True) -> ReconcileResult:
    root = root.resolve()
    res = ReconcileResult(site_id, str(root))
    db: dict[str, tuple[str, int, str]] = {}
    unplaced: list[tuple[str, int, str, str]] = []
    for file_code, page_no, sha, path, uri in conn.execute(
            "SELECT file_code, page_no, sha256, path, uri FROM pages "
            "WHERE site_id = %s AND NOT removed ORDER BY file_code, page_no", (site_id,)):
        rel = _rel_path(path, uri, root)
        if rel is None:
            unplaced.append((file_code, page_no, sha, uri))
        else:
            db[rel] = (file_code, page_no, sha)
    disk = disk_pages(root, cfg)
    common = sorted(set(db) & set(disk))
    bar = _progress(len(common)) if progress else None
    for rel in common:
        file_code, page_no, sha = db[rel]
        actual = sha256_file(disk[rel])
        if actual == sha:
            res.matched += 1
        else:
            res.altered.append(Discrepancy(rel, file_code, page_no, sha, actual))
        if bar:
            bar[0].advance(bar[1])
    if bar:
        bar[0].stop()
    for rel in sorted(set(db) - set(disk)):
        file_code, page_no, sha = db[rel]
        res.missing.append(Discrepancy(rel, file_code, page_no, sha, None))
    for file_code, page_no, sha, uri in unplaced:
        res.missing.append(Discrepancy(uri, file_code, page_no, sha, None))
    for rel in sorted(set(disk) - set(db)):
        res.extra.append(Discrepancy(rel, None, None, None, sha256_file(disk[rel])))
    return res


def _progress(total: int):
    """A rich progress bar only for an interactive terminal and a long job."""
    import sys

    if total < 200 or not sys.stderr.isatty():
        return None
    from rich.progress import Progress

    p = Progress(transient=True)
    p.start()
    return p, p.add_task("Đang băm SHA-256 các trang…", total=total)
