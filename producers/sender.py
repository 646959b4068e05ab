"""Drains the outbox to Kafka: acks=all, idempotent producer, a row is marked sent only on ack.

Runs in a child process of the agent (:class:`SenderProcess`: ``python -m producers.sender``
started with subprocess, pickled messages over its stdin and stdout, so the same on Windows and
without multiprocessing's resource-tracker process) with its own SQLite connection:
kafka-python's per-event Python work then no longer shares the agent loop's interpreter lock.
The child reports its counts over a pipe (the agent process serves the metrics) and exits on its
own as soon as the agent process is gone (EOF on its stdin), so a restarted agent never runs
beside an orphan sender. Records handed to the producer stay "in flight" until their future
resolves; they are never handed over twice by this process, so the idempotent producer's own
retries cover a broker that comes back. A record whose delivery
failed (timeout, broker gone for longer than ``delivery_timeout_ms``) is re-sent from the outbox
with its original bytes, hence its original ``event_id``. Heartbeats go straight to Kafka: a
stale heartbeat is worth nothing, so they are never queued.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import pickle
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from producers.metrics import AgentMetrics
from producers.outbox import Outbox, UploadDepth
from producers.uploader import Uploader
from sohoa.config import Settings
from sohoa.disk import disk_full
from sohoa.events import SiteHeartbeat
from sohoa.identity import Signer

log = logging.getLogger(__name__)

REPORT_EVERY_S = 0.1  # the sender child reports counts to the agent at most this often
WAKE_EVERY_S = 0.01   # the agent wakes the sender child at most this often (it polls anyway)


class Sender(threading.Thread):
    """The drain loop. In production it runs in the child's main thread (``run()``)."""

    def __init__(self, settings: Settings, metrics: Any, agent_version: str,
                 roots: list[Path]) -> None:
        super().__init__(name="outbox-sender", daemon=True)
        self.settings = settings
        self.cfg = settings.watcher
        self.metrics = metrics
        self.agent_version = agent_version
        self.roots = roots
        self.wake = threading.Event()
        self._stop_at: float | None = None  # monotonic deadline once asked to stop
        self._stop_when_drained = False
        self._lock = threading.Lock()
        self._acked: collections.deque[int] = collections.deque()
        self._failed: collections.deque[tuple[int, str]] = collections.deque()
        self.inflight: dict[int, str] = {}
        self.drained = threading.Event()
        self.kafka_ok = False
        self.last_error: str | None = None
        self.depth = 0
        self.oldest_s = 0.0
        self.uploads = UploadDepth(0, 0, 0, 0.0)
        self.uploader: Uploader | None = None
        self.error: BaseException | None = None
        self._full_until = 0.0  # monotonic time before which a full outbox disk is not retried
        self._signer = Signer.from_settings(settings)

    # --- control from the main thread ---------------------------------------------------

    def stop(self, flush_s: float) -> None:
        """Stop after trying for ``flush_s`` seconds to send what is queued."""
        self._stop_at = time.monotonic() + flush_s
        self.wake.set()

    def stop_when_drained(self, timeout_s: float) -> None:
        """(--once) Stop when the outbox is empty, or after ``timeout_s`` without Kafka."""
        self._stop_when_drained = True
        self._stop_at = time.monotonic() + timeout_s
        self.wake.set()

    # --- the thread -----------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # surfaced by the main thread, which exits non-zero
            log.exception("outbox sender crashed")
            self.error = exc

    def _run(self) -> None:
        ob = Outbox(self.cfg.outbox_path)
        producer: Any = None
        cursor = 0
        next_connect = 0.0
        next_hb = 0.0
        next_depth = 0.0
        next_prune = time.monotonic() + 60
        backoff = 1.0
        topics = {"site_events": self.settings.topics.site_events,
                  "dead_letters": self.settings.topics.dead_letters}
        flush = getattr(self.metrics, "flush", None)  # PipeMetrics: batched reports
        if self.settings.upload.enabled:
            # Its own thread: a part on a slow link never holds up the acks of sent events.
            self.uploader = Uploader(self.settings, on_stored=self.wake.set)
            self.uploader.start()
        try:
            while True:
                if self.uploader is not None and self.uploader.error is not None:
                    raise RuntimeError(f"uploader failed: {self.uploader.error}")
                now = time.monotonic()
                failed_any = self._settle(ob)
                if flush is not None:
                    flush()
                if failed_any and producer is not None:
                    # Let everything already handed over resolve, then start again from the
                    # outbox with a fresh producer: nothing is handed over twice meanwhile.
                    self.kafka_ok = False
                    if not self.inflight:
                        self._close(producer)
                        producer, cursor = None, 0
                        self._failed.clear()
                        next_connect = now + backoff
                        backoff = min(backoff * 2, 30.0)
                if now >= next_depth:
                    self.depth, self.oldest_s = ob.depth()
                    self.metrics.depth.set(self.depth)
                    self.metrics.oldest.set(self.oldest_s)
                    self._upload_depth(ob)
                    next_depth = now + 1.0
                    if self.depth == 0 and not self.inflight:
                        self.drained.set()
                    else:
                        self.drained.clear()
                if self._stop_at is not None:
                    # Fresh count: the last events may have been queued a moment ago.
                    self.depth, self.oldest_s = ob.depth()
                    done = self.depth == 0 and not self.inflight
                    if done or now >= self._stop_at:
                        if done:
                            self.drained.set()
                        break
                if producer is None and now >= next_connect:
                    producer = self._connect()
                    if producer is None:
                        next_connect = time.monotonic() + backoff
                        backoff = min(backoff * 2, 30.0)
                        continue
                    cursor = 0
                if producer is not None and now >= next_hb:
                    self._heartbeat(producer)
                    next_hb = now + self.cfg.heartbeat_interval_s
                if now >= next_prune:
                    try:
                        ob.prune_sent(self.cfg.outbox_retain_sent_s)
                    except sqlite3.OperationalError as exc:
                        if not disk_full(exc):
                            raise
                    next_prune = now + 3600
                sent_some = False
                if producer is not None and not self._failed and \
                        len(self.inflight) < self.cfg.send_batch * 8:
                    rows = ob.unsent(cursor, self.cfg.send_batch)
                    for row in rows:
                        try:
                            topic = topics[row.kind]
                            fut = producer.send(topic, value=row.value, key=row.key,
                                                headers=self._sign(topic, row.key, row.value))
                        except Exception as exc:  # metadata timeout, buffer full: broker away
                            self._note_error(exc)
                            self._failed.append((row.seq, row.etype))
                            break
                        with self._lock:
                            self.inflight[row.seq] = row.etype
                        fut.add_callback(self._on_ack, row.seq)
                        fut.add_errback(self._on_error, row.seq, row.etype)
                        cursor = row.seq
                        sent_some = True
                if not sent_some:
                    self.wake.wait(0.05 if self.inflight else 0.5)
                    self.wake.clear()
        finally:
            if self.uploader is not None:
                self.uploader.stop()
            self._settle(ob)
            if producer is not None:
                self._close(producer)
                self._settle(ob)
            self.depth, self.oldest_s = ob.depth()
            self.metrics.depth.set(self.depth)
            if self.depth == 0:
                self.drained.set()
            ob.close()

    def _upload_depth(self, ob: Outbox) -> None:
        if self.uploader is None:
            return
        self.uploads = ob.upload_depth()
        m = self.metrics
        m.upload_pages.set(self.uploads.pages)
        m.upload_bytes.set(self.uploads.bytes)
        m.upload_oldest.set(self.uploads.oldest_s)
        m.uploaded_bytes.set(self.uploader.sent_bytes)

    def _sign(self, topic: str, key: str | bytes | None, value: bytes) -> Any:
        """This site's signature headers (sohoa/identity.py); None without a site secret."""
        return None if self._signer is None else self._signer.headers(topic, key, value)

    def _on_ack(self, seq: int, _metadata: Any) -> None:
        self._acked.append(seq)
        self.wake.set()

    def _on_error(self, seq: int, etype: str, exc: BaseException) -> None:
        self._note_error(exc)
        self._failed.append((seq, etype))
        self.wake.set()

    def _note_error(self, exc: BaseException) -> None:
        msg = f"{type(exc).__name__}: {exc}"
        if msg != self.last_error:
            log.warning("kafka delivery failed; events stay in the outbox",
                        extra={"error": msg})
        self.last_error = msg

    def _settle(self, ob: Outbox) -> bool:
        """Mark acked rows sent (one transaction); return whether any delivery failed."""
        acked: list[int] = []
        while self._acked:
            acked.append(self._acked.popleft())
        failed = bool(self._failed)
        if failed:
            with self._lock:
                for seq, _ in list(self._failed):
                    self.inflight.pop(seq, None)
        if acked and time.monotonic() < self._full_until:
            self._acked.extendleft(reversed(acked))  # disk full: keep them for the retry
            acked = []
        if acked:
            try:
                ob.mark_sent(acked)
            except sqlite3.OperationalError as exc:
                if not disk_full(exc):
                    raise
                # Acked but not yet marked: kept in memory and retried. If the agent dies
                # meanwhile they are re-sent with the same event ids, which the centre ignores.
                if self._full_until == 0.0:
                    log.error("outbox disk is full; acks cannot be recorded, retrying",
                              extra={"error": str(exc)})
                self._full_until = time.monotonic() + 2.0
                self._acked.extendleft(reversed(acked))
                return failed
            if self._full_until:
                log.info("outbox disk has space again; acks recorded")
                self._full_until = 0.0
            # No fresh count here: with a deep backlog a count(*) per ack batch scanned every
            # unsent row (quadratic over a catch-up); the loop recounts once a second.
            self.depth = max(0, self.depth - len(acked))
            self.metrics.depth.set(self.depth)
            types: collections.Counter[str] = collections.Counter()
            with self._lock:
                for seq in acked:
                    types[self.inflight.pop(seq, "?")] += 1
            for etype, n in types.items():
                self.metrics.event_sent(etype, n)
                if etype == "PageScanned":
                    self.metrics.sent.inc(n)
            if not self.kafka_ok:
                log.info("kafka reachable; outbox draining")
            self.kafka_ok = True
            self.last_error = None
        return failed

    def _connect(self) -> Any:
        from sohoa.kafka_clients import make_producer

        try:
            producer = make_producer(
                self.settings.kafka, linger_ms=20, batch_size=256 * 1024,
                max_block_ms=int(self.cfg.kafka_block_s * 1000),
                delivery_timeout_ms=int(self.cfg.delivery_timeout_s * 1000),
                request_timeout_ms=min(30000, int(self.cfg.delivery_timeout_s * 1000) - 1000),
                bootstrap_timeout_ms=int(self.cfg.kafka_block_s * 1000),
                reconnect_backoff_max_ms=5000,
            )
        except Exception as exc:
            self._note_error(exc)
            return None
        log.info("kafka producer connected", extra={"bootstrap": self.settings.kafka.bootstrap})
        return producer

    def _close(self, producer: Any) -> None:
        try:
            producer.close(timeout=self.cfg.kafka_block_s)
        except Exception as exc:
            log.warning("kafka producer close failed", extra={"error": str(exc)})

    def _heartbeat(self, producer: Any) -> None:
        depth, oldest = self.depth, self.oldest_s
        up = self.uploads
        hb = heartbeat(
            self.cfg.site_id, self.agent_version, depth, oldest, disk_free(self.roots),
            [str(r) for r in self.roots], up,
            (self.uploader.last_error or "")[:500] or None if self.uploader is not None else None)
        topic, value = self.settings.topics.site_events, hb.to_json()
        try:
            producer.send(topic, value=value, key=hb.key(),
                          headers=self._sign(topic, hb.key(), value))
        except Exception as exc:
            self._note_error(exc)


def heartbeat(site_id: str, agent_version: str, depth: int, oldest_s: float, disk_free: int,
              roots: list[str], uploads: UploadDepth | None = None,
              upload_error: str | None = None,
              occurred_at: datetime | None = None) -> SiteHeartbeat:
    """The agent's SiteHeartbeat (``sohoa simulate --through-spine`` sends the same)."""
    up = uploads or UploadDepth(0, 0, 0, 0.0)
    return SiteHeartbeat(
        site_id=site_id, agent_version=agent_version, outbox_depth=depth,
        oldest_unsent_age_s=round(oldest_s, 3), disk_free_bytes=disk_free, roots=roots,
        upload_pending_pages=up.pages, upload_pending_bytes=up.bytes,
        oldest_unuploaded_age_s=round(up.oldest_s, 3), upload_error=upload_error,
        **({} if occurred_at is None else {"occurred_at": occurred_at}))


def disk_free(roots: list[Path]) -> int:
    """Free bytes on the emptiest disk holding a root (0 when none is reachable)."""
    free = []
    for r in roots:
        try:
            free.append(shutil.disk_usage(r).free)
        except OSError:
            continue
    return min(free) if free else 0


# --- the child process ------------------------------------------------------------------------

class _Gauge:
    def __init__(self) -> None:
        self.value = 0.0

    def set(self, value: float) -> None:
        self.value = value


class _Sent:
    def __init__(self) -> None:
        self.n = 0.0

    def inc(self, n: float = 1) -> None:
        self.n += n


class _Total:
    """A counter forwarded as its running total (the agent process adds the difference)."""

    def __init__(self) -> None:
        self.value = 0.0

    def set(self, value: float) -> None:
        self.value = value


# --- the child protocol: the messages over the pipes, agent -> child then child -> agent ---

@dataclass(frozen=True, slots=True)
class Start:
    """The agent's first message: what the child builds its :class:`Sender` from."""

    settings: Settings
    agent_version: str
    roots: list[str]


@dataclass(frozen=True, slots=True)
class Wake:
    """An outbox commit: look for rows (and documents to store) now, not at the next poll."""


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop after trying for ``flush_s`` seconds to send what is queued."""

    flush_s: float


@dataclass(frozen=True, slots=True)
class Drain:
    """Stop once the outbox is empty, or after ``timeout_s`` seconds."""

    timeout_s: float


class Gauges(NamedTuple):
    """The sender's gauges, as a tuple so an unchanged set is not sent again."""

    depth: float
    oldest_s: float
    upload_pages: float
    upload_bytes: float
    upload_oldest_s: float
    uploaded_bytes: float  # running total; the agent process adds the difference


@dataclass(frozen=True, slots=True)
class Report:
    """Counts since the last report (events sent, by type and in all) and the gauges."""

    gauges: Gauges
    types: dict[str, int]
    sent: float


@dataclass(frozen=True, slots=True)
class Exited:
    """The child's last message: what is left, and why it stopped if it failed."""

    depth: int
    drained: bool
    error: str | None


ToChild = Start | Wake | Stop | Drain
ToAgent = Report | Exited
_WAKE = Wake()


class PipeMetrics:
    """The part of :class:`AgentMetrics` the sender touches, forwarded to the agent process in
    one message per :data:`REPORT_EVERY_S` at most: a message per ack batch kept the agent's
    reader thread taking the interpreter lock from its loop thousands of times a second."""

    def __init__(self, conn: Channel) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self.depth = _Gauge()
        self.oldest = _Gauge()
        self.upload_pages = _Gauge()
        self.upload_bytes = _Gauge()
        self.upload_oldest = _Gauge()
        self.uploaded_bytes = _Total()
        self.sent = _Sent()
        self._types: collections.Counter[str] = collections.Counter()
        self._last: Gauges | None = None
        self._next = 0.0

    def send(self, msg: ToAgent) -> None:
        with self._lock:
            self._conn.send(msg)

    def event_sent(self, type_: str, n: int = 1) -> None:
        self._types[type_] += n

    def flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next:
            return
        self._next = now + REPORT_EVERY_S
        gauges = Gauges(self.depth.value, self.oldest.value, self.upload_pages.value,
                        self.upload_bytes.value, self.upload_oldest.value,
                        self.uploaded_bytes.value)
        if not self._types and not self.sent.n and gauges == self._last:
            return
        self.send(Report(gauges, dict(self._types), self.sent.n))
        self._last = gauges
        self._types.clear()
        self.sent.n = 0


class Channel:
    """Pickled messages over a pair of pipes (the child's stdin and stdout): both ends are
    plain file objects, so this works the same on Windows, and a reader sees EOF the moment
    the process at the other end is gone, however it died."""

    def __init__(self, reader: Any, writer: Any) -> None:
        self._r = reader
        self._w = writer

    def send(self, msg: ToChild | ToAgent) -> None:
        self._w.write(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))
        self._w.flush()

    def recv(self) -> ToChild | ToAgent:
        """The next message; EOFError once the other end is closed."""
        try:
            return pickle.load(self._r)
        except (pickle.UnpicklingError, ValueError) as exc:  # cut short mid-message
            raise EOFError(str(exc)) from None

    def close(self) -> None:
        for f in (self._w, self._r):
            with contextlib.suppress(OSError, ValueError):
                f.close()


def _watch_parent(conn: Channel, sender: Sender) -> None:
    """Commands from the agent; exit at once when the agent process is gone (killed)."""
    while True:
        msg: ToChild | ToAgent | None
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            msg = None
        if msg is None:
            # The agent died without stopping us (SIGKILL, crash): only it held the write end
            # of our stdin. Unacked rows stay unsent in the outbox; the next agent re-sends
            # them with their event ids.
            log.error("agent process gone; outbox sender exits")
            os._exit(3)
        if isinstance(msg, Wake):
            sender.wake.set()
            if sender.uploader is not None:  # a commit may have queued documents to store
                sender.uploader.wake.set()
        elif isinstance(msg, Stop):
            sender.stop(msg.flush_s)
        elif isinstance(msg, Drain):
            sender.stop_when_drained(msg.timeout_s)


def sender_main(settings: Settings, agent_version: str, roots: list[str],
                conn: Channel) -> int:
    """The sender child's work; returns its exit code."""
    from sohoa.logs import setup_logging

    # The agent process decides when to stop (SIGTERM to a whole process group or a terminal's
    # Ctrl-C reach us too); we stop on its command, after its last commit, or when it is gone.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    setup_logging(settings.logging.level, settings.logging.json_format)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    metrics = PipeMetrics(conn)
    sender = Sender(settings, metrics, agent_version, [Path(r) for r in roots])
    threading.Thread(target=_watch_parent, args=(conn, sender), name="agent-watch",
                     daemon=True).start()
    sender.run()
    metrics.flush(force=True)
    err = None if sender.error is None else f"{type(sender.error).__name__}: {sender.error}"
    metrics.send(Exited(sender.depth, sender.drained.is_set(), err))
    return 0 if err is None else 1


class _Wake:
    """Called after every outbox commit; one pipe message per :data:`WAKE_EVERY_S` at most."""

    def __init__(self, owner: SenderProcess) -> None:
        self._owner = owner
        self._next = 0.0

    def set(self) -> None:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + WAKE_EVERY_S
            self._owner._send(_WAKE)


class SenderProcess:
    """The agent process's handle on the sender child: same controls as the :class:`Sender`
    thread had (``wake``, ``stop``, ``stop_when_drained``, ``drained``, ``depth``, ``error``)."""

    def __init__(self, settings: Settings, metrics: AgentMetrics, agent_version: str,
                 roots: list[Path]) -> None:
        self.metrics = metrics
        self._init = Start(settings, agent_version, [str(r) for r in roots])
        self.process: subprocess.Popen[bytes] | None = None
        self._conn: Channel | None = None
        self._lock = threading.Lock()
        self.wake = _Wake(self)
        self.drained = threading.Event()
        self.depth = 0
        self.oldest_s = 0.0
        self.error: BaseException | None = None
        self._exited = False
        self._reader = threading.Thread(target=self._read, name="sender-reports", daemon=True)

    def start(self) -> None:
        # Pipes are not inherited by other children (close_fds), so the child's stdin sees EOF
        # the moment this process is gone.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "producers.sender"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, close_fds=True)
        assert self.process.stdin is not None and self.process.stdout is not None
        self._conn = Channel(self.process.stdout, self.process.stdin)
        self._send(self._init)
        self._reader.start()

    def is_alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _send(self, msg: ToChild) -> None:
        # A gone child: the agent loop sees it and exits non-zero.
        with self._lock, contextlib.suppress(OSError, ValueError):
            if self._conn is not None:
                self._conn.send(msg)

    def stop(self, flush_s: float) -> None:
        self._send(Stop(flush_s))

    def stop_when_drained(self, timeout_s: float) -> None:
        self._send(Drain(timeout_s))

    def join(self, timeout: float | None = None) -> None:
        code = None
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
            code = self.process.returncode
        self._reader.join(5)
        if self.error is None and (code is None or code != 0 or not self._exited):
            self.error = RuntimeError(f"outbox sender process ended with exit code {code}")
        # Only our write end: the report reader owns the other and ends on the child's EOF.
        if self.process is not None and self.process.stdin is not None:
            with self._lock, contextlib.suppress(OSError, ValueError):
                self.process.stdin.close()

    def _read(self) -> None:
        m = self.metrics
        assert self._conn is not None
        while True:
            try:
                msg = self._conn.recv()
            except (EOFError, OSError):
                return
            if isinstance(msg, Report):
                g = msg.gauges
                self.depth, self.oldest_s = int(g.depth), g.oldest_s
                m.depth.set(self.depth)
                m.oldest.set(self.oldest_s)
                m.uploads(g.upload_pages, g.upload_bytes, g.upload_oldest_s, g.uploaded_bytes)
                if self.depth > 0:
                    self.drained.clear()
                for etype, n in msg.types.items():
                    m.event_sent(etype, n)
                if msg.sent:
                    m.sent.inc(msg.sent)
            elif isinstance(msg, Exited):
                self.depth = msg.depth
                m.depth.set(self.depth)
                if msg.drained:
                    self.drained.set()
                if msg.error is not None:
                    self.error = RuntimeError(msg.error)
                self._exited = True


def _child_main() -> None:
    """``python -m producers.sender``: the first message on stdin says what to run."""
    channel_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    # Stray prints must not corrupt the message stream: fd 1 now goes to the log (stderr).
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    conn = Channel(sys.stdin.buffer, channel_out)
    try:
        start = conn.recv()
    except EOFError:
        os._exit(3)  # the agent died before it said anything
    try:
        if not isinstance(start, Start):
            raise TypeError(f"the agent's first message is {start!r}, not Start")
        code = sender_main(start.settings, start.agent_version, start.roots, conn)
    except BaseException:
        log.exception("outbox sender failed")
        code = 1
    # os._exit, not a normal exit: the agent-watch thread is blocked reading stdin, and an
    # interpreter shutdown would try to close stdin under it (a fatal error on the lock).
    logging.shutdown()
    with contextlib.suppress(OSError, ValueError):
        channel_out.close()
        sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    # Run as the imported module, so its loggers are named producers.sender, not __main__.
    from producers.sender import _child_main as child_main

    child_main()
