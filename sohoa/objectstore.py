"""The object store as sohoa uses it: S3 through botocore alone (imported only when used).

Keys are content addresses: a document is ``<site>/<sha256[:2]>/<sha256>`` in the pages bucket,
so the same bytes are one object however often a site sends them, and a key never names two
contents. Every write asks the server to verify a SHA-256 it is given
(``x-amz-checksum-sha256``: the server refuses the body with BadDigest when it differs) and
compares the checksum the server answers with the one computed here; a PUT carries
``If-None-Match: *``, so an existing object is never replaced (and the buckets' versioning
keeps every version anyway; the pages bucket's object lock forbids deleting one:
infra/objects.py).

Why botocore and not boto3 or minio: boto3 only adds resources and a transfer manager over
botocore; minio-py keeps the multipart calls a resumed upload needs (create, upload part,
list parts, complete) private, while botocore's are its public, documented API.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
import threading
import time
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import urlsplit

from sohoa.config import StoreConfig

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20
# Server-side conditions that pass: the gateway, a volume or the disk is back after a while.
_TRANSIENT_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout",
                    "503", "500", "502", "504", "XAmzContentSHA256Mismatch"}


class StoreError(Exception):
    """A store call failed. ``code`` is S3's error code (or ``unreachable``); ``transient``
    says whether trying again later may succeed."""

    def __init__(self, message: str, code: str = "", transient: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.transient = transient


class ChecksumMismatch(StoreError):
    def __init__(self, message: str) -> None:
        super().__init__(message, "BadDigest", transient=False)


def page_key(site_id: str, sha256: str) -> str:
    if not _SHA_RE.match(sha256):
        raise ValueError(f"not a SHA-256: {sha256!r}")
    return f"{site_id}/{sha256[:2]}/{sha256}"


def page_uri(bucket: str, site_id: str, sha256: str) -> str:
    return f"s3://{bucket}/{page_key(site_id, sha256)}"


def parse_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of an ``s3://bucket/key`` URI; ValueError for anything else."""
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ValueError("not an s3://bucket/key URI")
    return parts.netloc, parts.path.lstrip("/")


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def composite_sha256(part_digests: list[bytes]) -> str:
    """S3's checksum of a multipart object: SHA-256 over the parts' raw digests, ``-N``."""
    return f"{b64(hashlib.sha256(b''.join(part_digests)).digest())}-{len(part_digests)}"


class RateLimit:
    """A token bucket shared by every body an uploader sends: ``bytes_per_s`` on average,
    bursts of at most a quarter second's worth. 0 = no limit."""

    def __init__(self, bytes_per_s: int) -> None:
        self.rate = bytes_per_s
        self._lock = threading.Lock()
        self._tokens = 0.0
        self._at = time.monotonic()

    def take(self, n: int) -> None:
        if self.rate <= 0 or n <= 0:
            return
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.rate / 4, self._tokens + (now - self._at) * self.rate)
            self._at = now
            self._tokens -= n
            debt = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if debt > 0:
            time.sleep(debt)


class _Body:
    """A part's bytes as the file-like body botocore streams, paced by a :class:`RateLimit`
    (the HTTP client reads it in small blocks, so the cap holds within a part too)."""

    def __init__(self, data: bytes | memoryview, limit: RateLimit | None) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._limit = limit

    def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n is None or n < 0 else min(len(self._data), self._pos + n)
        chunk = bytes(self._data[self._pos:end])
        self._pos = end
        if self._limit is not None:
            self._limit.take(len(chunk))
        return chunk

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: len(self._data)}[whence]
        self._pos = max(0, min(len(self._data), base + pos))
        return self._pos

    def tell(self) -> int:
        return self._pos

    def __len__(self) -> int:
        return len(self._data)


@dataclass(frozen=True)
class Head:
    size: int
    sha256_meta: str | None       # the document SHA-256 the writer declared
    checksum_sha256: str | None   # the server's (``...-N`` for a multipart object)


@dataclass(frozen=True)
class Part:
    number: int
    etag: str
    checksum_sha256: str
    size: int


class ObjectStore:
    """One S3 client (thread-safe; one per process: botocore clients are not picklable)."""

    def __init__(self, cfg: StoreConfig, retries: int = 2) -> None:
        if cfg.endpoint is None:
            raise StoreError("no object store configured ([store] endpoint)", "config", False)
        self.cfg = cfg
        self._retries = retries
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                import botocore.session
                from botocore.config import Config

                secret = self.cfg.secret_access_key
                session = botocore.session.get_session()
                self._client = session.create_client(
                    "s3", endpoint_url=self.cfg.endpoint, region_name=self.cfg.region,
                    aws_access_key_id=self.cfg.access_key_id or "",
                    aws_secret_access_key=secret.get_secret_value() if secret else "",
                    config=Config(
                        signature_version="s3v4", connect_timeout=self.cfg.connect_timeout_s,
                        read_timeout=self.cfg.read_timeout_s,
                        retries={"max_attempts": self._retries + 1, "mode": "standard"},
                        # The SHA-256 we send is the checksum; no CRC32 added on top, and the
                        # body is not hashed a second time for the signature.
                        request_checksum_calculation="when_required",
                        response_checksum_validation="when_required",
                        s3={"addressing_style": "path", "payload_signing_enabled": False},
                        max_pool_connections=4,
                    ))
            return self._client

    # What an uploader calls: their models are loaded by :meth:`warm`.
    _UPLOAD_OPS = ("HeadObject", "PutObject", "CreateMultipartUpload", "UploadPart",
                   "ListParts", "CompleteMultipartUpload", "AbortMultipartUpload")

    def warm(self) -> None:
        """Build the client and load the models of the upload calls now, without a request:
        importing botocore and parsing its S3 model cost about half a second of CPU, which
        the first document would otherwise wait for."""
        model = self.client.meta.service_model
        for op in self._UPLOAD_OPS:
            om = model.operation_model(op)
            for shape in (om.input_shape, om.output_shape):
                if shape is not None:
                    _ = shape.members

    def _call(self, op: str, **kw: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, op)(**kw)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            code = str(err.get("Code") or exc.response.get("ResponseMetadata", {})
                       .get("HTTPStatusCode", ""))
            msg = err.get("Message") or str(exc)
            if code in ("BadDigest", "InvalidDigest"):
                raise ChecksumMismatch(f"{op}: the store refused the bytes: {msg}") from None
            raise StoreError(f"{op}: {code}: {msg}", code,
                             transient=code in _TRANSIENT_CODES) from None
        except BotoCoreError as exc:
            raise StoreError(f"{op}: object store unreachable: {exc}", "unreachable") from None

    # --- buckets -----------------------------------------------------------------------------
    def list_buckets(self) -> list[str]:
        return [b["Name"] for b in self._call("list_buckets").get("Buckets", [])]

    def ensure_locked_bucket(self, bucket: str, retention_days: int) -> None:
        if bucket not in self.list_buckets():
            self._call("create_bucket", Bucket=bucket, ObjectLockEnabledForBucket=True)
        self._call("put_bucket_versioning", Bucket=bucket,
                   VersioningConfiguration={"Status": "Enabled"})
        self._call("put_object_lock_configuration", Bucket=bucket, ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": retention_days}}})

    def ensure_versioned_bucket(self, bucket: str) -> bool:
        """A versioned bucket without object lock (derived data that may have to be deleted:
        the OCR outputs). A bucket an older stack created with a default retention loses
        that default, so new versions can be deleted; the versions already stored stay locked
        until their own retention ends (no key can shorten it). Returns True when a default
        retention was removed."""
        if bucket not in self.list_buckets():
            self._call("create_bucket", Bucket=bucket)
        self._call("put_bucket_versioning", Bucket=bucket,
                   VersioningConfiguration={"Status": "Enabled"})
        try:
            lock = self._call("get_object_lock_configuration", Bucket=bucket)
        except StoreError as exc:
            if exc.code in ("ObjectLockConfigurationNotFoundError", "404",
                            "InvalidBucketState"):
                return False
            raise
        if not lock.get("ObjectLockConfiguration", {}).get("Rule"):
            return False
        self._call("put_object_lock_configuration", Bucket=bucket,
                   ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"})
        return True

    # --- objects -----------------------------------------------------------------------------
    def head(self, bucket: str, key: str) -> Head | None:
        try:
            r = self._call("head_object", Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        except StoreError as exc:
            if exc.code in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return Head(int(r.get("ContentLength", 0)), r.get("Metadata", {}).get("sha256"),
                    r.get("ChecksumSHA256"))

    def put(self, bucket: str, key: str, data: bytes | memoryview, sha256_hex: str,
            limit: RateLimit | None = None, content_type: str = "application/octet-stream",
            ) -> str:
        """One PUT, never over an existing object; returns the server's checksum after
        comparing it with ours."""
        digest = bytes.fromhex(sha256_hex)
        if hashlib.sha256(data).digest() != digest:
            raise ChecksumMismatch("the bytes read are not the document hashed")
        r = self._call("put_object", Bucket=bucket, Key=key, Body=_Body(data, limit),
                       ContentLength=len(data), ChecksumSHA256=b64(digest),
                       Metadata={"sha256": sha256_hex}, IfNoneMatch="*",
                       ContentType=content_type)
        got = r.get("ChecksumSHA256")
        if got is not None and got != b64(digest):
            raise ChecksumMismatch(f"server checksum {got} is not the local SHA-256")
        return got or ""

    def create_multipart(self, bucket: str, key: str, sha256_hex: str,
                         content_type: str = "application/octet-stream") -> str:
        r = self._call("create_multipart_upload", Bucket=bucket, Key=key,
                       ChecksumAlgorithm="SHA256", Metadata={"sha256": sha256_hex},
                       ContentType=content_type)
        return r["UploadId"]

    def upload_part(self, bucket: str, key: str, upload_id: str, number: int,
                    data: bytes | memoryview, limit: RateLimit | None = None,
                    digest: bytes | None = None) -> Part:
        digest = digest or hashlib.sha256(data).digest()
        r = self._call("upload_part", Bucket=bucket, Key=key, UploadId=upload_id,
                       PartNumber=number, Body=_Body(data, limit), ContentLength=len(data),
                       ChecksumSHA256=b64(digest))
        got = r.get("ChecksumSHA256")
        if got is not None and got != b64(digest):
            raise ChecksumMismatch(f"part {number}: server checksum {got} is not ours")
        return Part(number, r["ETag"], b64(digest), len(data))

    def list_parts(self, bucket: str, key: str, upload_id: str) -> dict[int, Part]:
        out: dict[int, Part] = {}
        marker = 0
        while True:
            r = self._call("list_parts", Bucket=bucket, Key=key, UploadId=upload_id,
                           PartNumberMarker=marker)
            for p in r.get("Parts", []):
                out[p["PartNumber"]] = Part(p["PartNumber"], p["ETag"],
                                            p.get("ChecksumSHA256", ""), int(p["Size"]))
            if not r.get("IsTruncated"):
                return out
            marker = int(r["NextPartNumberMarker"])

    def complete(self, bucket: str, key: str, upload_id: str, parts: list[Part]) -> str:
        r = self._call("complete_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id,
                       IfNoneMatch="*", MultipartUpload={"Parts": [
                           {"PartNumber": p.number, "ETag": p.etag,
                            "ChecksumSHA256": p.checksum_sha256} for p in parts]})
        return r.get("ChecksumSHA256") or ""

    def list_keys(self, bucket: str, prefix: str) -> list[str]:
        keys: list[str] = []
        token: dict[str, str] = {}
        while True:
            r = self._call("list_objects_v2", Bucket=bucket, Prefix=prefix, **token)
            keys += [o["Key"] for o in r.get("Contents", [])]
            if not r.get("IsTruncated"):
                return keys
            token = {"ContinuationToken": r["NextContinuationToken"]}

    def list_versions(self, bucket: str, prefix: str) -> list[tuple[str, str]]:
        """(key, version id) of every version under ``prefix``, delete markers included."""
        out: list[tuple[str, str]] = []
        marker: dict[str, str] = {}
        while True:
            r = self._call("list_object_versions", Bucket=bucket, Prefix=prefix, **marker)
            for v in (*r.get("Versions", []), *r.get("DeleteMarkers", [])):
                out.append((v["Key"], v["VersionId"]))
            if not r.get("IsTruncated"):
                return out
            marker = {"KeyMarker": r["NextKeyMarker"]}
            if r.get("NextVersionIdMarker"):
                marker["VersionIdMarker"] = r["NextVersionIdMarker"]

    def delete_versions(self, bucket: str, prefix: str, rounds: int = 3) -> int:
        """Delete every version and delete marker under ``prefix`` for good (a key's whole
        history, not just a marker over it), as many as can be: one refused (a version still
        under retention) does not stop the others. Listed again until nothing is left (a
        version written meanwhile), at most ``rounds`` times. Returns how many were deleted;
        raises StoreError, saying how many are left, if any is."""
        if not prefix.strip("/"):
            raise ValueError("refusing to delete a whole bucket's versions")
        deleted = 0
        for _ in range(rounds):
            versions = self.list_versions(bucket, prefix)
            if not versions:
                return deleted
            refused: StoreError | None = None
            for key, version_id in versions:
                try:
                    self._call("delete_object", Bucket=bucket, Key=key, VersionId=version_id)
                    deleted += 1
                except StoreError as exc:
                    if exc.code == "unreachable":
                        raise
                    refused = refused or exc
            if refused is not None:
                left = len(self.list_versions(bucket, prefix))
                raise StoreError(f"{left} versions under {prefix} not deleted: {refused}",
                                 refused.code, refused.transient)
        raise StoreError(f"versions under {prefix} still there after {rounds} rounds of "
                         f"deletes", "NotDeleted")

    def abort(self, bucket: str, key: str, upload_id: str) -> None:
        self._call("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id)

    def key_versions(self, bucket: str, key: str) -> list[tuple[str, bool, bool]]:
        """(version id, is the latest, is a delete marker) of every version of ``key``
        exactly (not of the keys it prefixes), newest first."""
        found: list[tuple[str, bool, bool, Any]] = []
        marker: dict[str, str] = {}
        while True:
            r = self._call("list_object_versions", Bucket=bucket, Prefix=key, **marker)
            for kind, deleted in (("Versions", False), ("DeleteMarkers", True)):
                found += [(v["VersionId"], bool(v.get("IsLatest")), deleted,
                           v.get("LastModified")) for v in r.get(kind, []) if v["Key"] == key]
            if not r.get("IsTruncated"):
                break
            marker = {"KeyMarker": r["NextKeyMarker"]}
            if r.get("NextVersionIdMarker"):
                marker["VersionIdMarker"] = r["NextVersionIdMarker"]
        found.sort(key=lambda f: (f[1], f[3] is not None, f[3] or 0), reverse=True)
        return [(vid, latest, deleted) for vid, latest, deleted, _at in found]

    def get_into(self, bucket: str, key: str, out: IO[bytes], max_bytes: int,
                 version_id: str | None = None) -> tuple[str, int]:
        """Stream an object (its latest version, or ``version_id``) into ``out``; returns
        (SHA-256 hex, size). Refuses (StoreError ``TooLarge``) an object over ``max_bytes``
        before reading it."""
        version = {"VersionId": version_id} if version_id else {}
        r = self._call("get_object", Bucket=bucket, Key=key, **version)
        body = r["Body"]
        try:
            if int(r.get("ContentLength", 0)) > max_bytes:
                raise StoreError(f"{r['ContentLength']} bytes, over {max_bytes}", "TooLarge",
                                 transient=False)
            h = hashlib.sha256()
            total = 0
            while chunk := body.read(_CHUNK):
                total += len(chunk)
                if total > max_bytes:
                    raise StoreError(f"grew past {max_bytes} bytes", "TooLarge", False)
                h.update(chunk)
                out.write(chunk)
        except (OSError, ValueError) as exc:
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"get_object: read cut short: {exc}", "unreachable") from None
        finally:
            body.close()
        return h.hexdigest(), total

    def put_file(self, bucket: str, key: str, f: IO[bytes], sha256_hex: str,
                 content_type: str = "application/octet-stream",
                 part_size: int = 64 * 1024 * 1024) -> None:
        """A centre-side file (an OCR output, a package): one PUT up to ``part_size``, else in
        parts read one at a time. An existing object with the same SHA-256 is fine (a
        replay); one with other bytes is an error: keys are never reused."""
        try:
            first = f.read(part_size)
            rest = f.read(1)
            if not rest:
                self.put(bucket, key, first, sha256_hex, content_type=content_type)
                return
            upload_id = self.create_multipart(bucket, key, sha256_hex, content_type)
            try:
                whole = hashlib.sha256(first)
                parts = [self.upload_part(bucket, key, upload_id, 1, first)]
                chunk = rest + f.read(part_size - 1)
                while chunk:
                    whole.update(chunk)
                    parts.append(self.upload_part(bucket, key, upload_id, len(parts) + 1,
                                                  chunk))
                    chunk = f.read(part_size)
                if whole.hexdigest() != sha256_hex:
                    raise ChecksumMismatch("the file's bytes are not the SHA-256 given")
                got = self.complete(bucket, key, upload_id, parts)
            except BaseException:
                with contextlib.suppress(StoreError):
                    self.abort(bucket, key, upload_id)
                raise
            want = composite_sha256([base64.b64decode(p.checksum_sha256) for p in parts])
            if got and got != want:
                raise ChecksumMismatch(f"store's checksum {got} is not the parts' {want}")
        except StoreError as exc:
            if exc.code not in ("PreconditionFailed", "412"):
                raise
            head = self.head(bucket, key)
            if head is None or head.sha256_meta != sha256_hex:
                raise StoreError(f"{key} already holds other bytes", "Conflict", False) from None
