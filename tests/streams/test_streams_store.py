"""The assembly table on disk (``streams.store = "rocksdb"``): kill -9 of the assembly worker
mid-stream, then a restart on the same data dir, and every file is assembled with exactly the
pages this test sent (real Kafka, real Faust worker)."""

from __future__ import annotations

import re
import signal
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest

from sohoa.events import FileAssembled
from streams.state_codec import decode_state, is_compact
from tests.support.procs import SohoaProcess, wait_for
from tests.support.streams_helpers import closed, fake_page, read_all, send, streams_env

pytestmark = pytest.mark.integration
SITE = "xa-dia-cung"


def _assembled(stack, topic: str) -> list[FileAssembled]:
    return [e for e in read_all(stack, topic) if isinstance(e, FileAssembled)]


def _assembled_count(port: str) -> int:
    """The worker's own count of FileAssembled published (its /metrics), read fast."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return 0
    return int(sum(float(v) for v in re.findall(
        r"^sohoa_files_assembled_total\{[^}]*\} (\S+)$", text, re.M)))


def _files_on_disk(data_dir: Path) -> dict[str, bytes]:
    """Every value of the ``files`` table's RocksDB databases (the worker is dead: no lock)."""
    import rocksdict

    out: dict[str, bytes] = {}
    for db_path in sorted(data_dir.rglob("files-*.db")):
        opts = rocksdict.Options(raw_mode=True)
        db = rocksdict.Rdict(str(db_path), options=opts,
                             access_type=rocksdict.AccessType.read_only())
        try:
            for k, v in db.items():
                assert isinstance(k, bytes) and isinstance(v, bytes)  # raw mode
                if not k.startswith((b"__faust", b"\x00")):   # offsets, the open index
                    out[k.decode()] = v
        finally:
            db.close()
    return out


def test_assembly_state_on_disk_survives_kill9(stack, tmp_path: Path) -> None:
    env = streams_env(stack, tmp_path, SOHOA_STREAMS__STORE="rocksdb",
                      SOHOA_STREAMS__LATE_PAGE_SETTLE_S="1",
                      SOHOA_STREAMS__IDLE_CHECK_INTERVAL_S="1")
    site_topic, file_topic = env["SOHOA_TOPICS__SITE_EVENTS"], env["SOHOA_TOPICS__FILE_EVENTS"]
    data_dir = tmp_path / "faust" / env["SOHOA_STREAMS__APP_ID"]
    sent: dict[str, set[str]] = defaultdict(set)   # the independent count: what was sent

    def pages(code: str, numbers: range, content: str = "") -> list:
        evs = [fake_page(SITE, code, n, content=f"{code}/{n}{content}") for n in numbers]
        sent[code].update(e.document for e in evs)
        return evs

    done = [f"HS-{i:03d}" for i in range(120)]       # closed before the kill
    open_ = [f"HS-OPEN-{i}" for i in range(5)]      # pages before the kill, closed after
    before = []
    for code in done:
        before += [*pages(code, range(1, 21)), closed(SITE, code)]
    for code in open_:
        before += pages(code, range(1, 11))

    first = SohoaProcess(["streams", "--role", "assembly"], env, tmp_path / "first.log")
    try:
        send(stack, site_topic, before)
        # killed as soon as it has published a few files: mid-stream, with a batch in flight
        at_kill = wait_for(lambda: (lambda n: n if n >= 20 else None)(
            _assembled_count(env["SOHOA_STREAMS__WEB_PORT"])), 240,
            "the first files assembled", (first,), interval=0.05)
    finally:
        first.kill9()
    assert first.proc.returncode == -signal.SIGKILL   # it really died by kill -9
    on_disk = _files_on_disk(data_dir)
    assert on_disk, f"no files table under {data_dir}"
    assert all(k.split("/", 2)[2] in sent for k in (s.strip('"') for s in on_disk))
    compact = sum(is_compact(v) for v in on_disk.values())   # assembled files: compact
    assert all(decode_state(v).assembled == is_compact(v) for v in on_disk.values())

    # While it is down: late pages for five closed files, and more of each open file.
    after = []
    for code in done[:5]:
        after += pages(code, range(21, 22), content="late")
    for code in open_:
        after += [*pages(code, range(11, 13)), closed(SITE, code)]
    send(stack, site_topic, after)
    second = SohoaProcess(["streams", "--role", "assembly"], env, tmp_path / "second.log")
    try:
        def complete():
            by: dict[str, list[FileAssembled]] = defaultdict(list)
            for e in _assembled(stack, file_topic):
                by[e.file_code].append(e)
            latest = {c: max(es, key=lambda e: e.revision) for c, es in by.items()}
            ok = set(latest) == set(sent) and all(
                {p.document for p in latest[c].pages} == sent[c] for c in sent)
            return by if ok else None

        by = wait_for(complete, 240, "every file assembled with every page sent", (second,),
                      interval=1.0)
    finally:
        assert second.stop() == 0
    print(f"{at_kill} of {len(done)} files assembled at the kill -9, {len(on_disk)} of "
          f"{len(sent)} files in the table on disk ({compact} compact)")
    for code in sent:
        revisions = {e.revision: e.event_id for e in by[code]}
        # A late page makes revision 2 of a file assembled before it; of one still waiting
        # for its content answers when it came (a replay after the restart), it joins 1.
        want = [[1], [1, 2]] if code in done[:5] else [[1]]
        assert sorted(revisions) in want, (code, revisions)
        # a marker replayed after the crash may repeat an event, never with another id
        assert len({e.event_id for e in by[code]}) == len(revisions), code
    latest = {c: max(by[c], key=lambda e: e.revision) for c in sent}
    assert sum(len(latest[c].pages) for c in sent) == sum(len(v) for v in sent.values())
    assert sum(len(v) for v in sent.values()) == 120 * 20 + 5 + 5 * 12
