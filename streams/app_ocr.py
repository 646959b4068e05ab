"""The OCR app (its own consumer group, ``streams.ocr_app_id``): for each FileAssembled on the
file-events topic, check every page (process pool), OCR the file into PDF/A (long-lived
engine processes, ``streams.ocr_pool``), and publish PageChecked, OcrProgress while a long
file is in OCR, OcrCompleted/OcrFailed and the FileVerdict.

It keeps no table: everything it needs is in the FileAssembled event and in the output
directory, so OCR machines can be added (more partitions served) or restarted freely. A
replayed FileAssembled produces the same events (same ids) and reuses a finished PDF.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import multiprocessing
import os
import shutil
import socket
import time
import weakref
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import faust

from sohoa.config import QcConfig, Settings
from sohoa.events import (
    CheckResult,
    FileAssembled,
    InvalidEvent,
    OcrCompleted,
    OcrFailed,
    OcrProgress,
    PageChecked,
    PageRef,
    PageText,
    parse_event,
    stable_event_id,
)
from sohoa.metadata import is_large_format
from streams import metrics
from streams.faustapp import dead_letter, make_app, publish, raw_topic, source_partitions
from streams.ocr import (
    ENGINE,
    OcrDone,
    OcrJob,
    OcrOptions,
    OcrPage,
    OcrPaths,
    OcrResult,
    inputs_digest,
    load_done,
)
from streams.ocr_pool import EnginePool
from streams.qc import Check, PageQc, unreadable
from streams.qc_task import ChunkQc, check_chunk_reporting
from streams.sources import PageSources, SourceUnavailable
from streams.staged_documents import StagedDocuments
from streams.verdict import PageId, decide

log = logging.getLogger(__name__)


class FileProcessor:
    """QC + OCR + verdict of one FileAssembled; owns the pools."""

    def __init__(self, settings: Settings, publish_event: Any) -> None:
        self.settings = settings
        self.publish = publish_event
        self.qc_cfg: QcConfig = settings.qc.model_copy(deep=True)
        self.sources = PageSources.from_settings(settings)
        self._qc_pool: ProcessPoolExecutor | None = None
        self._engines: EnginePool | None = None
        self._threads = ThreadPoolExecutor(max_workers=max(2, settings.ocr.concurrency + 1),
                                           thread_name_prefix="sohoa-ocr-wait")
        self._ocr_slots = asyncio.Semaphore(max(1, settings.ocr.concurrency))
        # One OCR run per (site, file, revision) at a time: a redelivered FileAssembled waits
        # for the run in flight and then reuses its result instead of racing it to the same
        # output path with a different PDF under the same OcrCompleted id.
        # Weak values: a lock lives exactly as long as some run holds or waits for it.
        self._file_locks: weakref.WeakValueDictionary[tuple[str, str, str, int],
                                                      asyncio.Lock] = weakref.WeakValueDictionary()
        self.work_root = Path(settings.streams.data_dir) / settings.streams.ocr_app_id / "work"
        self.staged = StagedDocuments(self.sources, self.work_root / "qc-staged",
                                      settings.qc.staged_documents)
        self.host = socket.gethostname()

    # --- lifecycle ----------------------------------------------------------------------
    def clean_scratch(self) -> None:
        """Scratch space of jobs killed with this worker (kill -9, power cut)."""
        shutil.rmtree(self.work_root, ignore_errors=True)
        self.work_root.mkdir(parents=True, exist_ok=True)

    def qc_pool(self) -> ProcessPoolExecutor:
        if self._qc_pool is None:
            n = self.settings.qc.workers or os.cpu_count() or 1
            self._qc_pool = ProcessPoolExecutor(
                max_workers=n, mp_context=multiprocessing.get_context("spawn"))
        return self._qc_pool

    def engine_pool(self) -> EnginePool:
        if self._engines is None:
            o = self.settings.ocr
            self._engines = EnginePool(o.concurrency, o.tesseract_threads, o.engine_max_files)
        return self._engines

    def close(self) -> None:
        if self._qc_pool is not None:
            self._qc_pool.shutdown(wait=False, cancel_futures=True)
        if self._engines is not None:
            self._engines.close()
        self._threads.shutdown(wait=False, cancel_futures=True)

    # --- QC ---------------------------------------------------------------------------
    async def check_pages(self, fa: FileAssembled) -> dict[PageId, list[Check]]:
        """Every page checked in the pool, a document's pages in chunks, so a 500-page
        document is shared by the pool's workers and one slow document does not hold up the
        rest; each chunk reads its pages one at a time (bounded memory). A document in the
        object store is downloaded once for all its chunks (:class:`StagedDocuments`)."""
        loop = asyncio.get_running_loop()
        chunk = max(1, self.settings.qc.pages_per_task)
        by_doc: dict[str, list[PageRef]] = {}
        for ref in fa.pages:
            by_doc.setdefault(ref.document, []).append(ref)

        site_dups = {(d.document, d.page_index): d for d in fa.duplicate_in_site}
        by_page: dict[PageId, list[Check]] = {}

        async def one(refs: list[PageRef], staged: str | None) -> None:
            first = refs[0]
            pages = [(r.page_index, r.sha256) for r in refs]
            cfg = self.qc_config_for(fa, first.document)
            results: list[PageQc] | None = None
            crashes, wait_s = 0, 1.0
            while crashes < 2:
                try:
                    done: ChunkQc = await loop.run_in_executor(
                        self.qc_pool(), check_chunk_reporting, fa.site_id, first.uri,
                        first.media_type, pages, cfg, self.sources, staged)
                    results = done.pages
                    metrics.count_tampered(done.tampered)
                    break
                except BrokenProcessPool:
                    # A checker died on a hostile file (crash, out of memory): new pool.
                    self._qc_pool = None
                    crashes += 1
                except SourceUnavailable as exc:
                    # The store is down, not the page bad: judging now would send good scans
                    # back for rescan. The partition waits; nothing is lost meanwhile.
                    log.warning("page store unavailable; QC waits and reads again", extra={
                        "site_id": fa.site_id, "file_code": fa.file_code,
                        "document": first.document, "retry_in_s": wait_s,
                        "error": exc.detail[:300]})
                    await asyncio.sleep(wait_s)
                    wait_s = min(wait_s * 2, 30.0)
            if results is None:
                results = [unreadable(r.page_index, "checker crashed on this file")
                           for r in refs]
            # Each chunk's checks are published as it finishes: a long document shows its
            # progress, and a worker killed halfway has sent what it had done.
            for ref, res in zip(refs, results, strict=True):
                key = (ref.document, ref.page_index)
                dup = site_dups.get(key)
                if dup is not None:  # found by the assembly app's site-wide content index
                    res = res.failing(Check(
                        "duplicate_in_site",
                        f"{dup.other_fonds}/{dup.other_file_code}: "
                        f"{dup.other_document} page {dup.other_page_index}",
                        threshold=None, passed=False))
                by_page.setdefault(key, []).extend(res.checks)
                await self.publish(PageChecked(
                    event_id=stable_event_id("PageChecked", 2, fa.site_id, fa.fonds,
                                             fa.file_code, fa.revision, ref.document,
                                             ref.page_index, ref.sha256),
                    site_id=fa.site_id, fonds=fa.fonds, file_code=fa.file_code,
                    document=ref.document, page_index=ref.page_index, sha256=ref.sha256,
                    revision=fa.revision,
                    checks=[CheckResult(check=c.check, value=c.value, threshold=c.threshold,
                                        passed=c.passed) for c in res.checks],
                    passed=res.passed, width_mm=_mm(res.width_mm),
                    height_mm=_mm(res.height_mm)))
                metrics.QC_PAGES.labels(fa.site_id).inc()
                for c in res.checks:
                    if not c.passed:
                        metrics.QC_FAILURES.labels(fa.site_id, c.check).inc()

        async def document(refs: list[PageRef]) -> None:
            chunks = [refs[i:i + chunk] for i in range(0, len(refs), chunk)]
            if len(chunks) == 1:
                await one(chunks[0], None)
                return
            # Downloaded once for all its chunks, not once per chunk.
            async with self.staged.document(fa.site_id, refs[0].uri) as staged:
                metrics.count_tampered(self.sources.take_tampered())  # the staging's own read
                await asyncio.gather(*(one(c, staged) for c in chunks))

        await asyncio.gather(*(document(refs) for refs in by_doc.values()))
        return by_page

    def qc_config_for(self, fa: FileAssembled, document: str) -> QcConfig:
        """The QC thresholds of one document: a map or drawing (its type in the manifest's
        record) has Art. 8's higher dpi floor."""
        q = self.settings.qc
        if is_large_format(fa.document_types.get(document), q.large_format_types):
            return self.qc_cfg.model_copy(
                update={"min_dpi": max(q.min_dpi, q.min_dpi_large_format)})
        return self.qc_cfg

    # --- OCR ----------------------------------------------------------------------------
    def purge_outputs(self, fa: FileAssembled) -> int:
        """A file classified (its manifest came late, or changed) keeps no OCR text at the
        centre: every revision's PDF, text and result made before are removed from the output
        directory and, with an object store, every version (delete markers too) of every
        object under the file's prefix in the outputs bucket (its packages included). Returns
        how many files and object versions were removed. The local files go first: a store
        that fails raises StoreError once they are gone."""
        folder = OcrPaths.for_file(self.settings.ocr.output_dir, fa.site_id, fa.fonds,
                                   fa.file_code, fa.revision).pdf.parent
        removed = 0
        if folder.is_dir():
            for out in folder.iterdir():
                if out.is_file() and out.suffix in (".pdf", ".txt", ".json", ".tmp"):
                    out.unlink()
                    removed += 1
        if removed:
            log.warning("classified file: earlier OCR outputs removed", extra={
                "site_id": fa.site_id, "fonds": fa.fonds, "file_code": fa.file_code,
                "removed": removed})
        if self.settings.store.enabled:
            from streams.outputs import purge_file_outputs

            stored = purge_file_outputs(self.settings.store, fa.site_id, fa.fonds,
                                        fa.file_code)
            if stored:
                log.warning("classified file: its OCR outputs deleted from the object store",
                            extra={"site_id": fa.site_id, "fonds": fa.fonds,
                                   "file_code": fa.file_code, "versions": stored,
                                   "bucket": self.settings.store.outputs_bucket})
            removed += stored
        return removed

    async def purge_classified(self, fa: FileAssembled, dead: Any) -> bool:
        """``purge_outputs`` off the event loop. A store that fails is logged (ERROR) and
        tried again with backoff, ``ocr.retries`` times while it may pass; then the
        FileAssembled goes to the dead letters saying what is left, for an operator to see;
        the purge is done again on the file's next reassembly. False if the store's copies
        may remain."""
        from sohoa.objectstore import StoreError

        o = self.settings.ocr
        wait = o.backoff_s
        attempt = 0
        while True:
            attempt += 1
            try:
                await asyncio.to_thread(self.purge_outputs, fa)
                return True
            except StoreError as exc:
                error = exc
                last = not exc.transient or attempt > o.retries
                log.error("classified file's OCR outputs not deleted from the object store"
                          + ("" if last else "; retrying"), extra={
                              "site_id": fa.site_id, "fonds": fa.fonds,
                              "file_code": fa.file_code, "revision": fa.revision,
                              "bucket": self.settings.store.outputs_bucket,
                              "attempt": attempt, "error": str(exc)})
                if last:
                    break
                await asyncio.sleep(wait)
                wait = min(60.0, wait * 2)
        await dead(fa, f"classified file's OCR outputs still in the object store "
                       f"({self.settings.store.outputs_bucket}): {error}")
        return False

    def ocr_skip_reason(self, fa: FileAssembled,
                        checks: dict[PageId, list[Check]]) -> str | None:
        o = self.settings.ocr
        if not o.enabled:
            return "disabled"
        if fa.classification.is_classified and not o.allow_classified:
            return "classified"
        if not fa.pages:
            return "no_pages"
        failed = any(not c.passed for cs in checks.values() for c in cs)
        structural = (fa.gaps or fa.duplicate_page_nos or fa.duplicate_content
                      or fa.count_mismatch or fa.missing_pages or fa.missing_documents)
        if o.skip_when_rescan and (failed or structural):
            return "needs_rescan"
        if any(c.check in ("decode", "pixels") and not c.passed
               for cs in checks.values() for c in cs):
            return "unreadable_pages"
        return None

    def job_for(self, fa: FileAssembled) -> tuple[OcrJob, OcrPaths, float]:
        o = self.settings.ocr
        paths = OcrPaths.for_file(o.output_dir, fa.site_id, fa.fonds, fa.file_code, fa.revision)
        pages = [OcrPage(document=p.document, page_index=p.page_index, uri=p.uri,
                         document_sha256=p.document_sha256, sha256=p.sha256,
                         media_type=p.media_type, languages=fa.languages.get(p.document))
                 for p in fa.pages]
        options = OcrOptions(engine=ENGINE, languages=o.languages, output_type=o.output_type,
                             rotate_pages=o.rotate_pages,
                             osd_below_confidence=o.osd_below_confidence, denoise=o.denoise)
        job_id = stable_event_id("ocr-job", fa.site_id, fa.file_code, fa.revision, time.time())
        title = f"{fa.fonds}/{fa.file_code}" if fa.fonds else fa.file_code
        job = OcrJob(pages=pages, options=options, inputs_digest=inputs_digest(pages, options),
                     site_id=fa.site_id, sources=self.sources,
                     title=f"{title} (r{fa.revision})", pdf=str(paths.pdf),
                     text=str(paths.text), result=str(paths.result),
                     work_dir=str(self.work_root / job_id))
        timeout = max(o.timeout_s_min, o.timeout_s_per_page * len(pages))
        return job, paths, timeout

    async def ocr(self, fa: FileAssembled) -> OcrCompleted | OcrFailed:
        lock = self._file_locks.setdefault((fa.site_id, fa.fonds, fa.file_code, fa.revision),
                                           asyncio.Lock())
        async with lock:
            return await self._ocr(fa)

    async def _ocr(self, fa: FileAssembled) -> OcrCompleted | OcrFailed:
        o = self.settings.ocr
        job, paths, timeout = self.job_for(fa)
        done = load_done(paths, job.inputs_digest)
        attempts = 0
        result: OcrResult | None = done
        if done is None:
            async with self._ocr_slots:
                failures = full = 0
                while True:
                    attempts += 1
                    started = time.monotonic()
                    result = await self._run_with_progress(fa, job, timeout)
                    metrics.OCR_SECONDS.observe(time.monotonic() - started)
                    if isinstance(result, OcrDone) or result.kind == "input":
                        break
                    if result.kind == "disk_full":
                        # The machine's fault, not the file's: an OcrFailed verdict would
                        # outlive the freed space. Wait (backoff capped at a minute) and say
                        # so loudly on every attempt; the retry budget is left untouched.
                        full += 1
                        wait = min(60.0, o.backoff_s * 2 ** min(full - 1, 6))
                        log.error("ocr output disk full; waiting for space", extra={
                            "site_id": fa.site_id, "file_code": fa.file_code,
                            "output_dir": str(o.output_dir), "attempt": attempts,
                            "retry_in_s": wait, "reason": result.reason})
                        await asyncio.sleep(wait)
                        continue
                    failures += 1
                    log.warning("ocr attempt failed", extra={
                        "site_id": fa.site_id, "file_code": fa.file_code, "attempt": attempts,
                        "reason": result.reason})
                    if failures > o.retries:
                        break
                    await asyncio.sleep(o.backoff_s * 2 ** (failures - 1))
        assert result is not None
        if isinstance(result, OcrDone) and self.settings.store.enabled:
            await self._store_outputs(fa, paths)
        common = {"site_id": fa.site_id, "fonds": fa.fonds, "file_code": fa.file_code,
                  "revision": fa.revision}
        if isinstance(result, OcrDone):
            return OcrCompleted(
                event_id=stable_event_id("OcrCompleted", 2, fa.site_id, fa.fonds,
                                         fa.file_code, fa.revision),
                output_uri=paths.pdf.resolve().as_uri(), output_sha256=result.output_sha256,
                text_uri=paths.text.resolve().as_uri(),
                pages=[PageText(document=p.document, page_index=p.page_index, chars=p.chars,
                                mean_confidence=p.mean_confidence) for p in result.pages],
                seconds=result.seconds, **common)
        return OcrFailed(
            event_id=stable_event_id("OcrFailed", 2, fa.site_id, fa.fonds, fa.file_code,
                                     fa.revision),
            reason=f"{result.kind}: {result.reason}",
            attempts=max(1, attempts), **common)

    async def _store_outputs(self, fa: FileAssembled, paths: OcrPaths) -> None:
        """The finished PDF and text into the object store too (streams/outputs.py); a store
        that is away is waited for, as a full output disk is: the output is not lost."""
        from sohoa.objectstore import StoreError
        from streams.outputs import store_outputs

        wait = self.settings.ocr.backoff_s
        while True:
            try:
                await asyncio.to_thread(store_outputs, self.settings.store, fa.site_id,
                                        fa.fonds, fa.file_code, fa.revision,
                                        [paths.pdf, paths.text])
                return
            except StoreError as exc:
                log.error("ocr output not stored in the object store; retrying", extra={
                    "site_id": fa.site_id, "file_code": fa.file_code, "error": str(exc),
                    "retry_in_s": wait})
                await asyncio.sleep(wait)
                wait = min(60.0, wait * 2)

    async def _run_with_progress(self, fa: FileAssembled, job: OcrJob,
                                 timeout: float) -> OcrResult:
        """One OCR attempt in an engine process; meanwhile the file's pages done of pages go
        to the metrics as they come and, at most every ``ocr.progress_every_s``, out as an
        OcrProgress event."""
        loop = asyncio.get_running_loop()
        labels = (fa.site_id, fa.fonds, fa.file_code)
        state = {"done": 0, "total": 0}

        def progress(done: int, total: int) -> None:  # in the waiting thread
            state["done"], state["total"] = done, total
            metrics.OCR_FILE_PAGES_DONE.labels(*labels).set(done)
            metrics.OCR_FILE_PAGES_TOTAL.labels(*labels).set(total)
            metrics.OCR_PAGES.labels(fa.site_id).inc()

        run = loop.run_in_executor(self._threads, self.engine_pool().run, job, timeout,
                                   progress)
        sent = (0, 0)
        try:
            while True:
                try:
                    return await asyncio.wait_for(asyncio.shield(run),
                                                  self.settings.ocr.progress_every_s)
                except TimeoutError:
                    now = (state["done"], state["total"])
                    if now != sent and now[1]:
                        sent = now
                        await self._publish_progress(fa, *now)
        finally:
            for gauge in (metrics.OCR_FILE_PAGES_DONE, metrics.OCR_FILE_PAGES_TOTAL):
                with contextlib.suppress(KeyError):  # no page was done
                    gauge.remove(*labels)

    async def _publish_progress(self, fa: FileAssembled, done: int, total: int) -> None:
        ev = OcrProgress(
            event_id=stable_event_id("OcrProgress", fa.site_id, fa.fonds, fa.file_code,
                                     fa.revision, done, total),
            site_id=fa.site_id, fonds=fa.fonds, file_code=fa.file_code, revision=fa.revision,
            pages_done=done, pages_total=total)
        try:
            await self.publish(ev)
        except Exception:  # progress is a courtesy: never fail the file's OCR for it
            log.warning("could not publish OCR progress", exc_info=True, extra={
                "site_id": fa.site_id, "file_code": fa.file_code})

    # --- one file -----------------------------------------------------------------------
    async def handle(self, fa: FileAssembled, dead: Any) -> None:
        metrics.OCR_BACKLOG.inc()
        try:
            checks: dict[PageId, list[Check]] = {}
            if self.settings.streams.qc_enabled:
                checks = await self.check_pages(fa)
            skip = self.ocr_skip_reason(fa, checks)
            if skip == "classified":
                await self.purge_classified(fa, dead)
            ocr_ev: OcrCompleted | OcrFailed | None = None
            if skip is None:
                ocr_ev = await self.ocr(fa)
                await self.publish(ocr_ev)
                result = "completed" if isinstance(ocr_ev, OcrCompleted) else "failed"
                metrics.OCR_FILES.labels(fa.site_id, result).inc()
                if isinstance(ocr_ev, OcrFailed):
                    await dead(fa, f"ocr failed: {ocr_ev.reason}")
            else:
                metrics.OCR_FILES.labels(fa.site_id, "skipped").inc()
            verdict = decide(fa, checks, ocr_ev, skip, self.settings.verdict)
            await self.publish(verdict)
            metrics.VERDICTS.labels(fa.site_id, verdict.verdict.value).inc()
            log.info("file verdict", extra={
                "site_id": fa.site_id, "file_code": fa.file_code, "revision": fa.revision,
                "verdict": verdict.verdict.value, "reasons": len(verdict.reasons),
                "ocr": skip or ("completed" if isinstance(ocr_ev, OcrCompleted) else "failed")})
        finally:
            metrics.OCR_BACKLOG.dec()


def _mm(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and v > 0 else None


def clean_stale_temps(output_dir: Path) -> int:
    """Temp outputs (``.<name>.<host>.<pid>.tmp``) left by an OCR child killed with its
    worker: removed when written on this host by a process that is gone, or older than a day
    (another host's leftovers)."""
    removed = 0
    if not output_dir.exists():
        return 0
    host = socket.gethostname()
    for tmp in output_dir.rglob(".*.tmp"):
        parts = tmp.name[:-4].rsplit(".", 2)
        try:
            stale = time.time() - tmp.stat().st_mtime > 86400
            if not stale and len(parts) == 3 and parts[1] == host and parts[2].isdigit():
                try:
                    os.kill(int(parts[2]), 0)
                except ProcessLookupError:
                    stale = True
                except PermissionError:
                    pass
            if stale:
                tmp.unlink()
                removed += 1
        except OSError:
            continue
    return removed


def build(settings: Settings, partitions: int | None = None) -> faust.App:
    cfg = settings.streams
    if partitions is None and not cfg.table_partitions:
        partitions = source_partitions(settings, settings.topics.file_events)
    app = make_app(settings, cfg.ocr_app_id, cfg.ocr_web_port, partitions or cfg.table_partitions)
    file_events = raw_topic(app, settings.topics.file_events)
    dead_letters = raw_topic(app, settings.topics.dead_letters)

    async def publish_event(ev: Any) -> None:
        await publish(file_events, ev)

    state: dict[str, FileProcessor] = {}

    def processor() -> FileProcessor:
        if "p" not in state:
            state["p"] = FileProcessor(settings, publish_event)
        return state["p"]

    async def dead(fa: FileAssembled, reason: str) -> None:
        await publish(dead_letters, dead_letter("ocr", reason, fa.to_json(),
                                                topic=settings.topics.file_events,
                                                partition=None, offset=None,
                                                site_id=fa.site_id))

    @app.agent(file_events, concurrency=max(1, settings.ocr.concurrency))
    async def process(stream: faust.StreamT) -> None:
        p = processor()
        async for event in stream.events():
            msg = event.message
            try:
                ev = parse_event(msg.value)
            except InvalidEvent as exc:
                metrics.EVENTS.labels("ocr", "invalid").inc()
                await publish(dead_letters, dead_letter(
                    "ocr", exc.reason, msg.value, topic=msg.topic, partition=msg.partition,
                    offset=msg.offset))
                continue
            if not isinstance(ev, FileAssembled):
                continue
            metrics.EVENTS.labels("ocr", ev.NAME).inc()
            try:
                await p.handle(ev, dead)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let one file stop the partition
                log.exception("file processing failed", extra={
                    "site_id": ev.site_id, "file_code": ev.file_code})
                await publish(dead_letters, dead_letter(
                    "ocr", f"internal error: {exc!r}", msg.value, topic=msg.topic,
                    partition=msg.partition, offset=msg.offset, site_id=ev.site_id))

    # Scratch of jobs killed with the previous worker on this machine, before anything runs.
    processor().clean_scratch()
    n = clean_stale_temps(Path(settings.ocr.output_dir))
    if n:
        log.info("removed stale OCR temp files", extra={"count": n})
    atexit.register(lambda: state["p"].close() if "p" in state else None)

    return app
