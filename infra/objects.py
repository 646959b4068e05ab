"""The local stack's object store: one SeaweedFS ``weed server`` with its S3 gateway, loopback only.

SeaweedFS (Apache-2.0, Go) is built from its Go module at install time (``make install``,
``python -m infra.objects build``): ``go install …@version`` refuses a module whose go.mod has
replace directives, so the module is downloaded through the Go module proxy (``go mod
download -json``), copied out of the read-only module cache and ``./weed`` built inside the
copy. The binary is cached per version in ``~/.cache/sohoa/seaweedfs-<version>/weed`` (or
``stack.seaweedfs_bin`` / ``$SEAWEEDFS_BIN``); nothing of SeaweedFS lives in this repository.

Each role gets its own S3 key (``secrets/objects.json``, 0600), and the gateway's identity file
(``objects/s3.json``) gives each only what it needs: a site writes and reads its own prefix of
the pages bucket (PUT and multipart uploads, by an IAM policy naming those S3 actions: never
DeleteObject, so it cannot hide a page under a delete marker), the workers read pages and
write (and so delete) outputs, the reader reads outputs. Both buckets are versioned: a PUT
over an existing key makes a new version and never destroys the old one. The pages bucket
(the original scans, which must never be deleted) is created with S3 object lock and a default
COMPLIANCE retention of ``stack.object_lock_days``: no key may delete a version before its
retention ends. The outputs bucket (OCR PDFs and text,
packages: derived data, made again from the pages) has no object lock, because a file that
becomes classified must keep no text at the centre: the OCR worker deletes every version of
its outputs (streams/outputs.py ``purge_file_outputs``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from infra.procs import (
    NotReady,
    StackError,
    log_tail,
    poll_ready,
    port_open,
    read_pid,
    running_pid,
    spawn_detached,
    terminate,
)
from sohoa.config import StackConfig, StoreConfig
from sohoa.errors import ExitCode

log = logging.getLogger(__name__)

MODULE = "github.com/seaweedfs/seaweedfs"
MIN_GO = (1, 26, 6)  # the module's go.mod asks for it
ROLES = ("admin", "workers", "reader")


# --- the binary -------------------------------------------------------------------------------

def weed_path(stack: StackConfig) -> Path:
    if stack.seaweedfs_bin is not None:
        return Path(stack.seaweedfs_bin)
    if os.environ.get("SEAWEEDFS_BIN"):
        return Path(os.environ["SEAWEEDFS_BIN"])
    return Path.home() / ".cache" / "sohoa" / f"seaweedfs-{stack.seaweedfs_version}" / "weed"


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise StackError(
            "Thiếu Go để dựng SeaweedFS. Cài bằng: apt-get install -y golang (Go ≥ "
            f"{'.'.join(map(str, MIN_GO))}), hoặc đặt SEAWEEDFS_BIN tới một weed có sẵn. "
            "(go not found: needed once to build the object store)")
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, timeout=60)
    m = re.match(r"go(\d+)\.(\d+)(?:\.(\d+))?", out.stdout.strip())
    if m and tuple(int(x or 0) for x in m.groups()) < MIN_GO:
        raise StackError(
            f"Go {out.stdout.strip()} quá cũ để dựng SeaweedFS (cần ≥ "
            f"{'.'.join(map(str, MIN_GO))}). (go too old for the seaweedfs module)")
    return go


def ensure_weed(stack: StackConfig, quiet: bool = False) -> Path:
    """The ``weed`` binary of ``stack.seaweedfs_version``; built once (minutes) when missing."""
    target = weed_path(stack)
    if target.is_file() and os.access(target, os.X_OK):
        return target
    if stack.seaweedfs_bin is not None or os.environ.get("SEAWEEDFS_BIN"):
        raise StackError(f"Không thấy weed tại {target} (stack.seaweedfs_bin / SEAWEEDFS_BIN).")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second `make` waits for the first build
        if target.is_file():
            return target
        _build(stack.seaweedfs_version, target, quiet)
    return target


def _build(version: str, target: Path, quiet: bool) -> None:
    go = _go()
    say = (lambda _m: None) if quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    say(f"Đang dựng SeaweedFS {version} từ Go module (vài phút, chỉ một lần)… "
        f"(building the object store once)")
    env = {**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    with tempfile.TemporaryDirectory(prefix="sohoa-weed-") as tmp:
        res = subprocess.run([go, "mod", "download", "-json", f"{MODULE}@{version}"],
                             cwd=tmp, env=env, capture_output=True, text=True, timeout=1800)
        try:
            src = Path(json.loads(res.stdout)["Dir"])
        except (ValueError, KeyError):
            raise StackError(
                f"Không tải được {MODULE}@{version} từ Go module proxy (exit {res.returncode}): "
                f"{(res.stdout + res.stderr)[-1500:]}") from None
        work = Path(tmp) / "src"
        shutil.copytree(src, work, symlinks=True)
        for d, _dirs, files in os.walk(work):  # the module cache is read-only
            os.chmod(d, 0o755)
            for f in files:
                with contextlib.suppress(OSError):
                    os.chmod(os.path.join(d, f), 0o644)
        out = target.with_name(target.name + ".part")
        res = subprocess.run([go, "build", "-trimpath", "-o", str(out), "./weed"], cwd=work,
                             env=env, capture_output=True, text=True, timeout=3600)
        if res.returncode != 0 or not out.is_file():
            raise StackError(f"Dựng SeaweedFS thất bại (go build exit {res.returncode}):\n"
                             f"{(res.stdout + res.stderr)[-3000:]}")
        os.chmod(out, 0o755)
        os.replace(out, target)
    say(f"Đã dựng SeaweedFS: {target}")


# --- credentials --------------------------------------------------------------------------------

def _new_key() -> dict[str, str]:
    return {"access_key_id": "SOHOA" + secrets.token_hex(8).upper(),
            "secret_access_key": secrets.token_urlsafe(30)}


def identities(keys: dict, pages: str, outputs: str) -> dict:
    """The gateway's identity file: what each key may do, bucket and prefix by prefix."""
    def ident(name: str, key: dict[str, str], actions: list[str]) -> dict:
        return {"name": name, "actions": actions,
                "credentials": [{"accessKey": key["access_key_id"],
                                 "secretKey": key["secret_access_key"]}]}

    out = [
        ident("sohoa-admin", keys["admin"], ["Admin", "Read", "List", "Tagging", "Write"]),
        # SeaweedFS's "Write" is also DeleteObject (a version or a delete marker): the workers
        # delete a classified file's outputs with it, and hold no Write on the pages bucket.
        ident("sohoa-workers", keys["workers"],
              [f"Read:{pages}/*", f"List:{pages}", f"Read:{outputs}/*", f"Write:{outputs}/*",
               f"List:{outputs}"]),
        ident("sohoa-reader", keys["reader"], [f"Read:{outputs}/*", f"List:{outputs}"]),
    ]
    policies = []
    for site, key in sorted(keys.get("sites", {}).items()):
        # No legacy actions: the site's rights are its IAM policy alone (SeaweedFS then
        # authorises each request by its precise S3 action, and "Write" would include
        # DeleteObject).
        out.append({**ident(f"site-{site}", key, []), "policyNames": [f"site-{site}"]})
        policies.append({"name": f"site-{site}",
                         "content": json.dumps(site_policy(pages, site), sort_keys=True)})
    return {"identities": out, "policies": policies}


SITE_ACTIONS = [
    "s3:PutObject", "s3:GetObject",  # one PUT; the HEAD before an upload
    "s3:CreateMultipartUpload", "s3:UploadPart", "s3:ListMultipartUploadParts",
    "s3:CompleteMultipartUpload", "s3:AbortMultipartUpload",  # parts, a resume, a give-up
]
SITE_DENIED = [
    "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObjectRetention",
    "s3:PutObjectLegalHold", "s3:BypassGovernanceRetention", "s3:PutObjectTagging",
    "s3:DeleteObjectTagging", "s3:PutObjectAcl",
]


def site_policy(pages: str, site: str) -> dict:
    """A site key's rights on its own prefix of the pages bucket: upload and read back, and
    nothing that hides or changes what is stored. A stolen site key cannot put a delete
    marker over a page (a plain GET would then say NoSuchKey and the centre would judge the
    page missing). The Deny is explicit so that no grant added later can bring it back."""
    prefix = f"arn:aws:s3:::{pages}/{site}/*"
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "UploadOwnPages", "Effect": "Allow", "Action": SITE_ACTIONS,
         "Resource": [prefix]},
        {"Sid": "NeverDeletePages", "Effect": "Deny", "Action": SITE_DENIED,
         "Resource": [f"arn:aws:s3:::{pages}/*"]},
    ]}


class ObjectStoreNode:
    """The object store of ``sohoa up`` and of the tests: same code, different state dirs."""

    def __init__(self, stack: StackConfig, store: StoreConfig | None = None) -> None:
        self.stack = stack
        self.store = store or StoreConfig()
        self.state_dir = Path(stack.state_dir).resolve()
        self.dir = self.state_dir / "objects"
        self.data_dir = self.dir / "data"
        self.pid_path = self.state_dir / "run" / "objects.pid"
        self.out_path = self.state_dir / "logs" / "objects.log"
        self.iam_path = self.dir / "s3.json"
        self.keys_path = self.state_dir / "secrets" / "objects.json"

    @property
    def endpoint(self) -> str:
        return f"http://{self.stack.host}:{self.stack.s3_port}"

    @property
    def ports(self) -> dict[str, int]:
        b = self.stack.weed_port_base
        return {"master": b, "master_grpc": b + 1, "volume": b + 2, "volume_grpc": b + 3,
                "filer": b + 4, "filer_grpc": b + 5, "s3_grpc": b + 6}

    @property
    def pid(self) -> int | None:
        return running_pid(self.pid_path, "weed")

    def running(self) -> bool:
        return self.pid is not None

    # --- keys ----------------------------------------------------------------------------
    def keys(self) -> dict:
        try:
            return json.loads(self.keys_path.read_text())
        except FileNotFoundError:
            return {}

    def ensure_keys(self, sites: list[str]) -> dict:
        """Every role's key (and each of ``sites``'), made once and kept in secrets/."""
        keys = self.keys()
        changed = False
        for role in ROLES:
            if role not in keys:
                keys[role], changed = _new_key(), True
        for site in sites:
            if site not in keys.setdefault("sites", {}):
                keys["sites"][site], changed = _new_key(), True
        if changed:
            self.keys_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.keys_path.parent, 0o700)
            tmp = self.keys_path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(keys, f, indent=2)
            os.replace(tmp, self.keys_path)
        return keys

    def store_config(self, role: str) -> StoreConfig:
        """[store] for one role: "admin", "workers", "reader" or "site:<site_id>"."""
        from pydantic import SecretStr

        keys = self.keys()
        key = keys["sites"][role[5:]] if role.startswith("site:") else keys[role]
        return self.store.model_copy(update={
            "endpoint": self.endpoint, "access_key_id": key["access_key_id"],
            "secret_access_key": SecretStr(key["secret_access_key"])})

    def store_env(self, role: str) -> dict[str, str]:
        cfg = self.store_config(role)
        assert cfg.secret_access_key is not None
        return {"SOHOA_STORE__ENDPOINT": self.endpoint,
                "SOHOA_STORE__ACCESS_KEY_ID": cfg.access_key_id or "",
                "SOHOA_STORE__SECRET_ACCESS_KEY": cfg.secret_access_key.get_secret_value(),
                "SOHOA_STORE__PAGES_BUCKET": cfg.pages_bucket,
                "SOHOA_STORE__OUTPUTS_BUCKET": cfg.outputs_bucket}

    # --- process -------------------------------------------------------------------------
    def argv(self, weed: Path) -> list[str]:
        p, host = self.ports, self.stack.host
        return [
            str(weed), "-logtostderr", "server",
            f"-ip={host}", f"-ip.bind={host}", f"-dir={self.data_dir}",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            "-filer", "-s3", f"-s3.port={self.stack.s3_port}", f"-s3.port.grpc={p['s3_grpc']}",
            f"-s3.config={self.iam_path}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-s3.autoCreateBucket=false",
            f"-filer.localSocket={self.dir / 'filer.sock'}",
            f"-s3.localSocket={self.dir / 's3.sock'}",
            # Nothing leaves the machine: no usage statistics sent anywhere.
            "-master.telemetry=false", "-metricsPort=0",
            "-master.volumeSizeLimitMB=256", "-volume.max=0",
        ]

    def start(self, sites: list[str] | None = None, wait: bool = True) -> None:
        keys = self.ensure_keys(sites or [])
        if self.running():
            log.info("object store already running", extra={"pid": self.pid})
            if wait:
                self.wait_ready()
            return
        for port in (self.stack.s3_port, *self.ports.values()):
            if port_open(self.stack.host, port):
                raise StackError(
                    f"Cổng {self.stack.host}:{port} đang bị chương trình khác dùng, kho đối "
                    f"tượng không khởi động được. Đổi stack.s3_port / stack.weed_port_base. "
                    f"(port {port} busy)")
        weed = ensure_weed(self.stack)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.iam_path.write_text(json.dumps(
            identities(keys, self.store.pages_bucket, self.store.outputs_bucket), indent=2))
        os.chmod(self.iam_path, 0o600)
        pid = spawn_detached(self.argv(weed), log_path=self.out_path, pid_path=self.pid_path,
                             cwd=self.dir)
        log.info("object store started", extra={"pid": pid, "endpoint": self.endpoint})
        if wait:
            self.wait_ready()
            self.ensure_buckets()

    def wait_ready(self, timeout_s: float | None = None) -> None:
        timeout_s = self.stack.start_timeout_s if timeout_s is None else timeout_s
        try:
            poll_ready(self._answers, exited=self._exited, timeout_s=timeout_s, interval_s=0.3,
                       retry_on=(OSError, RuntimeError))
        except NotReady as exc:
            raise StackError(
                ("Kho đối tượng đã dừng ngay khi khởi động" if exc.exited else
                 f"Kho đối tượng không trả lời sau {timeout_s:.0f} giây ({exc.last})")
                + f".\n--- {self.out_path} ---\n{log_tail(self.out_path)}") from None

    def _exited(self) -> bool:
        return read_pid(self.pid_path) is not None and not self.running()

    def _answers(self) -> bool:
        from sohoa.objectstore import ObjectStore, StoreError

        if not port_open(self.stack.host, self.stack.s3_port):
            return False
        try:
            ObjectStore(self.store_config("admin"), retries=0).list_buckets()
        except StoreError as exc:
            raise RuntimeError(str(exc)) from None
        return True

    def ensure_buckets(self) -> None:
        """The pages bucket with object lock (hence versioning) and a default COMPLIANCE
        retention; the outputs bucket versioned, without lock (its objects may have to go)."""
        from sohoa.objectstore import ObjectStore

        admin = ObjectStore(self.store_config("admin"))
        admin.ensure_locked_bucket(self.store.pages_bucket, self.stack.object_lock_days)
        if admin.ensure_versioned_bucket(self.store.outputs_bucket):
            log.warning("outputs bucket: default retention removed; versions stored before "
                        "stay locked until their retention ends", extra={
                            "bucket": self.store.outputs_bucket})

    def stop(self, timeout_s: float | None = None) -> bool:
        """SIGTERM, then SIGKILL after ``stack.objects_stop_timeout_s``: weed does not always
        stop promptly on SIGTERM. False if nothing ran."""
        pid = self.pid
        if pid is None:
            self.pid_path.unlink(missing_ok=True)
            return False
        clean = terminate(pid, self.stack.objects_stop_timeout_s if timeout_s is None
                          else timeout_s)
        self.pid_path.unlink(missing_ok=True)
        log.info("object store stopped", extra={"pid": pid, "clean": clean})
        return True

    def kill(self) -> None:
        from infra.procs import kill_now

        kill_now(self.pid, self.pid_path)


def main(argv: list[str]) -> ExitCode:
    """``python -m infra.objects build``: the binary, built once (``make install``)."""
    from sohoa.config import load_config

    if argv[:1] != ["build"]:
        print("usage: python -m infra.objects build", file=sys.stderr)
        return ExitCode.USAGE
    stack = load_config().stack
    if not stack.object_store:
        return ExitCode.OK
    try:
        path = ensure_weed(stack)
    except StackError as exc:
        print(str(exc), file=sys.stderr)
        return ExitCode.ERROR
    print(f"SeaweedFS: {path}")
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
