"""The assembly app: site events -> per-file state in a changelog-backed table ->
FileAssembled on the file-events topic.

Table ``files`` (changelog ``<app_id>-files-changelog``) maps ``site_id/fonds/file_code`` to a
:class:`~streams.assembly.FileState` as JSON. The idle timeout is driven by a timer that sends
a tick, keyed by the file, to the internal ``<app_id>-ticks`` topic; the ticks agent owns the
same partition as the file, so only the file's owner changes the file.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import faust

from sohoa.config import Settings
from sohoa.events import FileEvent, InvalidEvent, PageScanned, SiteHeartbeat, parse_event
from sohoa.identity import SiteGuard
from streams import metrics
from streams.assembly import FileState, StateCache
from streams.faustapp import (
    dead_letter,
    ensure_internal_topics,
    make_app,
    publish,
    raw_topic,
    source_partitions,
)

log = logging.getLogger(__name__)


def build(settings: Settings, partitions: int | None = None) -> faust.App:
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
    site_events = raw_topic(app, settings.topics.site_events)
    file_events = raw_topic(app, settings.topics.file_events)
    dead_letters = raw_topic(app, settings.topics.dead_letters)
    ticks = raw_topic(app, f"{cfg.app_id}-ticks", partitions=n, internal=True,
                      retention=86400.0)
    files = app.Table("files", default=None, partitions=n, key_type=str, value_type=None,
                      help="Assembly state of each file, keyed site_id/file_code")
    # Site-wide duplicate content: an index keyed site_id/sha256 (its own partitioning), asked
    # through the internal content topic; it answers each file's owner through the ticks topic.
    content_requests = raw_topic(app, f"{cfg.app_id}-content", partitions=n, internal=True,
                                 retention=86400.0)
    content = app.Table("content", default=None, partitions=n, key_type=str, value_type=None,
                        help="First [file_code, page_no] of each content, keyed site/sha256")
    check_content = cfg.qc_enabled and cfg.site_duplicate_check
    idle, settle = cfg.idle_timeout_s, cfg.late_page_settle_s
    guard = SiteGuard.from_settings(settings)
    if not guard.enforcing:
        log.warning("site identity not enforced: no identity.sites configured, site events "
                    "are accepted unsigned")

    async def emit_assembled(state: FileState, ev: Any) -> None:
        await publish(file_events, ev)
        metrics.FILES_ASSEMBLED.labels(state.site_id).inc()
        log.info("file assembled", extra={
            "site_id": state.site_id, "file_code": state.file_code,
            "revision": ev.revision, "trigger": ev.trigger, "pages": len(ev.pages),
            "gaps": len(ev.gaps)})

    cache = StateCache(cfg.state_cache_files)

    def load(key: str, ev: FileEvent) -> FileState:
        raw = files.data.get(key)
        state = cache.get(key, raw)
        if state is not None:
            return state
        return FileState.from_dict(raw) if raw else FileState(ev.site_id, ev.file_code)

    @app.agent(site_events)
    async def assemble(stream: faust.StreamT) -> None:
        # In batches: a file's state is written to the table (and its changelog) once per
        # batch, not once per page; measured, the per-write cost dominated the worker.
        # The agent gets a faust.Stream, which has take_events; the StreamT protocol that
        # app.agent's signature asks for does not declare it.
        async for batch in stream.take_events(  # type: ignore[attr-defined]
                cfg.batch_max_events, within=cfg.batch_within_s):
            now = time.time()
            dirty: dict[str, tuple[int, FileState]] = {}
            outputs: list[tuple[FileState, Any]] = []
            dead: list[Any] = []
            asks: list[tuple[bytes, bytes]] = []
            for event in batch:
                msg = event.message
                try:
                    ev = parse_event(msg.value)
                except InvalidEvent as exc:
                    metrics.EVENTS.labels("assembly", "invalid").inc()
                    dead.append(dead_letter("assembly", exc.reason, msg.value, topic=msg.topic,
                                            partition=msg.partition, offset=msg.offset,
                                            site_id=_site_of(msg.key)))
                    log.warning("invalid site event", extra={
                        "reason": exc.reason, "partition": msg.partition,
                        "offset": msg.offset})
                    continue
                refusal = guard.refusal(msg.topic, msg.key, msg.value, msg.headers, ev.site_id)
                if refusal is not None:  # not proven to come from the site it names
                    metrics.EVENTS.labels("assembly", "refused").inc()
                    dead.append(dead_letter("assembly", refusal, msg.value, topic=msg.topic,
                                            partition=msg.partition, offset=msg.offset))
                    continue
                metrics.EVENTS.labels("assembly", ev.NAME).inc()
                if isinstance(ev, SiteHeartbeat) or not isinstance(ev, FileEvent):
                    continue
                key = ev.key()
                state = dirty[key][1] if key in dirty else load(key, ev)
                try:
                    changed, out = state.apply(ev, now, idle, settle, check_content)
                except Exception as exc:  # a bug must not stop the partition
                    log.exception("assembly failed", extra={"key": key})
                    dead.append(dead_letter(
                        "assembly", f"internal error: {exc!r}", msg.value, topic=msg.topic,
                        partition=msg.partition, offset=msg.offset, site_id=ev.site_id))
                    continue
                if changed or files.data.get(key) is None:
                    dirty[key] = (msg.partition, state)
                if (changed and check_content and isinstance(ev, PageScanned)
                        and state.pending.get((ev.document, ev.page_index)) == ev.sha256):
                    asks.append((f"{ev.site_id}/{ev.sha256}".encode(), json.dumps(
                        {"k": key, "fo": ev.fonds, "f": ev.file_code, "d": ev.document,
                         "i": ev.page_index, "s": ev.sha256}, ensure_ascii=False).encode()))
                if out is not None:
                    outputs.append((state, out))
            for key, (partition, state) in dirty.items():
                value = state.to_dict()
                files.data[key] = value
                files.send_changelog(partition, key, value)
                cache.put(key, value, state)
            for ask_key, ask in asks:
                await content_requests.send(key=ask_key, value=ask)
            for dl in dead:
                await publish(dead_letters, dl)
            for state, out in outputs:
                await emit_assembled(state, out)

    @app.agent(ticks)
    async def on_tick(stream: faust.StreamT) -> None:
        async for event in stream.events():
            key = event.message.key.decode("utf-8", "replace") if event.message.key else ""
            raw = files.get(key)
            if not raw:
                continue
            state = FileState.from_dict(raw)
            now = time.time()
            if event.message.value == b"tick":
                changed, out = False, state.tick(now, idle, settle)
            else:
                try:
                    answer = json.loads(event.message.value)
                    other = answer.get("o")
                    changed, out = state.content_answer(
                        (str(answer["d"]), int(answer["i"])), str(answer["s"]),
                        (str(other[0]), str(other[1]), str(other[2]), int(other[3]))
                        if other else None, now)
                except (ValueError, KeyError, TypeError, IndexError):
                    log.warning("bad internal message", extra={"key": key})
                    continue
            if changed or out is not None:
                files[key] = state.to_dict()
            if out is not None:
                await emit_assembled(state, out)

    @app.agent(content_requests)
    async def content_index(stream: faust.StreamT) -> None:
        async for event in stream.events():
            try:
                ask = json.loads(event.message.value)
                key = event.message.key.decode()
                first = content.get(key)
                other = None
                mine = [ask["fo"], ask["f"], ask["d"], ask["i"]]
                if first is None or len(first) != 4:  # (or a holder recorded before fonds)
                    content[key] = mine
                elif first[:2] != mine[:2]:
                    other = first  # same content in another file of this site
                answer = {"t": "content", "d": ask["d"], "i": ask["i"], "s": ask["s"],
                          "o": other}
                await ticks.send(key=ask["k"].encode(),
                                 value=json.dumps(answer, ensure_ascii=False).encode())
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                log.warning("bad content request", extra={"offset": event.message.offset})

    @app.timer(interval=cfg.idle_check_interval_s)
    async def idle_check() -> None:
        now = time.time()
        for key, raw in list(files.items()):
            if raw and FileState.from_dict(raw).due(now, idle, settle):
                await ticks.send(key=key.encode(), value=b"tick")

    app.sohoa_files = files  # type: ignore[attr-defined]  # for tests and tools
    return app


def _site_of(key: bytes | None) -> str:
    if not key:
        return "unknown"
    return key.decode("utf-8", "replace").split("/", 1)[0][:200] or "unknown"
