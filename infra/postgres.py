"""A private PostgreSQL cluster made with the system's initdb (run as `postgres` under root)."""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from infra.procs import (
    NotReady,
    StackError,
    alive,
    log_tail,
    poll_ready,
    port_open,
    running_pid,
    spawn_detached,
)
from sohoa.config import StackConfig

log = logging.getLogger(__name__)

PG_USER = "postgres"
APP_ROLE = "sohoa"  # owns the database and its tables; runs the migrations
WRITER_ROLE = "sohoa_writer"  # the consumer, plan imports
READER_ROLE = "sohoa_reader"  # status, reports, /metrics gauges, Grafana
APP_ROLES = (APP_ROLE, WRITER_ROLE, READER_ROLE)
APP_DB = "sohoa"
FALLBACK_ROOT = Path("/var/lib/sohoa")
# The administration connection's peer map (pg_ident.conf): OS user -> the superuser.
ADMIN_MAP = "sohoa_admin"


def _find_bin_dir() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(Path(p).parent.parent.name)
                        if Path(p).parent.parent.name.isdigit() else 0)
    if candidates:
        return Path(candidates[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def pg_bin_dir() -> Path:
    """The PostgreSQL server binaries; installs Debian's postgresql when root and missing."""
    found = _find_bin_dir()
    if found:
        return found
    if os.geteuid() != 0:
        raise StackError(
            "Không tìm thấy PostgreSQL (initdb, pg_ctl). Cài bằng: sudo apt-get install -y "
            "postgresql (hoặc sudo infra/install-system-deps.sh). (PostgreSQL server not found)"
        )
    log.info("installing postgresql with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", "postgresql"]
    if subprocess.run(cmd, env=env, capture_output=True, timeout=1800).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=1800)
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
        if res.returncode != 0:
            raise StackError(f"apt-get install postgresql thất bại: {res.stderr[-1500:]}")
    found = _find_bin_dir()
    if not found:
        raise StackError("postgresql đã cài nhưng không thấy initdb trong /usr/lib/postgresql")
    return found


def _datadir_record(state_dir: Path) -> Path:
    """Where a state dir records the cluster directory it chose (see PostgresNode.root)."""
    return state_dir / "pg" / "datadir"


def pgpass_path(state_dir: Path) -> Path:
    """The libpq password file of the local stack's roles (mode 0600, in a 0700 directory).

    DSNs name it (``?passfile=``) instead of carrying a password: nothing printed, logged or put
    in a process environment holds a secret, and libpq refuses a file others can read."""
    return Path(state_dir).resolve() / "secrets" / "pgpass"


def discard_cluster(state_dir: Path) -> None:
    """Delete the cluster of a throw-away stack (tests, benchmarks) once its server is stopped.

    A cluster the ``postgres`` user could not keep under ``state_dir`` lives in FALLBACK_ROOT,
    so removing the state dir leaves it behind: 0.3–2 GB a run, until the disk is full. Only
    a cluster the state dir's record places under FALLBACK_ROOT is touched.
    """
    record = _datadir_record(Path(state_dir))
    if not record.exists():
        return
    root = Path(record.read_text().strip())
    if FALLBACK_ROOT in root.parents:
        shutil.rmtree(root, ignore_errors=True)


class PostgresNode:
    def __init__(self, stack: StackConfig) -> None:
        self.stack = stack
        self.state_dir = Path(stack.state_dir).resolve()
        self.meta_dir = _datadir_record(self.state_dir).parent
        self.logs_dir = self.state_dir / "logs"
        self.log_path = self.logs_dir / "postgres.log"
        self.pid_path = self.state_dir / "run" / "postgres.pid"
        self.as_root = os.geteuid() == 0
        self._root: Path | None = None

    # --- where the cluster lives -------------------------------------------------------------
    @property
    def root(self) -> Path:
        """Holds data/ and sock/. Under the state dir unless `postgres` cannot reach it."""
        if self._root is None:
            self._root = self._choose_root()
        return self._root

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def sock_dir(self) -> Path:
        return self.root / "sock"

    def _choose_root(self) -> Path:
        record = _datadir_record(self.state_dir)
        if record.exists():
            return Path(record.read_text().strip())
        self.meta_dir.mkdir(parents=True, exist_ok=True)
        root = self.meta_dir
        if self.as_root and not self._reachable_by_pg(self.meta_dir):
            digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:10]
            root = FALLBACK_ROOT / f"pg-{digest}"
            log.info("state dir not traversable by the postgres user; cluster lives elsewhere",
                     extra={"pg_root": str(root), "state_dir": str(self.state_dir)})
        # Unix socket paths are limited to ~107 bytes.
        if len(str(root / "sock" / f".s.PGSQL.{self.stack.postgres_port}.lock")) > 100:
            digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:10]
            root = FALLBACK_ROOT / f"pg-{digest}"
        record.write_text(f"{root}\n")
        return root

    @staticmethod
    def _reachable_by_pg(path: Path) -> bool:
        res = subprocess.run(["runuser", "-u", PG_USER, "--", "test", "-x", str(path)],
                             capture_output=True, timeout=30)
        return res.returncode == 0

    # --- running the server binaries ----------------------------------------------------------
    def _run_kwargs(self) -> dict:
        if not self.as_root:
            return {}
        return {"user": PG_USER, "group": pwd.getpwnam(PG_USER).pw_gid, "extra_groups": [],
                "cwd": "/", "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                     "HOME": pwd.getpwnam(PG_USER).pw_dir, "LC_ALL": "C.UTF-8"}}

    def _run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              **self._run_kwargs())

    def _chown(self, path: Path) -> None:
        if self.as_root:
            pw = pwd.getpwnam(PG_USER)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    @property
    def pid(self) -> int | None:
        return running_pid(self.pid_path, str(self.data_dir))

    def running(self) -> bool:
        return self.pid is not None

    def initdb(self, bindir: Path) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        for d in (self.root, self.data_dir, self.sock_dir):
            d.mkdir(parents=True, exist_ok=True)
            self._chown(d)
        self.data_dir.chmod(0o700)
        # Never a trust window: write_config() replaces these rules before the first start.
        res = self._run(str(bindir / "initdb"), "-D", str(self.data_dir), "-U", PG_USER,
                        "--auth-local=peer", "--auth-host=scram-sha-256", "-E", "UTF8",
                        "--locale=C.UTF-8")
        if res.returncode != 0:
            raise StackError(f"initdb thất bại (initdb failed): {res.stderr[-2000:]}")
        conf = self.data_dir / "postgresql.conf"
        with open(conf, "a") as f:
            f.write("\n# sohoa: settings of the local stack, rewritten on each start\n"
                    "include_if_exists = 'sohoa.conf'\n")
        log.info("postgres cluster initialised", extra={"data_dir": str(self.data_dir)})

    def write_config(self) -> None:
        s = self.stack
        path = self.data_dir / "sohoa.conf"
        path.write_text(
            "# written by sohoa (infra/postgres.py) on every start\n"
            f"listen_addresses = '{s.host}'\n"
            f"port = {s.postgres_port}\n"
            f"unix_socket_directories = '{self.sock_dir}'\n"
            "fsync = on\n"               # durability is what the tests prove
            "synchronous_commit = on\n"
            "full_page_writes = on\n"
            "shared_buffers = 128MB\n"
            "max_connections = 200\n"
            "logging_collector = off\n"
            "log_min_messages = warning\n"
            "log_line_prefix = '%m [%p] %q%u@%d '\n"
            "password_encryption = 'scram-sha-256'\n"
        )
        self._chown(path)
        self._write_auth()

    def _write_auth(self) -> None:
        """Password (SCRAM-SHA-256) for every role over TCP and the socket; the superuser only
        over the socket, by peer, for the OS user that already owns the cluster's processes
        (root or the user running it) — it has no password, so it cannot log in over TCP."""
        admins = sorted({pwd.getpwuid(os.geteuid()).pw_name, PG_USER})
        hba = self.data_dir / "pg_hba.conf"
        hba.write_text(
            "# written by sohoa (infra/postgres.py) on every start\n"
            "# TYPE  DATABASE  USER      ADDRESS  METHOD\n"
            f"local   all       {PG_USER}            peer map={ADMIN_MAP}\n"
            "local   all       all                scram-sha-256\n"
            f"host    all       {PG_USER}  all      reject\n"
            "host    all       all       all      scram-sha-256\n")
        ident = self.data_dir / "pg_ident.conf"
        ident.write_text("# written by sohoa (infra/postgres.py) on every start\n"
                         + "".join(f"{ADMIN_MAP}  {u}  {PG_USER}\n" for u in admins))
        for path in (hba, ident):
            path.chmod(0o600)
            self._chown(path)

    def start(self, wait: bool = True) -> None:
        if self.running():
            # A server started by an older sohoa may still trust everyone: the rules are
            # rewritten here and ensure_app_database() reloads them.
            self._write_auth()
            if wait:
                self.wait_ready()
            return
        s = self.stack
        bindir = pg_bin_dir()
        self.initdb(bindir)
        self.sock_dir.mkdir(parents=True, exist_ok=True)
        self._chown(self.sock_dir)
        stale = self.data_dir / "postmaster.pid"
        if stale.exists():
            old = stale.read_text().splitlines()[0:1]
            if old and old[0].isdigit() and alive(int(old[0])):
                raise StackError(
                    f"PostgreSQL khác đang chạy trên thư mục dữ liệu {self.data_dir} "
                    f"(pid {old[0]}). Dừng nó: pg_ctl stop -D {self.data_dir} -m fast")
        if port_open(s.host, s.postgres_port):
            raise StackError(
                f"Cổng {s.host}:{s.postgres_port} đang bị chương trình khác dùng, PostgreSQL không "
                f"khởi động được. Dừng chương trình đó (ss -ltnp | grep {s.postgres_port}) hoặc "
                f"đổi stack.postgres_port. (port {s.postgres_port} busy)")
        self.write_config()
        kw = self._run_kwargs()
        argv = [str(bindir / "postgres"), "-D", str(self.data_dir)]
        pid = spawn_detached(argv, log_path=self.log_path, pid_path=self.pid_path,
                             env=kw.get("env"), cwd=Path("/"),
                             user=kw.get("user"), group=kw.get("group"))
        log.info("postgres started", extra={"pid": pid, "port": s.postgres_port})
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout_s: float | None = None) -> None:
        import psycopg

        timeout_s = self.stack.start_timeout_s if timeout_s is None else timeout_s
        try:
            poll_ready(self._accepts, exited=lambda: not self.running(), timeout_s=timeout_s,
                       interval_s=0.2, retry_on=(psycopg.OperationalError,))
        except NotReady as exc:
            raise StackError(self._failure(
                "PostgreSQL đã dừng ngay khi khởi động" if exc.exited else
                f"PostgreSQL không nhận kết nối sau {timeout_s:.0f} giây ({exc.last})")) from None

    def _accepts(self) -> bool:
        import psycopg

        with psycopg.connect(self.superuser_dsn("postgres"), connect_timeout=3):
            return True

    def _failure(self, headline: str) -> str:
        return (f"{headline}.\n--- {self.log_path} ---\n{log_tail(self.log_path)}\n"
                "Cách xử lý: kiểm tra cổng bị chiếm (ss -ltnp), dung lượng đĩa, quyền của thư mục "
                f"dữ liệu {self.data_dir}. (PostgreSQL failed to start: see the log above)")

    def stop(self, timeout_s: float = 60.0) -> bool:
        """Fast shutdown (`pg_ctl stop -m fast`). False if nothing ran."""
        pid = self.pid
        if pid is None:
            self.pid_path.unlink(missing_ok=True)
            return False
        bindir = pg_bin_dir()
        res = self._run(str(bindir / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "fast",
                        "-w", "-t", str(int(timeout_s)), timeout=timeout_s + 10)
        from infra.procs import terminate, wait_dead

        if not wait_dead(pid, 10.0):
            log.warning("pg_ctl stop did not stop postgres; signalling",
                        extra={"pid": pid, "stderr": res.stderr[-500:]})
            terminate(pid, timeout_s)
        self.pid_path.unlink(missing_ok=True)
        log.info("postgres stopped", extra={"pid": pid})
        return True

    # --- connections ---------------------------------------------------------------------------
    def superuser_dsn(self, dbname: str = "postgres") -> str:
        """The cluster's superuser over the Unix socket (peer auth): administration only —
        creating roles and databases — never a client of the running stack."""
        from psycopg.conninfo import make_conninfo

        return make_conninfo(user=PG_USER, dbname=dbname, host=str(self.sock_dir),
                             port=self.stack.postgres_port)

    def app_dsn(self, dbname: str = APP_DB, role: str = APP_ROLE) -> str:
        return role_dsn(self.stack.host, self.stack.postgres_port, dbname, role,
                        pgpass_path(self.state_dir))

    def ensure_app_database(self) -> None:
        """The roles (owner ``sohoa``, ``sohoa_writer``, ``sohoa_reader``; none a superuser,
        each with a SCRAM password kept in :func:`pgpass_path`) and the database ``sohoa``.

        Run on every start: a cluster made before the roles had passwords (or with ``sohoa``
        a superuser) is brought to this shape, and a lost password file is made anew."""
        import psycopg
        from psycopg import sql

        passwords = ensure_pgpass(pgpass_path(self.state_dir))
        with psycopg.connect(self.superuser_dsn(), autocommit=True) as conn:
            for role in APP_ROLES:
                verifier = conn.pgconn.encrypt_password(
                    passwords[role].encode(), role.encode(), b"scram-sha-256").decode()
                exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                                      (role,)).fetchone()
                # Only a SCRAM verifier travels: the password never appears in a statement.
                conn.execute(sql.SQL(
                    "{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                    "NOBYPASSRLS PASSWORD {}").format(
                    sql.SQL("ALTER" if exists else "CREATE"), sql.Identifier(role),
                    sql.Literal(verifier)))
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                (APP_DB,)).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(APP_DB), sql.Identifier(APP_ROLE)))
            conn.execute("SELECT pg_reload_conf()")

    def create_database(self, name: str) -> str:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.superuser_dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(APP_ROLE)))
        return self.app_dsn(name)


def role_dsn(host: str, port: int, dbname: str, role: str, passfile: Path) -> str:
    """A URL DSN of ``role`` whose password libpq reads from ``passfile``."""
    from urllib.parse import quote

    return (f"postgresql://{role}@{host}:{port}/{quote(dbname, safe='')}"
            f"?passfile={quote(str(passfile), safe='/')}")


def ensure_pgpass(path: Path) -> dict[str, str]:
    """The local stack's role passwords, made (random, 256 bits) the first time.

    ``path`` is a libpq password file (``host:port:db:user:password``, one line per role, any
    host, port and database); its directory is 0700 and the file 0600, created so from the start
    (no window where another user could read it)."""
    import secrets

    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    passwords: dict[str, str] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = line.split(":")
            if len(parts) == 5 and parts[3] in APP_ROLES:
                passwords[parts[3]] = parts[4]
    if set(passwords) == set(APP_ROLES):
        path.chmod(0o600)
        return passwords
    for role in APP_ROLES:
        passwords.setdefault(role, secrets.token_urlsafe(32))
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("".join(f"*:*:*:{role}:{passwords[role]}\n" for role in APP_ROLES))
    os.replace(tmp, path)
    return passwords
