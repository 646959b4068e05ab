"""Every read of a page file named by an event goes through here: confined to the roots
configured for the event's site, size-capped and time-limited.

An event's URI is a claim made by whoever produced the event, so it is never simply opened.
A ``file://`` URI is read only when

- its path has no ``.``/``..``/empty component, no NUL, no query or fragment (refused before
  the disk is touched), and, with every symbolic link resolved, lies under one of the site's
  (resolved) roots: ``sources.sites.<site_id>``, else ``sources.default_roots`` with
  ``{site_id}`` filled in, else, with ``sources.watcher_roots``, the roots of the agent this
  machine runs for ``watcher.site_id``. A link is judged by where it leads: inside the root it
  is the site's own file, outside it is refused whether or not its target exists;
- the resolved path is then opened from the root down one component at a time with
  ``O_NOFOLLOW`` (a directory with ``O_DIRECTORY``): a link swapped in after the resolution is
  refused, not followed, so the check and the open cannot be raced apart;
- the final component, opened ``O_NONBLOCK`` (a FIFO cannot hang the open), is a regular file
  by ``fstat`` and no larger than ``sources.max_bytes``; the open, the read and the SHA-256
  check all finish within ``sources.read_timeout_s`` (they run in a helper thread: a read that
  blocks on a hung network share leaves that thread behind, not the worker).

A refusal says :data:`REFUSED` and nothing else: whether the path exists, what it is or how
large it is stays at the centre (``SourceRefused.detail``, for its log). Failures of a file
the site may send (missing, permission, changed since it was scanned) keep their plain reason,
without any part of the file's actual hash.

An ``s3://`` URI (object storage, ``[store]``) is read only when it names the pages bucket and
the event's own site's prefix, at the document's content address
``<site>/<sha256[:2]>/<sha256>`` (``sohoa.objectstore.page_key``); it is downloaded with the
workers' key (read-only on pages), into memory or an anonymous temporary file, and its SHA-256
must be the one its key names — by every call, :meth:`PageSources.open_confined` included.
When the key's latest version is not that (other bytes PUT over it, a delete marker), its older
versions are tried, newest first: a content address never changes, so a version whose SHA-256
is the one the key names is the document (logged as tampering; ``sohoa reconcile`` lists it).
:meth:`PageSources.stage_object` downloads one for several readers (the QC chunks of one
document, streams/staged_documents.py): a file in a private directory, named by that SHA-256
only once its bytes proved to be it. Other schemes are refused.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any, Self, TypeVar
from urllib.parse import unquote_to_bytes, urlsplit

from sohoa.objectstore import parse_uri

REFUSED = "refused: not a page this site may send"
_KEY_RE = re.compile(r"^(?P<site>[^/]+)/(?P<pre>[0-9a-f]{2})/(?P<sha>[0-9a-f]{64})$")
_CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

T = TypeVar("T")
log = logging.getLogger(__name__)


class SourceError(Exception):
    """The page cannot be read; ``str(exc)`` is safe to publish in a check or dead letter."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.detail = detail  # for the centre's own log only

    def __reduce__(self) -> tuple[Any, ...]:  # the detail survives the QC pool's pickling
        return (type(self), (str(self), self.detail))


class SourceUnavailable(SourceError):
    """The page's store could not be reached for now: the page is not at fault, so the caller
    waits and reads it again instead of judging it."""


class SourceRefused(SourceError):
    """The URI names something this site may not make the centre read."""

    def __init__(self, detail: str) -> None:
        super().__init__(REFUSED, detail)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.detail,))


@dataclass(frozen=True)
class VerifiedFile:
    """An open page whose bytes matched the event's SHA-256 when read through ``file``.

    ``path`` (``/proc/self/fd/N``) names the same open file for libraries that want a path;
    it is valid in this process while the context is open."""

    file: IO[bytes]
    path: str
    size: int


class PageSources:
    """The read policy of the centre's workers. Picklable (plain data), so a spawn pool gets
    it as an argument: build it with :meth:`from_settings` in the parent."""

    def __init__(self, roots: dict[str, list[str]], default_roots: list[str],
                 max_bytes: int, read_timeout_s: float, store: Any = None) -> None:
        self.roots = {site: [os.path.abspath(r) for r in rs] for site, rs in roots.items()}
        self.default_roots = list(default_roots)
        self.max_bytes = max_bytes
        self.read_timeout_s = read_timeout_s
        self.store_cfg = store  # sohoa.config.StoreConfig, or None: s3:// refused
        self._store: Any = None  # the client, made in each process that reads
        # Keys read from an older version because the latest was not the document (a PUT
        # over it or a delete marker: a stolen key at work). The reads happen in pool
        # processes that export no metrics, so the caller takes these and counts them.
        self.tampered: list[str] = []

    def __getstate__(self) -> dict[str, Any]:
        # A botocore client is not picklable; a copy starts with nothing to report, or a
        # pool task would report the parent's reads again.
        return {**self.__dict__, "_store": None, "tampered": []}

    def take_tampered(self) -> list[str]:
        """The tampered keys read since the last call (each read once), and forget them."""
        taken, self.tampered = self.tampered, []
        return taken

    @classmethod
    def from_settings(cls, settings: Any) -> Self:
        src = settings.sources
        roots: dict[str, list[str]] = {}
        if src.watcher_roots:
            roots[settings.watcher.site_id] = [str(r) for r in settings.watcher.roots]
        for site, cfg in src.sites.items():
            roots[site] = [str(r) for r in cfg.roots]
        store = settings.store if settings.store.enabled else None
        return cls(roots, list(src.default_roots), src.max_bytes, src.read_timeout_s, store)

    # --- policy ---------------------------------------------------------------------------
    def roots_for(self, site_id: str) -> list[str]:
        if site_id in self.roots:
            return self.roots[site_id]
        return [os.path.abspath(r.replace("{site_id}", site_id)) for r in self.default_roots]

    def locate(self, site_id: str, uri: str) -> tuple[str, list[str]]:
        """(root, components below it) of a URI this site may name; no disk access."""
        parts = urlsplit(uri)
        if parts.scheme == "s3":
            raise SourceRefused("s3 URI where a file was expected")
        if parts.scheme != "file":
            raise SourceRefused(f"scheme {parts.scheme!r} is not read by this worker")
        if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            raise SourceRefused("file URI with a host, query or fragment")
        raw = unquote_to_bytes(parts.path)
        if b"\x00" in raw:
            raise SourceRefused("NUL in path")
        path = os.fsdecode(raw)
        if not path.startswith("/"):
            raise SourceRefused("relative path")
        if any(c in ("", ".", "..") for c in path.split("/")[1:]):
            raise SourceRefused("empty, '.' or '..' component")
        comps = os.path.realpath(path).split("/")[1:]
        for root in self.roots_for(site_id):
            real_root = os.path.realpath(root)
            base = [c for c in real_root.split("/") if c]
            if len(comps) > len(base) and comps[:len(base)] == base:
                return real_root, comps[len(base):]
        raise SourceRefused(f"outside the roots of site {site_id!r}")

    def locate_object(self, site_id: str, uri: str) -> tuple[str, str, str]:
        """(bucket, key, SHA-256 the key names) of an ``s3://`` URI this site may name."""
        if self.store_cfg is None:
            raise SourceRefused("s3 URI but no object store is configured")
        try:
            bucket, key = parse_uri(uri)
        except ValueError as exc:
            raise SourceRefused(str(exc)) from None
        m = _KEY_RE.match(key)
        if bucket != self.store_cfg.pages_bucket or m is None or m["site"] != site_id \
                or m["sha"][:2] != m["pre"]:
            raise SourceRefused(f"s3 object outside the prefix of site {site_id!r}")
        return bucket, key, m["sha"]

    def _client(self) -> Any:
        if self._store is None:
            from sohoa.objectstore import ObjectStore

            self._store = ObjectStore(self.store_cfg)
        return self._store

    def _fetch(self, site_id: str, uri: str, sha256: str | None, out: IO[bytes]) -> int:
        """Download an object into ``out``, proving its SHA-256 (the key's, and ``sha256``
        when given); returns its size."""
        from sohoa.objectstore import StoreError

        bucket, key, named = self.locate_object(site_id, uri)
        if sha256 is not None and named != sha256:
            raise SourceRefused("s3 key is not the document's content address")
        try:
            actual, size = self._client().get_into(bucket, key, out, self.max_bytes)
        except StoreError as exc:
            if exc.code in ("NoSuchKey", "404"):
                # A delete marker over the key is not the document gone: its version stays.
                older = self._older_version(bucket, key, named, out)
                if older is not None:
                    return older
                raise SourceError("unreadable: not in the object store (not uploaded yet, "
                                  "or lost)", str(exc)) from None
            if exc.code == "TooLarge":
                raise SourceRefused(str(exc)) from None
            if exc.code in ("AccessDenied", "403"):
                raise SourceRefused(f"access denied: {exc}") from None
            if exc.transient:
                raise SourceUnavailable("unreadable: object store unavailable",
                                        str(exc)) from None
            raise SourceError("unreadable: object store refused the read", str(exc)) from None
        if actual != named:
            older = self._older_version(bucket, key, named, out)
            if older is not None:
                return older
        _compare(actual, named)
        return size

    def _older_version(self, bucket: str, key: str, named: str, out: IO[bytes]) -> int | None:
        """The document read from an older version of its key when the latest is not it (a
        delete marker, or other bytes PUT over it): a content address never changes, so a
        version whose SHA-256 is the one the key names is the document. Its size, written
        to ``out`` from the start, or None when there is none (``out`` then emptied)."""
        from sohoa.objectstore import StoreError

        store = self._client()
        try:
            versions = store.key_versions(bucket, key)
        except StoreError:
            return None
        for version_id, latest, deleted in versions:
            if latest or deleted:
                continue
            out.seek(0)
            out.truncate()
            try:
                actual, size = store.get_into(bucket, key, out, self.max_bytes, version_id)
            except StoreError:
                continue
            if actual == named:
                self.tampered.append(key)
                log.warning("page object tampered with: its latest version is not the "
                            "document; an older version is, and was read", extra={
                                "bucket": bucket, "key": key, "version_id": version_id})
                return size
        out.seek(0)
        out.truncate()
        return None

    # --- reads ----------------------------------------------------------------------------
    def read_verified(self, site_id: str, uri: str, sha256: str) -> bytes:
        """The page's bytes, after proving they are what the site hashed."""
        if uri.startswith("s3:"):
            def fetch() -> bytes:
                buf = io.BytesIO()
                self._fetch(site_id, uri, sha256, buf)
                return buf.getvalue()

            return _within(self.read_timeout_s, fetch, None)
        root, rel = self.locate(site_id, uri)

        def work() -> bytes:
            fd, size = _open_confined(root, rel, self.max_bytes)
            try:
                data = _read_all(fd, size, self.max_bytes)
            finally:
                os.close(fd)
            _compare(hashlib.sha256(data).hexdigest(), sha256)
            return data

        return _within(self.read_timeout_s, work, None)

    @contextmanager
    def open_verified(self, site_id: str, uri: str, sha256: str) -> Iterator[VerifiedFile]:
        """The page opened and hashed (streamed, not held in memory), rewound for the caller:
        for documents too big to read whole (pikepdf and Pillow open the file or its path)."""
        if uri.startswith("s3:"):
            with self._open_object(site_id, uri, sha256) as vf:
                yield vf
            return
        root, rel = self.locate(site_id, uri)

        def work() -> int:
            fd, _size = _open_confined(root, rel, self.max_bytes)
            try:
                h = hashlib.sha256()
                total = 0
                while chunk := os.read(fd, _CHUNK):
                    total += len(chunk)
                    if total > self.max_bytes:
                        raise SourceRefused(f"grew past {self.max_bytes} bytes while read")
                    h.update(chunk)
                _compare(h.hexdigest(), sha256)
                os.lseek(fd, 0, os.SEEK_SET)
            except BaseException:
                os.close(fd)
                raise
            return fd

        fd = _within(self.read_timeout_s, work, os.close)
        fh = os.fdopen(fd, "rb")
        try:
            yield VerifiedFile(fh, f"/proc/self/fd/{fd}", os.fstat(fd).st_size)
        finally:
            fh.close()


    @contextmanager
    def open_confined(self, site_id: str, uri: str) -> Iterator[VerifiedFile]:
        """The document opened under the same confinement, not hashed whole: for a reader
        that proves each page it uses by the page's own content digest (QC of a chunk of a
        500-page document must not hash the whole file again). An object is still proven
        whole: its bytes come over the network anyway, and its key names its SHA-256."""
        if uri.startswith("s3:"):
            with self._open_object(site_id, uri, None) as vf:
                yield vf
            return
        root, rel = self.locate(site_id, uri)
        fd = _within(self.read_timeout_s,
                     lambda: _open_confined(root, rel, self.max_bytes)[0], os.close)
        fh = os.fdopen(fd, "rb")
        try:
            yield VerifiedFile(fh, f"/proc/self/fd/{fd}", os.fstat(fd).st_size)
        finally:
            fh.close()


    def stage_object(self, site_id: str, uri: str, directory: str) -> str:
        """Download an object once for several readers on this machine: into a new private
        directory under ``directory``, as a file named by the SHA-256 its key names, a name
        it gets only after its bytes proved to be that. The caller removes the directory
        (``os.path.dirname`` of the path returned)."""
        _bucket, _key, sha256 = self.locate_object(site_id, uri)
        home = tempfile.mkdtemp(prefix="staged-", dir=directory)

        def fetch() -> str:
            partial = os.path.join(home, "partial")
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                self._fetch(site_id, uri, sha256, fh)
            final = os.path.join(home, sha256)
            os.rename(partial, final)
            return final

        try:
            return _within(self.read_timeout_s, fetch,
                           lambda p: shutil.rmtree(os.path.dirname(p), ignore_errors=True))
        except BaseException:
            shutil.rmtree(home, ignore_errors=True)
            raise

    @contextmanager
    def _open_object(self, site_id: str, uri: str, sha256: str | None
                     ) -> Iterator[VerifiedFile]:
        # An anonymous file (gone with its last descriptor), private to this process.
        with tempfile.TemporaryFile(prefix="sohoa-page-") as fh:
            def fetch() -> int:
                size = self._fetch(site_id, uri, sha256, fh)
                fh.flush()
                fh.seek(0)
                return size

            size = _within(self.read_timeout_s, fetch, None)
            yield VerifiedFile(fh, f"/proc/self/fd/{fh.fileno()}", size)


def _open_confined(root: str, rel: list[str], max_bytes: int) -> tuple[int, int]:
    """An fd of ``root/rel…`` opened without following any link below ``root``; its size."""
    try:
        dfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise SourceError("unreadable: the site's folder is not available",
                          f"root {root}: {exc}") from None
    try:
        for comp in rel[:-1]:
            nfd = os.open(comp, _DIR_FLAGS, dir_fd=dfd)
            os.close(dfd)
            dfd = nfd
        # Look before opening: opening a device or a FIFO can itself do something.
        if not stat.S_ISREG(os.stat(rel[-1], dir_fd=dfd, follow_symlinks=False).st_mode):
            raise SourceRefused("not a regular file")
        fd = os.open(rel[-1], _FILE_FLAGS, dir_fd=dfd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK, errno.ENXIO, errno.EISDIR):
            raise SourceRefused(f"link, non-directory or special file below the root: "
                                f"{exc.strerror}") from None
        raise SourceError(f"unreadable: {exc.strerror or 'error'}", str(exc)) from None
    finally:
        os.close(dfd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SourceRefused(f"not a regular file (mode {st.st_mode:o})")
        if st.st_size > max_bytes:
            raise SourceRefused(f"{st.st_size} bytes, over sources.max_bytes {max_bytes}")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def _read_all(fd: int, size: int, max_bytes: int) -> bytes:
    buf = bytearray()
    while chunk := os.read(fd, max(_CHUNK, size - len(buf) + 1)):
        buf += chunk
        if len(buf) > max_bytes:
            raise SourceRefused(f"grew past {max_bytes} bytes while read")
    return bytes(buf)


def _compare(actual: str, expected: str) -> None:
    if actual != expected:
        # No part of the actual hash: it would tell a guesser about the file's content.
        raise SourceError("sha256 mismatch: file changed since it was scanned")


def _within(timeout_s: float, work: Callable[[], T], abandon: Callable[[T], Any] | None) -> T:
    """``work()`` in a helper thread, waited for at most ``timeout_s``. A late result of an
    abandoned call is handed to ``abandon`` (closes its fd) by the helper itself."""
    box: dict[str, Any] = {}
    lock = threading.Lock()

    def run() -> None:
        try:
            value = work()
        except BaseException as exc:
            box["error"] = exc
            return
        with lock:
            if box.get("abandoned"):
                if abandon is not None:
                    abandon(value)
                return
            box["value"] = value

    t = threading.Thread(target=run, name="sohoa-page-read", daemon=True)
    t.start()
    t.join(timeout_s)
    with lock:
        if "value" not in box and "error" not in box:
            box["abandoned"] = True
            raise SourceError("unreadable: read timed out", f"no answer in {timeout_s} s")
    if "error" in box:
        raise box["error"]
    return box["value"]
