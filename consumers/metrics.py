"""The consumer's /metrics: process counters, and progress gauges read from PostgreSQL.

Progress gauges are computed at scrape time from the tables (cached ``consumer.gauge_cache_s``)
so they survive restarts and agree with `sohoa status`. Labels never carry a file or page id.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from consumers.status import FILE_STATES
from sohoa.config import Settings
from sohoa.naming import slug

log = logging.getLogger(__name__)


class ConsumerMetrics:
    """Process counters of one consumer process, on their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_applied = Counter("sohoa_consumer_events_applied", "Events applied to "
                                      "PostgreSQL, by event type", ["type"], registry=r)
        self.duplicates = Counter("sohoa_consumer_duplicates", "Events skipped because their "
                                  "event_id was already applied", registry=r)
        self.batch_seconds = Histogram(
            "sohoa_consumer_batch_seconds", "Time to apply and commit one batch", registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.dead_letters = Counter("sohoa_consumer_dead_letters", "Records the consumer "
                                    "could not apply, by reason", ["reason"], registry=r)
        self.lag = Gauge("sohoa_consumer_lag_records", "Records behind the end of the "
                         "assigned partitions", registry=r)
        self.stalls = Counter("sohoa_consumer_stalls", "Times the consumer read nothing "
                              "for consumer.stall_s while records waited, and started a new "
                              "Kafka client", registry=r)


class ProgressCollector(Collector):
    """Gauges per site, read from PostgreSQL at scrape time and cached briefly.

    /metrics serves their text through :meth:`exposition`: the last rendering, refreshed in
    the background once older than ``cache_s``. At 3,321 sites a refresh is about 0.6 s of
    a core (reading the tables, then prometheus_client's text of some 80,000 samples), and
    the consumer's batch loop shares the interpreter with it: on a loaded host a scrape that
    waited for it took up to 22 s (docs/scaling.md), past Prometheus' timeout, and every
    progress alert went blind. A scrape never waits for the tables now, but the first.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cache_s = settings.consumer.gauge_cache_s
        self._lock = threading.Lock()
        self._conn: psycopg.Connection | None = None
        self._cached: list[Metric] = []
        self._cached_at = 0.0
        self._text_lock = threading.Lock()
        self._text: bytes | None = None
        self._text_at = 0.0
        self._rendering = False

    def describe(self) -> list[Metric]:
        return []  # families depend on the data: keep registration free of a database call

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if time.monotonic() - self._cached_at >= self.cache_s or not self._cached:
                try:
                    self._cached = self._read()
                    self._cached_at = time.monotonic()
                    up = 1.0
                except psycopg.Error as exc:
                    log.warning("metrics: postgres unavailable",
                                extra={"error": str(exc).strip()[:200]})
                    self._drop_conn()
                    up = 0.0
            else:
                up = 1.0
            yield from self._cached
            g = GaugeMetricFamily("sohoa_consumer_store_up",
                                  "1 when the last scrape could read PostgreSQL")
            g.add_metric([], up)
            yield g

    def exposition(self) -> bytes:
        """The gauges in the Prometheus text format: the last rendering, and a new one begun
        in the background if it is older than ``cache_s``."""
        with self._text_lock:
            if self._text is None:
                self._text, self._text_at = generate_latest(self), time.monotonic()
            elif time.monotonic() - self._text_at >= self.cache_s and not self._rendering:
                self._rendering = True
                threading.Thread(target=self._render_in_background, name="metrics-render",
                                 daemon=True).start()
            assert self._text is not None
            return self._text

    def _render_in_background(self) -> None:
        try:
            text = generate_latest(self)
            with self._text_lock:
                self._text, self._text_at = text, time.monotonic()
        except Exception:  # the thread's end: the last text stays served, the next scrape retries
            log.exception("metrics: rendering the progress gauges failed")
        finally:
            self._rendering = False

    def _drop_conn(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn = None

    def _connection(self) -> psycopg.Connection:
        from consumers.db import connect

        if self._conn is None or self._conn.closed:
            self._conn = connect(self.settings.postgres, autocommit=True, reader=True)
        return self._conn

    def _read(self) -> list[Metric]:
        from consumers.progress import day_end_ts, load_sites

        conn = self._connection()
        sites = load_sites(conn, self.settings.campaign)
        fam: dict[str, Any] = {}

        def gauge(name: str, doc: str, labels=("site",)) -> GaugeMetricFamily:
            return fam.setdefault(name, GaugeMetricFamily(name, doc, labels=list(labels)))

        def counter(name: str, doc: str, labels=("site",)) -> CounterMetricFamily:
            return fam.setdefault(name, CounterMetricFamily(name, doc, labels=list(labels)))

        # Gauges: each falls when pages are removed, rescanned or their file re-judged (a
        # counter that falls reads as a reset to Prometheus, and increase() spikes).
        scanned = gauge("sohoa_site_pages_scanned", "Distinct current pages scanned per site "
                        "(removed pages leave the count)")
        documents = gauge("sohoa_site_documents_scanned", "Distinct current documents (a "
                          "multi-page PDF or TIFF is one, each of its pages a page) per site")
        checked = gauge("sohoa_site_checked_pages", "Current pages whose revision has a check")
        accepted = gauge("sohoa_site_pages_accepted", "Pages in accepted files per site")
        qc_failed = gauge("sohoa_site_qc_failed_pages", "Current pages whose latest check "
                          "failed")
        target = gauge("sohoa_site_target_pages", "Planned pages per site")
        remaining = gauge("sohoa_site_remaining_pages", "Planned pages not yet scanned")
        deadline = gauge("sohoa_site_deadline_timestamp_seconds", "End of the deadline day")
        forecast = gauge("sohoa_site_forecast_completion_timestamp_seconds",
                         "End of the forecast completion day")
        behind = gauge("sohoa_site_behind_schedule", "1 when the forecast misses the deadline")
        last_page = gauge("sohoa_site_last_page_timestamp_seconds", "Time of the latest page")
        heartbeat = gauge("sohoa_site_last_heartbeat_timestamp_seconds",
                          "Time of the site agent's latest heartbeat")
        outbox = gauge("sohoa_site_outbox_depth", "Events waiting in the site agent's outbox")
        oldest = gauge("sohoa_site_oldest_unsent_seconds", "Age of the oldest unsent event")
        up_pages = gauge("sohoa_site_upload_pending_pages", "Pages whose document the site "
                         "has not yet stored in the object store")
        up_bytes = gauge("sohoa_site_upload_pending_bytes", "Bytes the site has yet to upload")
        up_oldest = gauge("sohoa_site_oldest_unuploaded_seconds", "Age of the site's oldest "
                          "document not yet stored")
        working = gauge("sohoa_site_working_now", "1 inside the site's working hours on a "
                        "working day (Vietnamese public holidays off)")
        throughput = gauge("sohoa_site_throughput_pages_per_day",
                           "Pages per working day over the forecast window")
        days_left = gauge("sohoa_site_working_days_left", "Working days from today to the "
                          "deadline, both counted (holidays, days off, make-up days applied)")
        required = gauge("sohoa_site_required_pages_per_day", "Pages per working day the "
                         "remaining pages need to meet the deadline (absent once it has passed)")
        info = gauge("sohoa_site_info", "Always 1: the campaign plan's name, unit and "
                     "contractor of a site, and unit_key, the unit as a routing key "
                     "(unit 'chưa rõ', unit_key 'chua-ro' until the plan names one)",
                     ("site", "name", "unit", "unit_key", "contractor"))
        for s in sites:
            lab = [s.site_id]
            unit = s.unit or "chưa rõ"
            info.add_metric([s.site_id, s.name or s.site_id, unit, slug(unit) or "chua-ro",
                             s.contractor or ""], 1.0)
            scanned.add_metric(lab, s.pages_scanned)
            documents.add_metric(lab, s.documents_scanned)
            checked.add_metric(lab, s.checked_pages)
            accepted.add_metric(lab, s.pages_accepted)
            qc_failed.add_metric(lab, s.qc_failed_pages)
            working.add_metric(lab, 1.0 if s.working_now else 0.0)
            throughput.add_metric(lab, s.throughput_per_day)
            if s.target_pages is not None:
                target.add_metric(lab, s.target_pages)
                remaining.add_metric(lab, s.remaining_pages or 0)
            if s.deadline is not None:
                deadline.add_metric(lab, day_end_ts(s.deadline, s.timezone))
                behind.add_metric(lab, 1.0 if s.at_risk else 0.0)
            if s.working_days_left is not None:
                days_left.add_metric(lab, s.working_days_left)
            if s.required_per_day is not None:
                required.add_metric(lab, s.required_per_day)
            if s.forecast_completion is not None:
                forecast.add_metric(lab, day_end_ts(s.forecast_completion, s.timezone))
            if s.last_page_at is not None:
                last_page.add_metric(lab, s.last_page_at.timestamp())
            if s.last_heartbeat_at is not None:
                heartbeat.add_metric(lab, s.last_heartbeat_at.timestamp())
                outbox.add_metric(lab, s.outbox_depth or 0)
                oldest.add_metric(lab, s.oldest_unsent_age_s or 0.0)
                up_pages.add_metric(lab, s.upload_pending_pages or 0)
                up_bytes.add_metric(lab, s.upload_pending_bytes or 0)
                up_oldest.add_metric(lab, s.oldest_unuploaded_age_s or 0.0)
        files = gauge("sohoa_files", "Files per site and state", ("site", "state"))
        counts = {(site, state): n for site, state, n in conn.execute(
            "SELECT site_id, state, files FROM v_files_by_state")}
        # Every state of every site, zeros included: a series that vanishes when its last file
        # moves on reads as "no data" on the boards instead of 0.
        states = [*FILE_STATES, *sorted({st for _, st in counts} - set(FILE_STATES))]
        for site in sorted({s.site_id for s in sites} | {site for site, _ in counts}):
            for state in states:
                files.add_metric([site, state], counts.get((site, state), 0))
        stored = counter("sohoa_dead_letters_stored", "Dead letters stored in PostgreSQL, "
                         "by reason", ("reason",))
        for reason, n in conn.execute(
                "SELECT reason_class, count(*) FROM dead_letters GROUP BY 1 ORDER BY 1"):
            stored.add_metric([reason], n)
        return list(fam.values())


def start_metrics_server(settings: Settings, metrics: ConsumerMetrics) -> ThreadingHTTPServer:
    """/metrics on consumer.metrics_host:metrics_port, in threads of its own: the process
    counters, rendered at each scrape (a few hundred samples), then the progress gauges' last
    rendering (:meth:`ProgressCollector.exposition`). The Prometheus text format 0.0.4, which
    every Prometheus accepts."""
    progress = ProgressCollector(settings)
    registry = metrics.registry

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                self.send_error(404, "only /metrics is served here")
                return
            body = generate_latest(registry) + progress.exposition()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a line per scrape would drown the consumer's log

    host, port = settings.consumer.metrics_host, settings.consumer.metrics_port

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        # an IPv6 metrics_host binds as one (what prometheus_client's server does)
        address_family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                            flags=socket.AI_PASSIVE)[0][0]

    server = Server((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics listening", extra={"host": settings.consumer.metrics_host,
                                         "port": settings.consumer.metrics_port})
    return server
