"""The agent's Prometheus metrics (names as docs/architecture.md lists them)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


class AgentMetrics:
    def __init__(self, site: str) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.site = site
        self._detected = Counter("sohoa_watcher_pages_detected", "Pages detected (new or new "
                                 "revision) and recorded in the outbox", ["site"], registry=r)
        self._sent = Counter("sohoa_watcher_pages_sent", "PageScanned events acknowledged by "
                             "Kafka", ["site"], registry=r)
        self._rejected = Counter("sohoa_watcher_rejected", "Files refused, by reason",
                                 ["site", "reason"], registry=r)
        self._depth = Gauge("sohoa_watcher_outbox_depth", "Events waiting in the outbox",
                            ["site"], registry=r)
        self._oldest = Gauge("sohoa_watcher_oldest_unsent_seconds", "Age of the oldest unsent "
                             "event", ["site"], registry=r)
        self._last_page = Gauge("sohoa_watcher_last_page_timestamp_seconds", "When the last "
                                "page was detected (unix time)", ["site"], registry=r)
        self._events_sent = Counter("sohoa_watcher_events_sent", "Events acknowledged by "
                                    "Kafka, by type", ["site", "type"], registry=r)
        self._upload_pages = Gauge("sohoa_watcher_upload_pending_pages", "Pages whose "
                                   "document waits to be stored in the object store",
                                   ["site"], registry=r)
        self._upload_bytes = Gauge("sohoa_watcher_upload_pending_bytes", "Bytes of the "
                                   "documents waiting to be stored", ["site"], registry=r)
        self._upload_oldest = Gauge("sohoa_watcher_oldest_unuploaded_seconds", "Age of the "
                                    "oldest document not yet stored", ["site"], registry=r)
        self._uploaded = Counter("sohoa_watcher_uploaded_bytes", "Bytes sent to the object "
                                 "store", ["site"], registry=r)
        self.upload_pages = self._upload_pages.labels(site)
        self.upload_bytes = self._upload_bytes.labels(site)
        self.upload_oldest = self._upload_oldest.labels(site)
        self.uploaded_bytes = _RunningTotal(self._uploaded.labels(site))
        self.detected = self._detected.labels(site)
        self.sent = self._sent.labels(site)
        self.depth = self._depth.labels(site)
        self.oldest = self._oldest.labels(site)
        self.last_page = self._last_page.labels(site)

    def uploads(self, pages: float, size: float, oldest_s: float, uploaded: float) -> None:
        """The sender child's upload figures (its running total of bytes sent)."""
        self.upload_pages.set(pages)
        self.upload_bytes.set(size)
        self.upload_oldest.set(oldest_s)
        self.uploaded_bytes.set(uploaded)

    def rejected(self, reason: str) -> None:
        self._rejected.labels(self.site, reason).inc()

    def rejected_count(self, reason: str) -> float:
        return self._rejected.labels(self.site, reason)._value.get()

    def event_sent(self, type_: str, n: int = 1) -> None:
        self._events_sent.labels(self.site, type_).inc(n)

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        start_http_server(port, addr=addr, registry=self.registry)


class _RunningTotal:
    """A counter fed with a running total that restarts at 0 with each sender child."""

    def __init__(self, counter: Counter) -> None:
        self._counter = counter
        self._last = 0.0

    def set(self, total: float) -> None:
        if total < self._last:
            self._last = 0.0
        if total > self._last:
            self._counter.inc(total - self._last)
        self._last = total
