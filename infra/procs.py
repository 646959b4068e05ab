"""Detached processes with pid files: start in their own session, signal the whole group."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


class StackError(RuntimeError):
    """A part of the local stack could not be started or stopped; the message says how to fix."""


def spawn_detached(
    argv: Sequence[str], *, log_path: Path, pid_path: Path,
    env: Mapping[str, str] | None = None, cwd: Path | None = None,
    user: str | None = None, group: int | None = None,
) -> int:
    """Start ``argv`` in a new session (so it outlives us and can be signalled as a group)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    # setuid in the child itself (no runuser wrapper), so the pid file holds the real server.
    as_user = user is not None
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
            user=user, group=group if as_user else None,
            extra_groups=[] if as_user else None,
        )
    pid_path.write_text(f"{proc.pid}\n")
    # Kept so alive() can reap our own dead children instead of seeing zombies.
    _CHILDREN[proc.pid] = proc
    return proc.pid


_CHILDREN: dict[int, subprocess.Popen] = {}


def read_pid(pid_path: Path) -> int | None:
    try:
        return int(pid_path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            "utf-8", "replace")
    except OSError:
        return ""


def running_pid(pid_path: Path, marker: str) -> int | None:
    """The pid in ``pid_path`` if that process is alive AND is ours (its command line holds
    ``marker``): after a reboot a stale pid may belong to an unrelated process."""
    pid = read_pid(pid_path)
    if pid is None or not alive(pid):
        return None
    if pid in _CHILDREN:
        return pid  # started by this very process: certainly ours
    # Right after exec the kernel may still show an empty command line: look again briefly.
    for _ in range(10):
        line = cmdline(pid)
        if line:
            return pid if marker in line else None
        time.sleep(0.05)
    return None


def find_process(argv_tail: list[str], env_key: str, env_value: str) -> int | None:
    """A process whose command line ends with ``argv_tail`` and whose environment has
    ``env_key=env_value``: finds a component whose pid file was lost."""
    want = f"{env_key}={env_value}".encode()
    tail = [a.encode() for a in argv_tail]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().rstrip(b"\0").split(b"\0")
            if argv[-len(tail):] != tail:
                continue
            if want in (entry / "environ").read_bytes().split(b"\0"):
                pid = int(entry.name)
                if alive(pid):
                    return pid
        except (OSError, ValueError):
            continue
    return None


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    child = _CHILDREN.get(pid)
    if child is not None:
        # Our own child: poll() reaps it, so a dead one does not linger as a zombie.
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie answers signal 0 but is dead.
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            return False
    return True


def signal_group(pid: int, sig: int) -> None:
    """Signal the process group ``pid`` leads (it was started with start_new_session)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (Linux /proc; empty where it has none or is gone)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out += [int(c) for c in task.read_text().split()]
        except OSError:  # the thread or the process ended while we read
            continue
    return out


def wait_dead(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.1)
    return not alive(pid)


def terminate(pid: int, timeout_s: float = 30.0) -> bool:
    """SIGTERM the leader (it stops its own children, e.g. `streams --role all`), SIGKILL the
    whole group after ``timeout_s``. True if it stopped cleanly."""
    if not alive(pid):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if wait_dead(pid, timeout_s):
        signal_group(pid, signal.SIGTERM)  # stragglers left by a leader that died early
        return True
    signal_group(pid, signal.SIGKILL)
    wait_dead(pid, 10.0)
    return False


def kill_now(pid: int | None, pid_path: Path) -> None:
    """SIGKILL the group ``pid`` leads (a fault test's kill -9), wait, forget its pid file."""
    if pid is not None:
        signal_group(pid, signal.SIGKILL)
        wait_dead(pid, 10.0)
    pid_path.unlink(missing_ok=True)


class NotReady(Exception):
    """A service did not become ready: it ``exited`` during start-up, or time ran out (``last``
    is the probe's last error, if any)."""

    def __init__(self, exited: bool, last: BaseException | None = None) -> None:
        super().__init__("exited" if exited else f"timed out ({last})")
        self.exited = exited
        self.last = last


def poll_ready(probe: Callable[[], bool], *, exited: Callable[[], bool], timeout_s: float,
               interval_s: float, retry_on: tuple[type[BaseException], ...]) -> None:
    """Call ``probe`` until it returns True; its ``retry_on`` errors mean "not yet". Raises
    NotReady at once when ``exited()`` says the process died (no point waiting out the
    timeout), else when ``timeout_s`` has passed."""
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while time.monotonic() < deadline:
        if exited():
            raise NotReady(exited=True)
        try:
            if probe():
                return
        except retry_on as exc:
            last = exc
        time.sleep(interval_s)
    raise NotReady(exited=False, last=last)


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        return s.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_port_block(n: int, host: str = "127.0.0.1") -> int:
    """The first of ``n`` consecutive free ports (the object store's servers take a block)."""
    import random

    for _ in range(200):
        base = random.randint(20000, 40000)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + n):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind((host, port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base
    raise StackError(f"no {n} consecutive free ports on {host}")


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        data = path.read_bytes()[-16384:].decode("utf-8", "replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(data.splitlines()[-lines:])
