"""`sohoa reconcile`: pages on disk vs. the current pages PostgreSQL holds for a site.

Read-only: files are opened for reading and hashed, never moved or changed. A page is matched
by its path relative to the hot-folder root (``PageScanned.path``, else the path of its
``file://`` URI under the root).

Only regular files under the root are read: symbolic links (to files or folders) are never
followed, FIFOs, sockets and devices never opened for reading, and a file over
``watcher.max_file_bytes`` (the agent refuses such a page) is not hashed. Each is listed as
skipped, with why; a page the database expects there counts as missing.
"""

from __future__ import annotations

import hashlib
import os
import stat
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


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str

    def describe(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class ReconcileResult:
    site_id: str
    root: str
    matched: int = 0
    missing: list[Discrepancy] = field(default_factory=list)
    extra: list[Discrepancy] = field(default_factory=list)
    altered: list[Discrepancy] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.altered)

    def to_json(self) -> dict[str, Any]:
        def items(xs: list[Discrepancy]) -> list[dict[str, Any]]:
            return [x.__dict__ for x in xs]

        return {"site_id": self.site_id, "root": self.root, "ok": self.ok,
                "matched": self.matched, "missing": items(self.missing),
                "extra": items(self.extra), "altered": items(self.altered),
                "skipped": [x.__dict__ for x in self.skipped]}


class NotReadable(Exception):
    """A page path that is not read: the reason says why, in Vietnamese for the officer."""


def _kind_refused(mode: int) -> str | None:
    if stat.S_ISLNK(mode):
        return "liên kết tượng trưng, không theo (symlink not followed)"
    if not stat.S_ISREG(mode):
        return "không phải tệp thường, không đọc (FIFO/socket/device not read)"
    return None


def sha256_file(path: Path, max_bytes: int, seen: os.stat_result | None = None) -> str:
    """SHA-256 of the regular file at ``path``, read only if it is one and at most
    ``max_bytes``; ``seen`` (the walk's ``lstat``) must be the file opened, so a path swapped
    for a link (of the file or of a folder above it) between the walk and the read is refused.
    Raises :class:`NotReadable`."""
    try:
        # O_NOFOLLOW: a final symlink fails; O_NONBLOCK: a FIFO put in its place never blocks.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        try:
            refused = _kind_refused(os.lstat(path).st_mode)
        except OSError:
            refused = None
        raise NotReadable(refused or f"không mở được ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        refused = _kind_refused(st.st_mode)
        if refused:
            raise NotReadable(refused)
        if seen is not None and (st.st_dev, st.st_ino) != (seen.st_dev, seen.st_ino):
            raise NotReadable("đổi trong lúc đối chiếu, không đọc (changed during reconcile)")
        if st.st_size > max_bytes:
            raise NotReadable(_too_large(max_bytes))
        h = hashlib.sha256()
        read = 0
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            read += len(chunk)
            if read > max_bytes:  # grew while being read
                raise NotReadable(_too_large(max_bytes))
            h.update(chunk)
    return h.hexdigest()


def _too_large(max_bytes: int) -> str:
    return f"lớn hơn {max_bytes:,} byte (watcher.max_file_bytes), không băm".replace(",", ".")


def _is_page(name: str, cfg: WatcherConfig) -> bool:
    low = name.lower()
    if low in {n.lower() for n in cfg.ignore_names}:
        return False
    if any(name.startswith(p) for p in cfg.ignore_prefixes):
        return False
    return any(low.endswith(ext.lower()) for ext in cfg.extensions)


@dataclass(frozen=True)
class DiskPage:
    path: Path
    lstat: os.stat_result


def disk_pages(root: Path, cfg: WatcherConfig,
               skipped: list[Skipped] | None = None) -> dict[str, DiskPage]:
    """Relative path (POSIX, NFC) → every regular page file under ``root``.

    Links are not followed (folders or files); a page-named entry that is not a regular file,
    or is larger than ``cfg.max_file_bytes``, goes to ``skipped`` instead."""
    out: dict[str, DiskPage] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        keep = []
        for d in dirnames:
            if any(d.startswith(p) for p in cfg.ignore_prefixes):
                continue
            if os.path.islink(os.path.join(dirpath, d)):
                if skipped is not None:
                    skipped.append(Skipped(_rel(Path(dirpath) / d, root),
                                           "thư mục là liên kết tượng trưng, không theo "
                                           "(symlinked folder not followed)"))
                continue
            keep.append(d)
        dirnames[:] = keep
        for name in filenames:
            if not _is_page(name, cfg):
                continue
            full = Path(dirpath) / name
            rel = _rel(full, root)
            try:
                st = os.lstat(full)
            except OSError:
                continue  # gone since the listing
            reason = _kind_refused(st.st_mode) or (
                _too_large(cfg.max_file_bytes) if st.st_size > cfg.max_file_bytes else None)
            if reason:
                if skipped is not None:
                    skipped.append(Skipped(rel, reason))
                continue
            out[rel] = DiskPage(full, st)
    return out


def _rel(full: Path, root: Path) -> str:
    # The agent sends NFC paths; a Vietnamese name may sit on disk decomposed.
    return unicodedata.normalize("NFC", full.relative_to(root).as_posix())


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
    disk = disk_pages(root, cfg, res.skipped)
    hashes = _hash_all(disk, cfg.max_file_bytes, res.skipped, progress)
    for rel in sorted(set(db) & set(hashes)):
        file_code, page_no, sha = db[rel]
        if hashes[rel] == sha:
            res.matched += 1
        else:
            res.altered.append(Discrepancy(rel, file_code, page_no, sha, hashes[rel]))
    for rel in sorted(set(db) - set(hashes)):
        file_code, page_no, sha = db[rel]
        res.missing.append(Discrepancy(rel, file_code, page_no, sha, None))
    for file_code, page_no, sha, uri in unplaced:
        res.missing.append(Discrepancy(uri, file_code, page_no, sha, None))
    for rel in sorted(set(hashes) - set(db)):
        res.extra.append(Discrepancy(rel, None, None, None, hashes[rel]))
    res.skipped.sort(key=lambda s: s.path)
    return res


def _hash_all(disk: dict[str, DiskPage], max_bytes: int, skipped: list[Skipped],
              progress: bool) -> dict[str, str]:
    bar = _progress(len(disk)) if progress else None
    out: dict[str, str] = {}
    for rel, page in sorted(disk.items()):
        try:
            out[rel] = sha256_file(page.path, max_bytes, page.lstat)
        except NotReadable as exc:
            skipped.append(Skipped(rel, str(exc)))
        if bar:
            bar[0].advance(bar[1])
    if bar:
        bar[0].stop()
    return out


def _progress(total: int):
    """A rich progress bar only for an interactive terminal and a long job."""
    import sys

    if total < 200 or not sys.stderr.isatty():
        return None
    from rich.progress import Progress

    p = Progress(transient=True)
    p.start()
    return p, p.add_task("Đang băm SHA-256 các trang…", total=total)
