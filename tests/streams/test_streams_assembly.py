"""Assembly: unit tests of the file state, and the real Faust worker against real Kafka."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sohoa.events import DeadLetter, FileAssembled, ManifestDocument, PageRemoved
from streams.assembly import FileState
from streams.state_codec import StateCache, decode_state, encode_state, is_compact, is_due
from tests.support.procs import SohoaProcess, wait_for
from tests.support.streams_helpers import closed, fake_page, manifest, read_all, send, streams_env
from tests.support.typed_events import each

S, F = "xa-tan-phu", "HS-001"


def _fold(state: FileState, events, now: float = 1000.0):
    outs = []
    for ev in events:
        _changed, out = state.apply(ev, now)
        if out is not None:
            outs.append(out)
    return outs


def test_state_cache_is_bounded_and_never_serves_a_replaced_table_value() -> None:
    cache = StateCache(2)
    raws = {k: encode_state(FileState("S", k)) for k in ("a", "b", "c")}
    for k in ("a", "b"):
        cache.put(k, raws[k], FileState("S", k))
    got = cache.get("a", raws["a"])
    assert got is not None and got.file_code == "a"   # a is now the most recent
    cache.put("c", raws["c"], FileState("S", "c"))
    assert len(cache) == 2
    assert cache.get("b", raws["b"]) is None               # least recently used: dropped
    assert cache.get("a", bytes(raws["a"])) is not None    # the same bytes read again
    # A recovery, a rebalance or another worker put other bytes in the table: stale.
    other = encode_state(FileState("S", "a", fonds="X"))
    assert cache.get("a", other) is None
    assert cache.get("c", None) is None


def test_state_cache_is_bounded_in_pages_as_files_grow() -> None:
    # 2,000 files of 50 pages were 100,000 decoded pages; of 1,000 pages, 2,000,000: a bound
    # in files alone is none on memory.
    cache = StateCache(2000, pages=250)
    big = [FileState("S", f"F{i}") for i in range(4)]
    for i, st in enumerate(big):
        for n in range(1, 101):
            st.apply(fake_page(S, st.file_code, n), 1000.0)
        cache.put(st.file_code, encode_state(st), st)
        assert cache.pages == min(i + 1, 2) * 100 == sum(
            len(s.pages) for s in big if cache.get(s.file_code, encode_state(s)) is not None)
    assert len(cache) == 2 and cache.get("F0", encode_state(big[0])) is None
    # a cached state that grew is counted at its new size when written again
    grown = big[3]
    for n in range(101, 161):
        grown.apply(fake_page(S, grown.file_code, n), 1000.0)
    cache.put(grown.file_code, encode_state(grown), grown)
    assert cache.pages == 160 and len(cache) == 1
    # one file beyond the bound alone is still kept: the batch writing it reads it back
    huge = FileState("S", "H")
    for n in range(1, 301):
        huge.apply(fake_page(S, "H", n), 1000.0)
    cache.put("H", encode_state(huge), huge)
    assert len(cache) == 1 and cache.pages == 300


def test_an_assembled_state_is_stored_compact_and_lossless() -> None:
    st = FileState(S, F)
    outs = _fold(st, [manifest(S, F, 3), *(fake_page(S, F, n) for n in (1, 2, 3))])
    assert len(outs) == 1 and st.assembled
    plain, compact = encode_state(st, 0), encode_state(st)
    assert is_compact(compact) and not is_compact(plain)
    assert len(compact) < len(plain) * 0.7
    assert decode_state(compact).to_dict() == st.to_dict() == decode_state(plain).to_dict()
    assert decode_state(st.to_dict()).to_dict() == st.to_dict()   # a value of the JSON table
    # a late page reopens it: the next FileAssembled lists every page, known from compact bytes
    again = decode_state(compact)
    _changed, out = again.apply(fake_page(S, F, 4, content="late"), 2000.0)
    assert out is not None and out.trigger == "late_page" and out.revision == 2
    assert len(out.pages) == 4
    assert {p.uri for p in out.pages} >= {p.uri for p in outs[0].pages}


def test_marker_assembles_in_order_with_gaps_and_duplicates() -> None:
    st = FileState(S, F)
    evs = [fake_page(S, F, 3), fake_page(S, F, 1), fake_page(S, F, 5, content="same"),
           fake_page(S, F, 6, content="same")]
    # page 3 scanned twice under another file name: a duplicate page number, both kept
    dup = fake_page(S, F, 3, content="other", document="trang-3b.jpg")
    outs = _fold(st, [*evs, dup, closed(S, F)])
    assert len(outs) == 1
    fa = outs[0]
    assert fa.trigger == "marker" and fa.revision == 1
    assert [(p.document, p.number) for p in fa.pages] == [
        ("001.tif", 1), ("003.tif", 3), ("005.tif", 5), ("006.tif", 6), ("trang-3b.jpg", 3)]
    assert fa.gaps == [2, 4]
    assert fa.duplicate_page_nos == [3]
    assert [[k.document for k in g] for g in fa.duplicate_content] == [["005.tif", "006.tif"]]
    assert not fa.count_mismatch


def test_documents_of_many_pages_are_pages_in_their_own_right() -> None:
    """A file mixing single-page images, a 50-page PDF and a 20-page TIFF: every page is in the
    assembly, in document order (natural names), then page."""
    st = FileState(S, F)
    evs = [fake_page(S, F, n) for n in (2, 1, 10)]
    evs += [fake_page(S, F, 0, document="QD-15-UBND.pdf", page_index=i, document_pages=50)
            for i in range(50, 0, -1)]
    evs += [fake_page(S, F, 0, document="BB hop.tiff", page_index=i, document_pages=20)
            for i in range(1, 21)]
    fa = _fold(st, [manifest(S, F, 73), *evs])[0]
    assert fa.trigger == "expected_count" and len(fa.pages) == 73
    assert fa.documents() == ["001.tif", "002.tif", "010.tif", "BB hop.tiff", "QD-15-UBND.pdf"]
    assert [p.page_index for p in fa.pages if p.document == "QD-15-UBND.pdf"] == list(
        range(1, 51))
    assert {p.number for p in fa.pages if p.document.endswith(("pdf", "tiff"))} == {None}
    # Page numbers are judged among the names that claim them: 3..9 are missing.
    assert fa.gaps == [3, 4, 5, 6, 7, 8, 9]
    assert not fa.count_mismatch and fa.missing_pages == []


def test_a_document_with_pages_not_yet_received_and_the_manifest_order() -> None:
    st = FileState(S, F)
    docs = [ManifestDocument(name="to-trinh.pdf", pages=3), ManifestDocument(name="bia.jpg"),
            ManifestDocument(name="phu-luc.pdf")]
    evs = [manifest(S, F, None, documents=docs), fake_page(S, F, 0, document="bia.jpg"),
           *(fake_page(S, F, 0, document="to-trinh.pdf", page_index=i, document_pages=3)
             for i in (1, 3))]
    fa = _fold(st, [*evs, closed(S, F)])[0]
    assert fa.documents() == ["to-trinh.pdf", "bia.jpg"]  # the manifest's order
    assert [(k.document, k.page_index) for k in fa.missing_pages] == [("to-trinh.pdf", 2)]
    assert fa.missing_documents == ["phu-luc.pdf"]
    assert fa.gaps == []  # no name claims a number


def test_the_same_file_code_in_two_fonds_is_two_states() -> None:
    a, b = FileState(S, F, fonds="FONDS-A"), FileState(S, F, fonds="FONDS-B")
    pa = fake_page(S, F, 1, fonds="FONDS-A")
    pb = fake_page(S, F, 1, fonds="FONDS-B", content="b")
    assert pa.key() != pb.key()
    fa = _fold(a, [pa, closed(S, F, fonds="FONDS-A")])[0]
    fb = _fold(b, [pb, closed(S, F, fonds="FONDS-B")])[0]
    assert (fa.fonds, fb.fonds) == ("FONDS-A", "FONDS-B")
    assert fa.event_id != fb.event_id


def test_a_rescanned_document_reopens_for_changed_pages_only() -> None:
    """A 40-page document rescanned with 41 pages, one changed: the unchanged pages follow the
    new bytes without reopening; the changed and the new page reopen the file once."""
    st = FileState(S, F)

    def doc(i: int, n: int, version: str, content: str | None = None):
        return fake_page(S, F, 0, document="QD.pdf", page_index=i, document_pages=n,
                         content=content or f"page {i}").model_copy(update={
                             "document_sha256": (version * 64)[:64], "event_id": f"{version}{i}"})

    first = _fold(st, [manifest(S, F, 40), *(doc(i, 40, "a") for i in range(1, 41))])
    assert [o.revision for o in first] == [1]
    changed, out = st.apply(doc(5, 41, "b"), 2.0)  # unchanged content, new bytes
    assert changed and out is None and st.assembled and st.revision == 1
    changed, out = st.apply(doc(7, 41, "b", content="page 7 rescanned"), 2.0)
    assert changed and out is None and not st.assembled and st.revision == 2
    # The count is reached, but the document is not whole yet: its page 41 is behind.
    changed, fa = st.apply(doc(41, 41, "b"), 2.0)
    assert fa is not None and fa.trigger == "late_page"
    assert fa.revision == 2 and len(fa.pages) == 41
    by = {p.page_index: p for p in fa.pages}
    assert by[5].document_sha256 == "b" * 64 and by[1].document_sha256 == "a" * 64
    assert fa.count_mismatch  # the manifest said 40


def test_state_of_version_1_is_read() -> None:
    old = {"s": S, "f": F, "fo": "UBND", "p": {"3": {"UBND/HS-001/003.tif": [
        "file:///x/003.tif", "a" * 64, 2, 10]}}, "e": 1, "c": "public", "r": 1, "a": False}
    st = FileState.from_dict(old)
    assert list(st.pages) == [("003.tif", 1)] and st.pages[("003.tif", 1)].number == 3
    fa = _fold(st, [closed(S, F)])[0]
    assert [(p.document, p.number, p.revision) for p in fa.pages] == [("003.tif", 3, 2)]


def test_expected_count_triggers_and_late_page_reopens() -> None:
    st = FileState(S, F)
    outs = _fold(st, [manifest(S, F, 2), fake_page(S, F, 1), fake_page(S, F, 2)])
    assert [o.trigger for o in outs] == ["expected_count"]
    # the marker after count-assembly re-emits the same fact (same event id), no new revision
    again = _fold(st, [closed(S, F)])
    assert again[0].event_id == outs[0].event_id and again[0].revision == 1
    # a rescanned page 2 after assembly: revision 2, never dropped
    late = _fold(st, [fake_page(S, F, 2, content="rescan", revision=2)])
    assert late[0].revision == 2 and late[0].trigger == "late_page"
    assert late[0].event_id != outs[0].event_id
    assert [p.revision for p in late[0].pages] == [1, 2]


def test_idle_and_settle_ticks_and_replay_is_harmless() -> None:
    st = FileState(S, F)
    _fold(st, [fake_page(S, F, 1)], now=0.0)
    assert st.tick(10.0, idle_timeout_s=100, late_settle_s=5) is None
    out = st.tick(200.0, idle_timeout_s=100, late_settle_s=5)
    assert out is not None and out.trigger == "idle" and out.gaps == []
    # replaying the same page changes nothing
    changed, again = st.apply(fake_page(S, F, 1), 300.0)
    assert not changed and again is None
    st.apply(fake_page(S, F, 2), 300.0)       # late page, no manifest: waits to settle
    assert st.tick(302.0, 100, 5) is None
    out2 = st.tick(306.0, 100, 5)
    assert out2 is not None and out2.revision == 2 and out2.trigger == "late_page"


def test_count_mismatch_and_removed_page_and_roundtrip() -> None:
    st = FileState(S, F)
    p1, p2 = fake_page(S, F, 1), fake_page(S, F, 2)
    _fold(st, [manifest(S, F, 5), p1, p2])
    st.apply(PageRemoved(site_id=S, fonds="UBND", file_code=F, document="002.tif",
                         sha256=p2.sha256), 1.0)
    st = FileState.from_dict(json.loads(json.dumps(st.to_dict())))
    out = _fold(st, [closed(S, F)])[0]
    assert [p.number for p in out.pages] == [1]
    assert out.count_mismatch and out.expected_pages == 5 and out.gaps == [2, 3, 4, 5]


@pytest.mark.integration
def test_worker_assembles_from_kafka_and_dead_letters_bad_payloads(stack, tmp_path: Path) -> None:
    env = streams_env(stack, tmp_path)
    topics = (env["SOHOA_TOPICS__SITE_EVENTS"], env["SOHOA_TOPICS__FILE_EVENTS"],
              env["SOHOA_TOPICS__DEAD_LETTERS"])
    proc = SohoaProcess(["streams", "--role", "assembly"], env, tmp_path / "assembly.log")
    try:
        send(stack, topics[0], [
            manifest(S, "HS-A", 3), fake_page(S, "HS-A", 1), fake_page(S, "HS-A", 2),
            (f"{S}/HS-B", b"{not json"),
            fake_page(S, "HS-B", 1), fake_page(S, "HS-B", 3),
        ])

        def pages_folded():
            url = f"http://127.0.0.1:{env['SOHOA_STREAMS__WEB_PORT']}/metrics"
            line = 'sohoa_stream_events_total{stage="assembly",type="PageScanned"} 4.0'
            try:
                with urllib.request.urlopen(url, timeout=3) as r:
                    return line in r.read().decode()
            except OSError:
                return False

        wait_for(pages_folded, 120, "four pages folded into the assembly table", (proc,))
        # The web port serves metrics, never a file's state (URIs, hashes, classification).
        for path in (f"/files/{S}/HS-B", "/table/", "/table/files/"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(
                    f"http://127.0.0.1:{env['SOHOA_STREAMS__WEB_PORT']}{path}", timeout=5)
            assert err.value.code == 404, path
        send(stack, topics[0], [fake_page(S, "HS-A", 3), closed(S, "HS-B")])

        def assembled():
            evs = [e for e in read_all(stack, topics[1]) if isinstance(e, FileAssembled)]
            return evs if {e.file_code for e in evs} == {"HS-A", "HS-B"} else None

        evs = {e.file_code: e for e in wait_for(assembled, 90, "two FileAssembled", (proc,))}
        assert evs["HS-A"].trigger == "expected_count" and evs["HS-A"].gaps == []
        assert evs["HS-B"].trigger == "marker" and evs["HS-B"].gaps == [2]
        assert [p.number for p in evs["HS-B"].pages] == [1, 3]
        dls = each(wait_for(lambda: read_all(stack, topics[2]), 30, "a dead letter", (proc,)),
                   DeadLetter)
        assert dls[0].source == "streams" and "not JSON" in dls[0].reason
        with urllib.request.urlopen(
                f"http://127.0.0.1:{env['SOHOA_STREAMS__WEB_PORT']}/metrics", timeout=5) as r:
            text = r.read().decode()
        assert 'sohoa_files_assembled_total{site="xa-tan-phu"} 2.0' in text
    finally:
        assert proc.stop() == 0  # SIGTERM stops the worker cleanly


@pytest.mark.integration
def test_idle_timeout_and_late_page_through_the_worker(stack, tmp_path: Path) -> None:
    env = streams_env(stack, tmp_path, SOHOA_STREAMS__IDLE_TIMEOUT_S="2",
                      SOHOA_STREAMS__IDLE_CHECK_INTERVAL_S="0.5",
                      SOHOA_STREAMS__LATE_PAGE_SETTLE_S="1")
    site_topic, file_topic = env["SOHOA_TOPICS__SITE_EVENTS"], env["SOHOA_TOPICS__FILE_EVENTS"]
    proc = SohoaProcess(["streams", "--role", "assembly"], env, tmp_path / "assembly.log")
    try:
        send(stack, site_topic, [fake_page(S, "HS-IDLE", 1), fake_page(S, "HS-IDLE", 2)])

        def assembled(rev: int):
            def check():
                evs = [e for e in read_all(stack, file_topic)
                       if isinstance(e, FileAssembled) and e.revision == rev]
                return evs or None
            return check

        first = wait_for(assembled(1), 90, "FileAssembled after the idle timeout", (proc,))
        assert first[0].trigger == "idle" and [p.number for p in first[0].pages] == [1, 2]
        send(stack, site_topic, [fake_page(S, "HS-IDLE", 3)])
        late = wait_for(assembled(2), 60, "revision 2 after the late page", (proc,))
        assert late[0].trigger == "late_page"
        assert [p.number for p in late[0].pages] == [1, 2, 3]
    finally:
        proc.stop()


def test_site_duplicate_waits_for_the_content_index() -> None:
    st = FileState(S, F)
    p1, p2 = fake_page(S, F, 1), fake_page(S, F, 2, content="seen elsewhere")
    for p in (p1, p2):
        st.apply(p, 1.0, content_check=True)
    changed, out = st.apply(closed(S, F), 2.0, content_check=True)
    assert changed and out is None and st.deferred == "marker"  # waits for both answers
    other = ("UBND", "HS-OLD", "007.tif", 1)
    assert st.content_answer(("001.tif", 1), p1.sha256, None, 3.0) == (True, None)
    assert st.content_answer(("002.tif", 1), "f" * 64, other, 3.0) == (False, None)  # stale
    changed, out = st.content_answer(("002.tif", 1), p2.sha256, other, 3.0)
    assert out is not None and out.trigger == "marker"
    assert [(d.document, d.other_fonds, d.other_file_code, d.other_document)
            for d in out.duplicate_in_site] == [("002.tif", "UBND", "HS-OLD", "007.tif")]
    # the idle fallback assembles even if an answer never comes: after asking once more
    st2 = FileState(S, "HS-2")
    st2.apply(fake_page(S, "HS-2", 1), 1.0, content_check=True)
    st2.apply(closed(S, "HS-2"), 1.0, content_check=True)
    assert st2.due(100.0, idle_timeout_s=3600, late_settle_s=60)
    assert st2.tick(100.0, 3600, 60) is None and st2.reasked
    assert not st2.due(159.0, idle_timeout_s=3600, late_settle_s=60)
    late = st2.tick(160.0, 3600, 60)
    assert late is not None and late.trigger == "marker" and not st2.reasked


def test_a_lost_content_answer_is_asked_again_before_the_file_is_assembled_without_it(
) -> None:
    # An answer lost on a rebalance (docs/architecture.md, "Replays change nothing"): the timer
    # asks the pending question again instead of assembling without the site-wide check.
    st = FileState(S, F)
    dup = fake_page(S, F, 1, content="seen elsewhere")
    st.apply(dup, 1.0, content_check=True)
    st.apply(closed(S, F), 1.0, content_check=True)
    assert st.tick(61.0, 3600, 60) is None
    st = decode_state(encode_state(st))          # the flag is part of the stored state
    assert st.reasked and st.pending == {("001.tif", 1): dup.sha256}
    assert st.tick(62.0, 3600, 60) is None       # the second wait has its own settle time
    other = ("UBND", "HS-OLD", "007.tif", 1)
    changed, out = st.content_answer(("001.tif", 1), dup.sha256, other, 70.0)
    assert changed and out is not None and out.trigger == "marker"
    assert [d.other_file_code for d in out.duplicate_in_site] == ["HS-OLD"]
    # a new question after the re-ask (a late page) gets its own second chance
    st3 = FileState(S, "HS-3")
    st3.apply(fake_page(S, "HS-3", 1), 1.0, content_check=True)
    st3.apply(closed(S, "HS-3"), 1.0, content_check=True)
    assert st3.tick(61.0, 3600, 60) is None and st3.reasked
    st3.apply(fake_page(S, "HS-3", 2), 70.0, content_check=True)
    assert not st3.reasked
    assert st3.tick(130.0, 3600, 60) is None and st3.reasked


def test_the_idle_checks_due_test_on_raw_values_equals_the_decoded_states() -> None:
    # The idle check reads every open file each minute without building its pages
    states = {"empty": FileState(S, "E")}
    quiet = states["quiet"] = FileState(S, "Q")
    quiet.apply(fake_page(S, "Q", 1), 1.0)
    waiting = states["waiting"] = FileState(S, "W")
    waiting.apply(fake_page(S, "W", 1), 1.0, content_check=True)
    waiting.apply(closed(S, "W"), 1.0, content_check=True)
    assert waiting.deferred
    done = states["assembled"] = FileState(S, "D")
    _fold(done, [fake_page(S, "D", 1), closed(S, "D")])
    assert done.assembled
    reopened = states["reopened"] = decode_state(encode_state(done))
    reopened.apply(fake_page(S, "D", 2, content="late"), 500.0)
    assert reopened.revision == 2 and not reopened.assembled
    seen = set()
    for name, st in states.items():
        for level in (0, 6):
            raw = encode_state(st, level)
            for now in (30.0, 100.0, 600.0, 5000.0):
                want = st.due(now, 3600, 60)
                seen.add((name, want))
                assert is_due(raw, now, 3600, 60) == want, (name, level, now)
    v1 = {"s": S, "f": "Q", "p": {"1": {"001.tif": ["file:///x", "a" * 64, 1, 10]}},
          "r": 1, "a": False, "t": 1.0}   # a value written before documents
    assert [is_due(json.dumps(v1).encode(), now, 3600, 60) for now in (100.0, 5000.0)] == [
        False, True]
    assert {("quiet", True), ("quiet", False), ("waiting", True), ("reopened", True),
            ("reopened", False), ("assembled", False)} <= seen


def test_a_late_classified_manifest_reassembles_the_file_as_classified() -> None:
    """Issue 18: a manifest that arrives after the file was assembled (and maybe OCR'd) and
    makes it classified reassembles it at once, classified, so the OCR worker skips it and
    removes what it made before."""
    st = FileState(S, F)
    first = _fold(st, [fake_page(S, F, 1), closed(S, F)])[0]
    assert first.classification == "public" and first.revision == 1
    changed, again = st.apply(manifest(S, F, None, classification="secret"), 5.0)
    assert changed and again is not None
    assert (again.revision, again.trigger, again.classification) == (2, "reclassified",
                                                                     "secret")
    # A manifest that leaves it classified, or a public one, does not reassemble it.
    assert st.apply(manifest(S, F, None, classification="secret"), 6.0)[1] is None
