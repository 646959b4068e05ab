"""The assembly app: site events -> per-file state in a changelog-backed table ->
FileAssembled on the file-events topic.

Table ``files`` (changelog ``<app_id>-files-changelog``) maps ``site_id/fonds/file_code`` to a
:class:`~streams.assembly.FileState` as bytes (:mod:`streams.state_codec`: JSON while the file
is scanned, deflated once it is assembled), on the store ``streams.store`` names (RocksDB on
disk, or memory), always read and written through :class:`~streams.file_store.FileStore` by the
file's partition. The idle timeout is driven by a timer that sends
a tick, keyed by the file, to the internal ``<app_id>-ticks`` topic; the ticks agent owns the
same partition as the file, so only the file's owner changes the file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import faust

from sohoa.config import Settings
from sohoa.events import (
    FileAssembled,
    FileEvent,
    InvalidEvent,
    PageScanned,
    SiteHeartbeat,
    parse_event,
)
from sohoa.identity import SiteGuard
from streams import commits, metrics
from streams.assembly import FileState
from streams.faustapp import (
    dead_letter,
    ensure_internal_topics,
    make_app,
    publish,
    raw_topic,
    source_partitions,
    table_options,
)
from streams.file_store import FilesTable, FileStore
from streams.rocksdb_memory import BudgetedTable, RocksMemory
from streams.state_codec import StateCache, decode_state, encode_state, is_due

log = logging.getLogger(__name__)


def build(settings: Settings, partitions: int | None = None) -> faust.App:
    """The assembly app: its topics and tables, three agents and the idle timer."""
    cfg = settings.streams
    app = _make_app(settings, partitions)
    wiring = _Wiring.declare(app, settings)
    asm = _Assembly(settings, wiring, app.is_stale)

    @app.agent(wiring.site_events)
    async def assemble(stream: faust.StreamT) -> None:
        # In batches: a file's state is written to the table (and its changelog) once per
        # batch, not once per page: the per-write cost dominates the worker.
        # The agent gets a faust.Stream, which has take_events; the StreamT protocol that
        # app.agent's signature asks for does not declare it.
        async for batch in stream.take_events(  # type: ignore[attr-defined]
                cfg.batch_max_events, within=cfg.batch_within_s):
            # Held until done: a batch the worker's stop interrupts is never committed.
            held = [e.message for e in batch]
            app.hold(held)
            await asm.assemble(batch)
            app.release(held)

    @app.agent(wiring.ticks)
    async def on_tick(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await asm.on_tick(event.message)

    @app.agent(wiring.content_requests)
    async def content_index(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await asm.index_content(event.message)

    @app.timer(interval=cfg.idle_check_interval_s)
    async def idle_check() -> None:
        await asm.tick_idle_files()

    app.sohoa_files = asm.store  # type: ignore[attr-defined]  # for tests and tools
    return app


def _make_app(settings: Settings, partitions: int | None) -> commits.App:
    """The Faust app, its partition count that of the site-events topic unless configured,
    and its internal topics created with their retention and compaction."""
    cfg = settings.streams
    if partitions is None and not cfg.table_partitions:
        partitions = source_partitions(settings, settings.topics.site_events)
    app = make_app(settings, cfg.app_id, cfg.web_port, partitions or cfg.table_partitions)
    n = app.conf.topic_partitions
    ensure_internal_topics(settings, [
        (f"{cfg.app_id}-files-changelog", n, {"cleanup.policy": "compact"}),
        (f"{cfg.app_id}-ticks", n, {"retention.ms": str(86_400_000)}),
        (f"{cfg.app_id}-content", n, {"retention.ms": str(86_400_000)}),
        (f"{cfg.app_id}-content-changelog", n, {"cleanup.policy": "compact"}),
    ])
    return app


@dataclass(frozen=True)
class _Wiring:
    """The app's topics and tables."""

    site_events: Any
    file_events: Any
    dead_letters: Any
    ticks: Any
    files: Any
    content_requests: Any
    content: Any

    @classmethod
    def declare(cls, app: faust.App, settings: Settings) -> _Wiring:
        cfg = settings.streams
        n = app.conf.topic_partitions
        site_events = raw_topic(app, settings.topics.site_events)
        file_events = raw_topic(app, settings.topics.file_events)
        dead_letters = raw_topic(app, settings.topics.dead_letters)
        ticks = raw_topic(app, f"{cfg.app_id}-ticks", partitions=n, internal=True,
                          retention=86400.0)
        memory = RocksMemory.from_settings(settings)
        files = app.tables.add(FilesTable(
            app, name="files", default=None, beacon=app.tables.beacon, partitions=n,
            key_type=str, value_type=bytes, options=table_options(settings),
            rocks_memory=memory,
            help="Assembly state of each file, keyed site_id/fonds/file_code"))
        # Site-wide duplicate content: an index keyed site_id/sha256 (its own partitioning),
        # asked through the internal content topic; it answers each file's owner through the
        # ticks topic.
        content_requests = raw_topic(app, f"{cfg.app_id}-content", partitions=n,
                                     internal=True, retention=86400.0)
        content = app.tables.add(BudgetedTable(
            app, name="content", default=None, beacon=app.tables.beacon, partitions=n,
            key_type=str, value_type=None, options=table_options(settings),
            rocks_memory=memory,
            help="First [file_code, page_no] of each content, keyed site/sha256"))
        return cls(site_events, file_events, dead_letters, ticks, files, content_requests,
                   content)


@dataclass
class _Batch:
    """What one batch of site events changes, written out together at its end."""

    now: float
    dirty: dict[str, tuple[int, FileState]] = field(default_factory=dict)
    outputs: list[tuple[FileState, FileAssembled]] = field(default_factory=list)
    dead: list[Any] = field(default_factory=list)
    asks: list[tuple[bytes, bytes]] = field(default_factory=list)


class _Assembly:
    """What the agents do, one method each, over the app's topics and tables."""

    def __init__(self, settings: Settings, wiring: _Wiring,
                 stale: Callable[[Any], bool] = lambda msg: False) -> None:
        cfg = settings.streams
        self.w = wiring
        # A record fetched before the last revoke is not folded: its partition may belong to
        # another worker now, and it is read again from the committed offset (streams.commits)
        self.stale = stale
        self.check_content = cfg.qc_enabled and cfg.site_duplicate_check
        self.idle, self.settle = cfg.idle_timeout_s, cfg.late_page_settle_s
        self.guard = SiteGuard.from_settings(settings)
        if not self.guard.enforcing:
            log.warning("site identity not enforced: no identity.sites configured, site "
                        "events are accepted unsigned")
        self.cache = StateCache(cfg.state_cache_files, cfg.state_cache_pages)
        self.store = FileStore(wiring.files, on_disk=cfg.store == "rocksdb")
        self.level = cfg.state_compress_level

    # --- site events, in batches --------------------------------------------------------
    async def assemble(self, batch: list[Any]) -> None:
        # Folded and written to the table in one step of the event loop (nothing awaits
        # before the changelog records are queued): the revoke cannot fall in between.
        work = _Batch(now=time.time())
        for event in batch:
            msg = event.message
            if self.stale(msg):
                continue
            ev = self._admit(msg, work)
            if ev is not None:
                self._apply(msg, ev, work)
        await self._write(work)

    def _admit(self, msg: Any, work: _Batch) -> FileEvent | None:
        """The message's file event, or None: invalid or unproven ones to the dead letters,
        heartbeats and other site events counted and passed over."""
        try:
            ev = parse_event(msg.value)
        except InvalidEvent as exc:
            metrics.EVENTS.labels("assembly", "invalid").inc()
            work.dead.append(dead_letter("assembly", exc.reason, msg.value, topic=msg.topic,
                                         partition=msg.partition, offset=msg.offset,
                                         site_id=_site_of(msg.key)))
            log.warning("invalid site event", extra={
                "reason": exc.reason, "partition": msg.partition, "offset": msg.offset})
            return None
        refusal = self.guard.refusal(msg.topic, msg.key, msg.value, msg.headers, ev.site_id)
        if refusal is not None:  # not proven to come from the site it names
            metrics.EVENTS.labels("assembly", "refused").inc()
            work.dead.append(dead_letter("assembly", refusal, msg.value, topic=msg.topic,
                                         partition=msg.partition, offset=msg.offset))
            return None
        metrics.EVENTS.labels("assembly", ev.NAME).inc()
        if isinstance(ev, SiteHeartbeat) or not isinstance(ev, FileEvent):
            return None
        return ev

    def _apply(self, msg: Any, ev: FileEvent, work: _Batch) -> None:
        """One file event applied to its file's state (the batch's copy if it has one)."""
        key = ev.key()
        if key in work.dirty:
            state, stored = work.dirty[key][1], True
        else:
            state, stored = self._load(key, msg.partition, ev)
        try:
            changed, out = state.apply(ev, work.now, self.idle, self.settle,
                                       self.check_content)
        except Exception as exc:  # a bug must not stop the partition
            log.exception("assembly failed", extra={"key": key})
            work.dead.append(dead_letter(
                "assembly", f"internal error: {exc!r}", msg.value, topic=msg.topic,
                partition=msg.partition, offset=msg.offset, site_id=ev.site_id))
            return
        if changed or not stored:
            work.dirty[key] = (msg.partition, state)
        if (changed and self.check_content and isinstance(ev, PageScanned)
                and state.pending.get((ev.document, ev.page_index)) == ev.sha256):
            work.asks.append(_content_ask(key, ev.site_id, ev.fonds, ev.file_code,
                                          (ev.document, ev.page_index), ev.sha256))
        if out is not None:
            work.outputs.append((state, out))

    def _load(self, key: str, partition: int, ev: FileEvent) -> tuple[FileState, bool]:
        """The file's state, and whether the table holds it yet."""
        raw = self.store.get(key, partition)
        state = self.cache.get(key, raw)
        if state is not None:
            return state, True
        if not raw:
            return FileState(ev.site_id, ev.file_code), False
        return decode_state(raw), True  # cached once written: apply may fail half-way

    async def _write(self, work: _Batch) -> None:
        """The batch's changed states to the table, then its content questions, dead
        letters and assembled files out; returns once Kafka has acknowledged all of them.

        The batch's events are acked (and may be committed) when this returns: a commit that
        passed a FileAssembled still in the producer's buffer lost that file for good when
        the worker died then (its marker is never read again, its state says assembled).
        """
        sent = []
        for key, (partition, state) in work.dirty.items():
            value = encode_state(state, self.level)
            sent.append(self.store.put(key, partition, value))
            self.cache.put(key, value, state)
        for ask_key, ask in work.asks:
            sent.append(await self.w.content_requests.send(key=ask_key, value=ask))
        for dl in work.dead:
            sent.append(await publish(self.w.dead_letters, dl))
        for state, out in work.outputs:
            sent.append(await self._emit_assembled(state, out))
        await asyncio.gather(*sent)

    async def _emit_assembled(self, state: FileState, ev: FileAssembled) -> Any:
        fut = await publish(self.w.file_events, ev)
        metrics.FILES_ASSEMBLED.labels(state.site_id).inc()
        log.info("file assembled", extra={
            "site_id": state.site_id, "file_code": state.file_code,
            "revision": ev.revision, "trigger": ev.trigger, "pages": len(ev.pages),
            "gaps": len(ev.gaps)})
        return fut

    # --- ticks: the idle timeout and the content index's answers -------------------------
    async def on_tick(self, msg: Any) -> None:
        if self.stale(msg):
            return
        key = msg.key.decode("utf-8", "replace") if msg.key else ""
        partition = msg.partition  # the file's: ticks are keyed by the file
        raw = self.store.get(key, partition)
        if not raw:
            return
        state = decode_state(raw)
        now = time.time()
        asks: list[tuple[bytes, bytes]] = []
        if msg.value == b"tick":
            was_reasked = state.reasked
            out = state.tick(now, self.idle, self.settle)
            changed = state.reasked and not was_reasked
            if changed:  # an answer may have been lost on a rebalance: ask again
                asks = [_content_ask(key, state.site_id, state.fonds, state.file_code, page, sha)
                        for page, sha in state.pending.items()]
                log.info("content answers overdue; asking again", extra={
                    "site_id": state.site_id, "file_code": state.file_code,
                    "pages": len(asks)})
        else:
            try:
                changed, out = _content_answer(state, msg.value, now)
            except (ValueError, KeyError, TypeError, IndexError):
                log.warning("bad internal message", extra={"key": key})
                return
        sent = []
        if changed or out is not None:
            value = encode_state(state, self.level)
            sent.append(self.store.put(key, partition, value))
            self.cache.put(key, value, state)
        for ask_key, ask in asks:
            sent.append(await self.w.content_requests.send(key=ask_key, value=ask))
        if out is not None:
            sent.append(await self._emit_assembled(state, out))
        await asyncio.gather(*sent)  # acknowledged before the tick is

    async def index_content(self, msg: Any) -> None:
        """A page's content looked up in the site-wide index (recorded if first seen), the
        answer sent to its file's owner through the ticks topic."""
        if self.stale(msg):
            return
        try:
            ask = json.loads(msg.value)
            key = msg.key.decode()
            first = self.w.content.get(key)
            other = None
            mine = [ask["fo"], ask["f"], ask["d"], ask["i"]]
            if first is None or len(first) != 4:  # (or a holder recorded before fonds)
                self.w.content[key] = mine
            elif first[:2] != mine[:2]:
                other = first  # same content in another file of this site
            answer = {"t": "content", "d": ask["d"], "i": ask["i"], "s": ask["s"],
                      "o": other}
            await self.w.ticks.send(key=ask["k"].encode(),
                                    value=json.dumps(answer, ensure_ascii=False).encode())
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            log.warning("bad content request", extra={"offset": msg.offset})

    async def tick_idle_files(self) -> None:
        """A tick, through the ticks topic, for every file due to close."""
        now = time.time()
        due = []
        n = 0
        for n, (key, raw) in enumerate(self.store.open_items(), 1):
            if is_due(raw, now, self.idle, self.settle):
                due.append(key)
            if n % 2000 == 0:
                await asyncio.sleep(0)  # a long scan must not hold up the agents
        metrics.IDLE_CHECKS.inc()
        metrics.OPEN_FILES.set(n)
        for key in due:
            await self.w.ticks.send(key=key.encode(), value=b"tick")


def _content_ask(file_key: str, site_id: str, fonds: str, file_code: str,
                 page: tuple[str, int], sha256: str) -> tuple[bytes, bytes]:
    """The content index's question for one page: keyed by site and content (the index's
    partitioning), naming the file whose owner gets the answer."""
    return f"{site_id}/{sha256}".encode(), json.dumps(
        {"k": file_key, "fo": fonds, "f": file_code, "d": page[0], "i": page[1],
         "s": sha256}, ensure_ascii=False).encode()


def _content_answer(state: FileState, value: bytes,
                    now: float) -> tuple[bool, FileAssembled | None]:
    """The content index's answer applied to the file's state."""
    answer = json.loads(value)
    other = answer.get("o")
    return state.content_answer(
        (str(answer["d"]), int(answer["i"])), str(answer["s"]),
        (str(other[0]), str(other[1]), str(other[2]), int(other[3])) if other else None, now)


def _site_of(key: bytes | None) -> str:
    if not key:
        return "unknown"
    return key.decode("utf-8", "replace").split("/", 1)[0][:200] or "unknown"
