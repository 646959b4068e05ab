"""`sohoa reconcile`: pages on disk vs. the current pages PostgreSQL holds for a site, and, for
documents sent through the object store, vs. the objects their ``s3://`` URIs name.

Read-only: files are opened for reading and hashed, never moved or changed. A document (a file
on disk: one image, or a multi-page PDF/TIFF holding many pages) is matched by its path under
the hot-folder root as spelled on disk (``PageScanned.path``, else the path of its ``file://``
URI under the root) and compared by its document digest; each discrepancy names its fonds,
file, document and pages.

Only regular files under the root are read: symbolic links (to files or folders) are never
followed, FIFOs, sockets and devices never opened for reading, and a file over
``watcher.max_file_bytes`` (the agent refuses such a page) is not hashed. Each is listed as
skipped, with why; a document the database expects there counts as missing.

With an object store (``[store]``, a key that may read the site's pages), every current
document whose URI is ``s3://`` must be there: an object of the document's size whose
declared SHA-256 is the one on record (``HEAD``; the workers prove the bytes themselves when
they read them); those that are not are listed as ``not_stored``. A content address is written
once, so a document whose key holds more than one version or a delete marker (other bytes PUT
over it, a DELETE: what a stolen key would do) is listed as ``tampered``: the stored version
is still there (object lock) and the workers read it, but someone wrote where nobody should.
Objects under the site's prefix that no current page names (earlier revisions, documents
removed since) are counted.
"""

from __future__ import annotations

import hashlib
import os
import stat
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg

from sohoa.config import WatcherConfig
from sohoa.naming import FileNames


@dataclass(frozen=True)
class Discrepancy:
    """A document (one file on disk) that disagrees, with the pages the database holds of it
    (none for a file on disk the database does not know)."""

    path: str
    fonds: str | None = None
    file_code: str | None = None
    document: str | None = None
    pages: tuple[int, ...] = ()  # page indexes in the document
    numbers: tuple[int, ...] = ()  # the page numbers the document claims (one-page documents)
    db_sha256: str | None = None  # the document's digest on record
    disk_sha256: str | None = None

    def describe(self) -> str:
        where = ""
        if self.file_code is not None:
            where = (f" (phông {self.fonds or '—'}, hồ sơ {self.file_code}, "
                     f"văn bản {self.document}, {_pages(self.pages, self.numbers)})")
        if self.db_sha256 and self.disk_sha256:
            return (f"{self.path}{where}: CSDL {self.db_sha256[:12]}…, "
                    f"đĩa {self.disk_sha256[:12]}…")
        return f"{self.path}{where}"

    def to_json(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["pages"], out["numbers"] = list(self.pages), list(self.numbers)
        return out


def _pages(indexes: tuple[int, ...], numbers: tuple[int, ...]) -> str:
    if len(indexes) == 1:
        return f"trang {numbers[0]}" if numbers else "trang 1"
    lo, hi = min(indexes), max(indexes)
    if len(indexes) == hi - lo + 1:
        return f"{len(indexes)} trang ({lo}–{hi})"
    return f"{len(indexes)} trang ({', '.join(map(str, indexes))})"


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
    matched: int = 0  # pages whose document on disk has the digest on record
    matched_documents: int = 0
    missing: list[Discrepancy] = field(default_factory=list)
    extra: list[Discrepancy] = field(default_factory=list)
    altered: list[Discrepancy] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    stored_documents: int | None = None  # None: the object store was not compared
    not_stored: list[Discrepancy] = field(default_factory=list)
    tampered: list[Discrepancy] = field(default_factory=list)  # its object overwritten/hidden
    unreferenced_objects: int | None = None

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.altered or self.not_stored
                    or self.tampered)

    def to_json(self) -> dict[str, Any]:
        def items(xs: list[Discrepancy]) -> list[dict[str, Any]]:
            return [x.to_json() for x in xs]

        return {"site_id": self.site_id, "root": self.root, "ok": self.ok,
                "matched": self.matched, "matched_documents": self.matched_documents,
                "missing": items(self.missing), "extra": items(self.extra),
                "altered": items(self.altered),
                "skipped": [x.__dict__ for x in self.skipped],
                "stored_documents": self.stored_documents,
                "not_stored": items(self.not_stored), "tampered": items(self.tampered),
                "unreferenced_objects": self.unreferenced_objects}


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


@dataclass(frozen=True)
class DiskPage:
    path: Path
    lstat: os.stat_result


def disk_pages(root: Path, cfg: WatcherConfig,
               skipped: list[Skipped] | None = None) -> dict[str, DiskPage]:
    """Relative path (POSIX, as spelled on disk) → every regular document file under
    ``root``. A folder spelled in NFD and its NFC twin are two folders here, as on disk.

    Links are not followed (folders or files); a page-named entry that is not a regular file,
    or is larger than ``cfg.max_file_bytes``, goes to ``skipped`` instead."""
    out: dict[str, DiskPage] = {}
    names = FileNames.of(cfg)  # the agent's own rule for what is a page document
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
            if not names.is_document(name):
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
    # As spelled on disk: the agent sends paths so, and an NFD twin is another path.
    return full.relative_to(root).as_posix()


def _rel_path(path: str, uri: str, root: Path) -> str | None:
    """Where a document is under ``root``: its path as the agent sent it (as spelled on disk),
    else its ``file://`` URI's path under the root."""
    if path:
        return PurePosixPath(path).as_posix().lstrip("/")
    parts = urlsplit(uri)
    if parts.scheme != "file":
        return None
    p = Path(unquote(parts.path))
    for base, cand in ((root, p), (root.resolve(), p.resolve())):
        try:
            return cand.relative_to(base).as_posix()
        except ValueError:
            continue
    return None


@dataclass
class _Document:
    fonds: str
    file_code: str
    document: str
    sha256: str  # of the latest scanned page's document bytes
    latest: Any
    uri: str = ""
    pages: list[tuple[int, int | None]] = field(default_factory=list)

    def discrepancy(self, path: str, disk_sha: str | None = None) -> Discrepancy:
        return Discrepancy(path, self.fonds, self.file_code, self.document,
                           tuple(i for i, _ in self.pages),
                           tuple(n for _, n in self.pages if n is not None), self.sha256,
                           disk_sha)


_PAGES = """
SELECT fonds, file_code, document, page_index, number, document_sha256, path, uri, scanned_at
FROM pages WHERE site_id = %s AND NOT removed
ORDER BY fonds, file_code, document, page_index
"""


def _stored(conn: psycopg.Connection, site_id: str, root: Path
            ) -> tuple[dict[str, _Document], list[tuple[str, _Document]]]:
    """The site's current documents by path under ``root``, and those with no path there."""
    docs: dict[str, _Document] = {}
    unplaced: dict[str, _Document] = {}
    for fonds, code, document, index, number, dsha, path, uri, at in conn.execute(
            _PAGES, (site_id,)):
        rel = _rel_path(path, uri, root)
        into, key = (unplaced, uri) if rel is None else (docs, rel)
        d = into.get(key)
        if d is None:
            d = into[key] = _Document(fonds, code, document, dsha, at, uri)
        elif at > d.latest:  # the document's bytes are those its latest page names
            d.sha256, d.latest, d.uri = dsha, at, uri
        d.pages.append((index, number))
    return docs, sorted(unplaced.items())


def _pair(db: dict[str, _Document], disk: dict[str, Any]) -> dict[str, str]:
    """Stored path → disk path: the same spelling, else (rows stored before paths were kept as
    spelled, in NFC) the one disk path left whose NFC form is the same."""
    pairs = {rel: rel for rel in db if rel in disk}
    by_nfc: dict[str, list[str]] = {}
    for rel in disk.keys() - pairs.values():
        by_nfc.setdefault(unicodedata.normalize("NFC", rel), []).append(rel)
    for rel in db.keys() - pairs.keys():
        cands = by_nfc.get(unicodedata.normalize("NFC", rel), [])
        if len(cands) == 1 and rel == unicodedata.normalize("NFC", rel):
            pairs[rel] = cands.pop()
    return pairs


def reconcile_site(conn: psycopg.Connection, cfg: WatcherConfig, site_id: str,
                   root: Path, *, progress: bool = True, store: Any = None) -> ReconcileResult:
    root = root.resolve()
    res = ReconcileResult(site_id, str(root))
    db, unplaced = _stored(conn, site_id, root)
    disk = disk_pages(root, cfg, res.skipped)
    hashes = _hash_all(disk, cfg.max_file_bytes, res.skipped, progress)
    pairs = _pair(db, hashes)
    for rel in sorted(pairs):
        doc = db[rel]
        actual = hashes[pairs[rel]]
        if actual == doc.sha256:
            res.matched += len(doc.pages)
            res.matched_documents += 1
        else:
            res.altered.append(doc.discrepancy(pairs[rel], actual))
    for rel in sorted(db.keys() - pairs.keys()):
        res.missing.append(db[rel].discrepancy(rel))
    for uri, doc in unplaced:
        res.missing.append(doc.discrepancy(uri))
    for rel in sorted(hashes.keys() - set(pairs.values())):
        res.extra.append(Discrepancy(rel, disk_sha256=hashes[rel]))
    res.skipped.sort(key=lambda s: s.path)
    if store is not None:
        _compare_store(res, store, site_id, [*db.items(), *unplaced])
    return res


def _compare_store(res: ReconcileResult, store: Any, site_id: str,
                   docs: list[tuple[str, _Document]]) -> None:
    """Every current document sent as an object is in the store, as recorded."""
    from sohoa.objectstore import page_key, parse_uri

    res.stored_documents = 0
    named: set[tuple[str, str]] = set()
    buckets: set[str] = set()
    addressed: list[tuple[str, _Document, str, str]] = []
    for where, doc in docs:
        if not doc.uri.startswith("s3:"):
            continue
        try:
            bucket, key = parse_uri(doc.uri)
        except ValueError:
            res.not_stored.append(doc.discrepancy(where))
            continue
        if key != page_key(site_id, doc.sha256):
            res.not_stored.append(doc.discrepancy(where))
            continue
        addressed.append((where, doc, bucket, key))
    # A content address is written once: a second version or a delete marker on it is
    # tampering (a PUT over it without If-None-Match, a DELETE), whatever its latest says.
    versions: Counter[tuple[str, str]] = Counter()
    for bucket in sorted({a[2] for a in addressed}):
        versions.update((bucket, key) for key, _vid in
                        store.list_versions(bucket, f"{site_id}/"))
    for where, doc, bucket, key in addressed:
        if versions[(bucket, key)] > 1:
            res.tampered.append(doc.discrepancy(where))
            named.add((bucket, key))
            buckets.add(bucket)
            continue
        head = store.head(bucket, key)
        if head is not None and head.sha256_meta == doc.sha256:
            res.stored_documents += 1
            named.add((bucket, key))
            buckets.add(bucket)
        else:
            res.not_stored.append(doc.discrepancy(where))
    res.unreferenced_objects = sum(
        1 for bucket in buckets for key in store.list_keys(bucket, f"{site_id}/")
        if (bucket, key) not in named)


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
