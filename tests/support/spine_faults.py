"""The driver of the fault tests (tests/faults/): ``spine_fault`` runs the whole spine
(tests/support/spine.py), hurts it once part of the work is done, and checks the exact outcome
after it; ``kill_and_restart`` is the hurt of a kill -9 and a restart of one component."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.support.client_timeouts import ClientTimeouts, client_timeouts
from tests.support.procs import wait_for
from tests.support.spine import PAGES, PER_FILE, Spine, group_members

Hurt = Callable[[Spine, ClientTimeouts], None]


def _always(spine: Spine) -> bool:
    return True


def _progress(spine: Spine, measure: str, pages: int, per_file: int
              ) -> tuple[Callable[[], int], int, int]:
    """(count, total, count to reach before the fault) of what the hurt part moves on."""
    files = -(-pages // per_file)
    return {"pages": (spine.pg_pages, pages, max(1, int(pages * 0.3))),
            "assemblies": (spine.pg_assembled_files, files, 1),
            "verdicts": (spine.pg_verdict_files, files, 1)}[measure]


def spine_fault(stack, tmp_path: Path, site: str, hurt: Hurt, *, measure: str = "pages",
                pages: int = PAGES, per_file: int = PER_FILE, kind: str = "tiny",
                delay: float | None = None, ready: Callable[[Spine], bool] = _always,
                settle_timeout: float = 420, after: Callable[[Spine], None] | None = None,
                ocr: bool = False, outbox_dir: Path | None = None, **extra: str) -> Spine:
    """Start everything and the writer; once part of the work is done (and ``ready(spine)``), hurt
    the spine; check part of the work was left for after the fault; wait for it all to settle,
    check no component but the hurt one was started again and the exact outcome against the
    disk, then ``after(spine)``."""
    spine = Spine(stack, tmp_path, site, ocr=ocr, outbox_dir=outbox_dir, **extra)
    timeouts = client_timeouts(spine.env)
    spine.note(f"client timeouts: {timeouts}")
    spine.start()
    try:
        # Pages spread over >= 20 s: a burst could be counted in one consumer batch, so the
        # fault would land after the run instead of during it.
        # Half the pages wait until the fault is due: a spine slow to start (a consumer
        # that takes a minute to get its partitions) still leaves work for after the fault.
        # Not when the test waits for a state of its own, which may need more of the pages.
        hold = tmp_path / "writer-hold" if ready is _always else None
        if hold is not None:
            hold.touch()
        spine.write_pages(pages, max(0.02, 20 / pages) if delay is None else delay, per_file,
                          kind, hold=hold)
        progress, total, threshold = _progress(spine, measure, pages, per_file)
        wait_for(lambda: progress() >= threshold and ready(spine), 300,
                 f"{threshold} {measure} before the fault", spine.alive_procs(), interval=0.2)
        if hold is not None:
            hold.unlink()
        before = progress()
        assert before < total, "the run was over before the fault; it proves nothing"
        spine.note(f"{measure} before the fault: {before} of {total}")
        spine.progress_after_fault = None
        hurt(spine, timeouts)
        left = spine.progress_after_fault
        assert left is not None and 0 <= left < total, \
            f"{measure} at the end of the fault: {left} of {total}; nothing was left after it"
        spine.wait_settled(pages, timeout=settle_timeout)
        spine.assert_restarts()
        spine.assert_exact(pages)
        if after is not None:
            after(spine)
        return spine
    finally:
        spine.stop_all()
        # The session stack is shared: whatever happened, leave Kafka and PostgreSQL running.
        stack.resume_kafka()
        if not stack.local.kafka.running():
            stack.start_kafka()
        if not stack.local.pg.running():
            stack.start_postgres()


def kill_and_restart(name: str, at_kill: Callable[[Spine], None] | None = None) -> Hurt:
    """kill -9 of ``name`` past its group's session, then a restart; ``at_kill(spine)`` runs
    once the component is gone."""
    def hurt(spine: Spine, t: ClientTimeouts) -> None:
        pid = spine.kill9(name)
        if at_kill is not None:
            at_kill(spine)
        outbox_at_kill = spine.outbox_rows()
        disk_at_kill = sum(spine.disk_pages().values())
        pages_after_kill = spine.pg_pages()  # the dead consumer can store no more
        offsets_after_kill = spine.end_offsets(spine.env["SOHOA_TOPICS__SITE_EVENTS"])
        measure = {"assembly": spine.pg_assembled_files, "ocr": spine.pg_verdict_files}.get(
            name, spine.pg_pages)
        spine.outage(t.member_gone(name),
                     lambda: not group_members(pid) and not spine.procs[name].alive(),
                     f"{name} killed", measure)
        # Felt: work piled up behind the dead component.
        if name == "watch":
            assert spine.outbox_rows() == outbox_at_kill, "the outbox grew with no agent"
            assert sum(spine.disk_pages().values()) > disk_at_kill, \
                "no page arrived while the agent was dead"
        elif name == "assembly":
            assert spine.closed_on_disk() > spine.pg_assembled_files(), \
                "no file was closed while the assembly worker was dead"
        elif name == "ocr":
            assert spine.pg_assembled_files() > spine.pg_verdict_files(), \
                "no assembled file waited for the dead QC/verdict worker"
        elif name == "consume":
            assert spine.pg_pages() == pages_after_kill, "pages were counted with no consumer"
            assert spine.end_offsets(spine.env["SOHOA_TOPICS__SITE_EVENTS"]) > \
                offsets_after_kill, "no record waited for the dead consumer"
        spine.restart(name)
    return hurt
