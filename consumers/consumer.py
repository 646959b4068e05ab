"""`sohoa consume`: the group consumer that writes progress to PostgreSQL exactly once.

A batch closes at ``consumer.batch_max_events`` records or ``consumer.batch_max_ms``, whichever
comes first. The batch and the offsets after it commit in one PostgreSQL transaction; Kafka's
own committed offsets are never used. On (re)assignment the consumer seeks to the offsets stored
in PostgreSQL, so a crash anywhere (even kill -9 mid-batch) replays exactly the uncommitted
records, and the dedup in :mod:`consumers.apply` makes a replay harmless anyway.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import threading
import time
from typing import Any

import psycopg

from consumers.apply import (
    BatchApplier,
    BatchResult,
    DeadLetterRow,
    Prepared,
    Record,
    SiteDefaults,
    dead_letter_for,
)
from consumers.apply import stored_offsets as read_offsets
from consumers.db import connect_retry
from consumers.metrics import ConsumerMetrics
from consumers.parsing import Parsed, ParsePool
from sohoa.config import Settings, TopicsConfig
from sohoa.identity import SiteGuard
from sohoa.kafka_clients import make_consumer, make_producer

log = logging.getLogger(__name__)


def screen(guard: SiteGuard, polled: list[Any], topics: TopicsConfig
           ) -> tuple[list[Record], list[DeadLetterRow]]:
    """The records to parse, and dead letters of those not proven to come from the site they
    name (sohoa/identity.py): every site event, and every dead letter a site signed (the
    centre's own dead letters are not signed; see docs/architecture.md, Site identity)."""
    if not guard.enforcing:
        return [Record(r.topic, r.partition, r.offset, r.value, r.key) for r in polled], []
    ok: list[Record] = []
    refused: list[DeadLetterRow] = []
    for r in polled:
        rec = Record(r.topic, r.partition, r.offset, r.value, r.key)
        if r.topic == topics.site_events or (
                r.topic == topics.dead_letters and guard.signed_by_site(r.headers)):
            why = guard.refusal(r.topic, r.key, r.value, r.headers)
            if why is not None:
                # Not the claimed site's: it must not show among that site's dead letters.
                refused.append(dataclasses.replace(dead_letter_for(rec, why), site_id="unknown"))
                continue
        ok.append(rec)
    return ok, refused


def _listener_base() -> type:
    from kafka import ConsumerRebalanceListener

    return ConsumerRebalanceListener


class ProgressConsumer:
    def __init__(self, settings: Settings, metrics: ConsumerMetrics | None = None) -> None:
        self.settings = settings
        self.cfg = settings.consumer
        self.group_id = self.cfg.group_id
        self.metrics = metrics or ConsumerMetrics()
        self.stop_event = threading.Event()
        self.topics = [settings.topics.site_events, settings.topics.file_events,
                       settings.topics.dead_letters]
        self.conn: psycopg.Connection | None = None
        self.applier: BatchApplier | None = None
        self.consumer: Any = None
        self.producer: Any = None
        self.pending: list[Any] = []
        # One batch is parsed in a worker process while the previous one is written.
        self.parser = ParsePool()
        self.inflight: Parsed | None = None
        self.batches = 0
        self._poll_failures = 0  # consecutive polls that raised a retriable Kafka error
        self._last_record = time.monotonic()  # when a poll last returned records (or a check ran)
        self._seen_waiting = False  # the last stall check found records waiting
        self.guard = SiteGuard.from_settings(settings)

    # --- PostgreSQL ---------------------------------------------------------------------

    def _connect(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                self.conn.close()
        self.conn = connect_retry(self.settings.postgres)
        self.applier = BatchApplier(self.conn, self.group_id,
                                    SiteDefaults.from_campaign(self.settings.campaign))
        log.info("postgres connected", extra={"group_id": self.group_id})

    def _stored_offsets(self) -> dict[tuple[str, int], int]:
        while True:
            try:
                assert self.conn is not None
                with self.conn.transaction():
                    return read_offsets(self.conn, self.group_id)
            except (psycopg.OperationalError, psycopg.InterfaceError):
                self._connect()

    def seek_to_stored(self, partitions) -> None:
        """Position each partition at the offset PostgreSQL says comes next."""
        offsets = self._stored_offsets()
        for tp in partitions:
            off = offsets.get((tp.topic, tp.partition))
            if off is None:
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, off)
        log.info("partitions positioned from postgres",
                 extra={"partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in partitions),
                        "stored": len(offsets)})

    # --- the loop -----------------------------------------------------------------------

    def _make_listener(self):
        outer = self

        class Listener(_listener_base()):
            def on_partitions_revoked(self, revoked):
                # Records of partitions we are losing must land before another member reads.
                outer.drain()

            def on_partitions_assigned(self, assigned):
                outer.drain()
                outer.seek_to_stored(assigned)

        return Listener()

    def run(self) -> None:
        self._connect()
        self._join()
        log.info("consumer started", extra={"topics": self.topics, "group_id": self.group_id})
        batch_started: float | None = None
        max_s = self.cfg.batch_max_ms / 1000.0
        try:
            while not self.stop_event.is_set():
                wait = max_s if batch_started is None else max(
                    0.0, max_s - (time.monotonic() - batch_started))
                polled = self._poll(
                    timeout_ms=int(wait * 1000) or 1,
                    max_records=max(1, self.cfg.batch_max_events - len(self.pending)))
                for recs in polled.values():
                    if recs and batch_started is None:
                        batch_started = time.monotonic()
                    self.pending.extend(recs)
                if polled:
                    self._last_record = time.monotonic()
                    self._seen_waiting = False
                elif time.monotonic() - self._last_record >= self.cfg.stall_s:
                    self._check_stall()
                if self.pending and (
                        len(self.pending) >= self.cfg.batch_max_events
                        or batch_started is None
                        or time.monotonic() - batch_started >= max_s):
                    self.flush()
                    batch_started = None
                elif not self.pending:
                    batch_started = None
                    if not polled:
                        self._write_inflight()  # quiet: do not hold a parsed batch back
            self.drain()
        finally:
            self.close()

    def _poll(self, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        """One poll; a retriable Kafka error (the broker gone) waits with backoff and polls
        nothing, so what is pending still gets written. kafka-python 3.0 lets such an error
        out of poll() when the broker dies while it looks up the group coordinator (its wait
        for a metadata refresh does not catch the refresh's connection error)."""
        from kafka.errors import KafkaError

        try:
            polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except KafkaError as exc:
            if not exc.retriable:
                raise
            self._poll_failures += 1
            wait = min(0.5 * 2 ** (self._poll_failures - 1), 10.0)
            log.log(logging.WARNING if self._poll_failures == 1 else logging.DEBUG,
                    "kafka unavailable while polling; polling again",
                    extra={"error": f"{type(exc).__name__}: {exc}"[:200], "retry_in_s": wait,
                           "failures": self._poll_failures})
            self.stop_event.wait(wait)
            return {}
        if self._poll_failures:
            log.info("kafka polled again", extra={"failures": self._poll_failures})
            self._poll_failures = 0
        return polled

    def _make_consumer(self) -> Any:
        """The group consumer; waits (with backoff) while no broker answers yet."""
        from kafka.errors import KafkaConfigurationError, KafkaError

        delay = 0.5
        while True:
            try:
                return make_consumer(
                    self.settings.kafka, group_id=self.group_id,
                    max_poll_records=self.cfg.batch_max_events,
                    # A group assigned while its topics' metadata is missing gets no
                    # partitions ("No partition metadata for topic") and rejoins only when a
                    # metadata refresh sees them: kafka-python's default age is 5 min. The
                    # streams workers bound it the same way (streams.metadata_max_age_s).
                    metadata_max_age_ms=int(self.settings.streams.metadata_max_age_s * 1000),
                    max_poll_interval_ms=int(self.cfg.max_poll_interval_s * 1000),
                    client_id=f"{self.settings.kafka.client_id}-consumer")
            except KafkaConfigurationError:
                raise
            except KafkaError:
                if self.stop_event.is_set():
                    raise
                log.warning("kafka unavailable, retrying",
                            extra={"bootstrap": self.settings.kafka.bootstrap,
                                   "retry_in_s": delay})
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _check_stall(self) -> None:
        """No record for ``consumer.stall_s``: if the broker holds records this member should be
        reading, close the Kafka client and start a new one. kafka-python 3.0.12 was seen (CI,
        under load) to join with no partitions and never rejoin, and to keep polling, fetching
        nothing, while records waited on partitions it held (py-spy: its loop alive, in
        fetch and coordinator waits); its issues #3106 and #3131 were two such states in
        earlier releases. A new client has new connections, fetch state and membership, and
        its partitions are positioned from PostgreSQL. Harmless when wrong: what is pending
        is written first.

        It acts on the second check in a row that finds records waiting, with no record read
        between: one check cannot tell a stall from a broker that just came back, whose
        backlog the client has not had ``stall_s`` to read."""
        self._last_record = time.monotonic()
        waiting = self._records_waiting()
        seen, self._seen_waiting = self._seen_waiting, bool(waiting)
        if not (waiting and seen):
            return
        self._seen_waiting = False
        log.warning("no record read for a while although some wait; "
                    "starting a new Kafka client", extra={
                        "idle_s": self.cfg.stall_s, "waiting": waiting,
                        "assigned": len(self.consumer.assignment())})
        self.metrics.stalls.inc()
        self.drain()
        try:
            self.consumer.close(autocommit=False, timeout_ms=5000)
        except Exception as exc:  # a wedged client: the broker's session timeout ends it
            log.debug("closing the stalled client failed", extra={"error": str(exc)[:200]})
        self._join()
        self._last_record = time.monotonic()

    def _records_waiting(self) -> dict[str, int]:
        """Records past this member's positions, by topic; with no partitions assigned, records
        the group has not stored in PostgreSQL. Empty when the broker or the database cannot
        tell (an outage is not a stall)."""
        from kafka import TopicPartition
        from kafka.errors import KafkaError

        assigned = self.consumer.assignment()
        try:
            if assigned:
                ends = self.consumer.end_offsets(list(assigned), timeout_ms=5000)
                behind = {tp: end - pos for tp, end in ends.items()
                          if (pos := self.consumer.position(tp, timeout_ms=0)) is not None
                          and end > pos}
            else:
                tps = [TopicPartition(t, p) for t in self.topics
                       for p in self.consumer.partitions_for_topic(t)]
                ends = self.consumer.end_offsets(tps, timeout_ms=5000)
                stored = self._stored_offsets()
                gaps = {tp: end - stored.get((tp.topic, tp.partition), 0)
                        for tp, end in ends.items()}
                # A transaction's commit marker takes an offset no record has: one is slack.
                behind = {tp: n for tp, n in gaps.items() if n > 1}
        except (KafkaError, psycopg.Error) as exc:
            log.debug("stall check skipped", extra={"error": f"{type(exc).__name__}: {exc}"[:200]})
            return {}
        waiting: dict[str, int] = {}
        for tp, n in behind.items():
            waiting[tp.topic] = waiting.get(tp.topic, 0) + n
        return waiting

    def _join(self) -> None:
        """A new Kafka client, subscribed: the group is joined on its first poll."""
        self.consumer = self._make_consumer()
        self._load_partitions()
        self.consumer.subscribe(self.topics, listener=self._make_listener())

    def _load_partitions(self) -> None:
        """The topics' partitions in the client's metadata before the group is joined.
        kafka-python 3.0.12 can join while they are not there yet (the topics were just
        created, the machine busy): the leader then assigns nothing ("No partition metadata
        for topic") and was seen never to rejoin, although its metadata refreshes every
        30 s (bench/bench_group_join.py: 2 of 20 joins left without partitions under CPU
        load, 0 of 20 with this)."""
        from kafka.errors import KafkaError

        try:
            missing = [t for t in self.topics if not self.consumer.partitions_for_topic(t)]
        except KafkaError as exc:
            log.warning("topic metadata not read before joining the group",
                        extra={"error": f"{type(exc).__name__}: {exc}"[:200]})
            return
        if missing:
            log.warning("topics not in the cluster's metadata when joining the group; "
                        "create them with `sohoa up` or infra/topics.py",
                        extra={"topics": missing})

    def flush(self) -> None:
        """Hand the pending records to the parser; write the batch parsed before meanwhile."""
        records, refused = screen(self.guard, self.pending, self.settings.topics)
        self.pending = []
        if not records and not refused:
            return
        nxt = self.parser.submit(records, refused)
        if self._write_inflight():
            self.inflight = nxt
        else:
            nxt.cancel()  # the consumer was re-positioned: these records will be read again

    def drain(self) -> None:
        """Write everything parsed or pending now (rebalance, shutdown)."""
        if self.pending:
            self.flush()
        self._write_inflight()

    def _write_inflight(self) -> bool:
        """Write the parsed batch, if any; False when PostgreSQL failed and we re-positioned."""
        fut, self.inflight = self.inflight, None
        if fut is None:
            return True
        prepared = fut.result()
        started = time.perf_counter()
        try:
            result = self._write(prepared)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            # PostgreSQL went away mid-batch: nothing of it committed (or all of it did). Wait
            # for the database, then re-read from the offsets it holds; drop what is queued.
            log.warning("batch not committed: postgres connection lost; will re-read",
                        extra={"error": str(exc).strip()[:200],
                               "records": len(prepared.records)})
            self._connect()
            self.pending = []
            self.seek_to_stored(self.consumer.assignment())
            return False
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self._after_commit(result)
        return True

    def _write(self, prepared: Prepared) -> BatchResult:
        assert self.conn is not None and self.applier is not None
        try:
            with self.conn.transaction():
                return self.applier.write(prepared)
        except (psycopg.OperationalError, psycopg.InterfaceError):
            raise
        except psycopg.Error as exc:
            # The database refused something in the batch: apply record by record so the one
            # at fault becomes a dead letter and the rest still count.
            log.error("batch refused by postgres; applying one by one",
                      extra={"error": str(exc).strip()[:300], "records": len(prepared.records)})
            return self._apply_singly(prepared.records)

    def _apply_singly(self, records: list[Record]) -> BatchResult:
        assert self.conn is not None and self.applier is not None
        total = BatchResult()
        for rec in records:
            try:
                with self.conn.transaction():
                    res = self.applier.apply([rec])
            except (psycopg.OperationalError, psycopg.InterfaceError):
                raise
            except psycopg.Error as exc:
                dl = dead_letter_for(rec, f"database refused: {str(exc).strip()[:300]}")
                with self.conn.transaction():
                    stored = self.applier.store_dead_letters([dl])
                    self.applier.store_offsets({(rec.topic, rec.partition): rec.offset + 1})
                res = BatchResult(dead_letters=stored)
            total.applied.update(res.applied)
            total.duplicates += res.duplicates
            total.dead_letters.extend(res.dead_letters)
            total.sites_created.extend(res.sites_created)
        return total

    def _after_commit(self, result: BatchResult) -> None:
        self.batches += 1
        for etype, n in result.applied.items():
            self.metrics.events_applied.labels(type=etype).inc(n)
        if result.duplicates:
            self.metrics.duplicates.inc(result.duplicates)
        if result.dead_letters:
            self._publish_dead_letters(result.dead_letters)
        self._update_lag()
        log.debug("batch committed", extra={"applied": sum(result.applied.values()),
                                            "duplicates": result.duplicates,
                                            "path": result.path})

    def _publish_dead_letters(self, rows: list[DeadLetterRow]) -> None:
        from consumers.apply import reason_class

        for d in rows:
            self.metrics.dead_letters.labels(reason=reason_class(d.reason)).inc()
            log.warning("dead letter", extra={"topic": d.topic, "partition": d.partition,
                                              "offset": d.offset, "reason": d.reason[:300]})
        try:
            if self.producer is None:
                self.producer = make_producer(self.settings.kafka)
            for d in rows:
                ev = d.to_event()
                self.producer.send(self.settings.topics.dead_letters, key=ev.site_id,
                                   value=ev.to_json())
            self.producer.flush(timeout=10)
        except Exception as exc:  # the row is in PostgreSQL already; the topic copy is a courtesy
            log.warning("dead letter not published to kafka",
                        extra={"error": str(exc)[:200], "count": len(rows)})

    def _update_lag(self) -> None:
        """Records behind the partitions' high waters, from what the client knows already:
        without a timeout position() may wait on the network (an offset reset or validation),
        and from the listener, on the client's IO thread, it cannot wait at all."""
        lag = 0
        try:
            for tp in self.consumer.assignment():
                hw = self.consumer.highwater(tp)
                pos = self.consumer.position(tp, timeout_ms=0)
                if hw is not None and pos is not None:
                    lag += max(0, hw - pos)
        except Exception:  # lag is informative only: never a reason to stop consuming
            return
        self.metrics.lag.set(lag)

    def close(self) -> None:
        self.parser.shutdown()
        for closer in (self.consumer, self.producer, self.conn):
            if closer is None:
                continue
            try:
                closer.close()
            except Exception as exc:
                log.debug("close failed", extra={"error": str(exc)[:200]})

    def install_signal_handlers(self) -> None:
        def stop(signum, _frame):
            log.info("stopping", extra={"signal": signum})
            self.stop_event.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
