"""The event contract: round-trips, stable ids, and rejections that name the field."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from sohoa import events as ev
from sohoa.events import InvalidEvent, parse_event
from tests.support.typed_events import parsed

SHA = "ab" * 32


def _page(**over):
    data = dict(site_id="xa-tan-phu", fonds="UBND", file_code="HS-001", document="003.tif",
                number=3, uri="file:///scan/UBND/HS-001/003.tif", sha256=SHA, size_bytes=1234,
                media_type="image/tiff")
    data.update(over)
    return ev.PageScanned.make(**data)


EXAMPLES: list[ev.Event] = [
    _page(),
    ev.PageRemoved(site_id="s1", file_code="F", document="QD-15.pdf", page_index=4,
                   sha256=SHA),
    ev.FileManifest(site_id="s1", file_code="F", title="Hồ sơ đất đai xã Tân Phú",
                    expected_pages=12, classification=ev.Classification.CONFIDENTIAL,
                    documents=[ev.ManifestDocument(name="QD-15.pdf", pages=10),
                               ev.ManifestDocument(name="bia.jpg", language="vie+fra")],
                    metadata={"ma_ho_so": "F"}),
    ev.FileClosed(site_id="s1", file_code="F", expected_pages=12, pages_seen=12),
    ev.SiteHeartbeat(site_id="s1", agent_version="0.1", outbox_depth=5,
                     oldest_unsent_age_s=1.5, disk_free_bytes=10, roots=["/a"]),
    ev.FileAssembled(site_id="s1", fonds="A", file_code="F", pages=[
        ev.PageRef(document="1.tif", number=1, uri="file:///a/1.tif", document_sha256=SHA,
                   sha256=SHA),
        ev.PageRef(document="QD.pdf", page_index=2, uri="file:///a/QD.pdf",
                   document_sha256=SHA, sha256="cd" * 32)], gaps=[2],
        duplicate_content=[[ev.PageKey(document="1.tif"), ev.PageKey(document="QD.pdf",
                                                                     page_index=2)]],
        missing_pages=[ev.PageKey(document="QD.pdf", page_index=1)],
        missing_documents=["bia.jpg"], languages={"QD.pdf": "vie"}),
    ev.PageChecked(site_id="s1", file_code="F", document="1.tif", sha256=SHA, passed=False,
                   checks=[ev.CheckResult(check="dpi", value=150, threshold=200, passed=False)],
                   width_mm=210.0, height_mm=297.0),
    ev.OcrCompleted(site_id="s1", file_code="F", output_uri="file:///o.pdf", output_sha256=SHA,
                    pages=[ev.PageText(document="1.tif", chars=100, mean_confidence=91.5)]),
    ev.OcrFailed(site_id="s1", file_code="F", reason="timeout", attempts=3),
    ev.FileVerdict(site_id="s1", file_code="F", verdict=ev.Verdict.NEEDS_RESCAN,
                   reasons=[ev.RescanReason(document="2.tif", position=2,
                                            reason="dpi 150 < 200")]),
    ev.DeadLetter(source="consumer", reason="field 'x': bad", payload="{}"),
    ev.OcrProgress(site_id="s1", file_code="F", revision=2, pages_done=3, pages_total=50),
]


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: e.NAME)
def test_round_trip_through_json(event: ev.Event) -> None:
    wire = event.to_json()
    data = json.loads(wire)
    assert data["schema"] == {"name": event.NAME, "version": event.VERSION}
    assert data["occurred_at"].endswith("Z")
    back = parse_event(wire)
    assert type(back) is type(event)
    assert back == event


def test_every_event_type_has_an_example() -> None:
    assert {type(e) for e in EXAMPLES} == set(ev.EVENT_TYPES)


def test_page_event_id_is_stable_for_the_same_fact_and_differs_for_a_rescan() -> None:
    assert _page().event_id == _page().event_id
    assert _page(revision=2).event_id != _page().event_id
    assert _page(sha256="cd" * 32).event_id != _page().event_id


def test_file_events_are_keyed_by_site_fonds_and_file_and_heartbeats_by_site() -> None:
    assert _page().key() == "xa-tan-phu/UBND/HS-001"
    assert _page(fonds="").key() == "xa-tan-phu//HS-001"
    assert EXAMPLES[4].key() == "s1"


def test_the_same_file_code_in_two_fonds_is_two_files() -> None:
    a, b = _page(fonds="FONDS-A"), _page(fonds="FONDS-B")
    assert a.key() != b.key()
    assert a.event_id != b.event_id


def test_names_are_nfc_in_every_key_and_id() -> None:
    import unicodedata

    def nfd(s: str) -> str:
        return unicodedata.normalize("NFD", s)

    composed = _page(fonds="Phông UBND xã", file_code="Hồ sơ 01", document="Trang 3.tif")
    decomposed = _page(fonds=nfd("Phông UBND xã"), file_code=nfd("Hồ sơ 01"),
                       document=nfd("Trang 3.tif"))
    assert decomposed.fonds == composed.fonds and decomposed.document == composed.document
    assert decomposed.key() == composed.key() and decomposed.event_id == composed.event_id
    # ... and a reader normalises what another producer sends decomposed.
    raw = composed.to_json().replace("Hồ sơ 01".encode(), nfd("Hồ sơ 01").encode())
    assert raw != composed.to_json()
    assert parsed(raw, ev.PageScanned).file_code == "Hồ sơ 01"


@pytest.mark.parametrize("field", ["fonds", "file_code", "document"])
@pytest.mark.parametrize("bad", ["a/b", "a\x00b", "a\nb"])
def test_names_with_a_separator_or_control_character_are_refused(field: str, bad: str) -> None:
    data = _page().to_dict()
    data[field] = bad
    with pytest.raises(InvalidEvent) as exc:
        parse_event(json.dumps(data).encode())
    assert f"'{field}'" in exc.value.reason


def test_a_page_index_beyond_its_document_is_refused() -> None:
    data = _page().to_dict()
    data.update(page_index=3, document_pages=2)
    with pytest.raises(InvalidEvent) as exc:
        parse_event(json.dumps(data).encode())
    assert "page_index 3 > document_pages 2" in exc.value.reason


def test_each_page_of_a_document_is_its_own_fact() -> None:
    pages = [_page(document="QD-15.pdf", number=None, document_pages=30, page_index=i,
                   sha256=f"{i:064x}", document_sha256="ef" * 32) for i in range(1, 31)]
    assert len({p.event_id for p in pages}) == 30
    assert {p.key() for p in pages} == {"xa-tan-phu/UBND/HS-001"}
    # The same page content in new document bytes (another page of it rescanned) is a new fact.
    assert _page(document_sha256="ef" * 32).event_id != _page().event_id


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.pop("sha256"), "sha256"),
        (lambda d: d.update(sha256="XYZ"), "sha256"),
        (lambda d: d.update(page_index=0), "page_index"),
        (lambda d: d.update(number=-1), "number"),
        (lambda d: d.update(site_id="Xã Tân Phú"), "site_id"),
        (lambda d: d.update(size_bytes=0), "size_bytes"),
        (lambda d: d.update(occurred_at="2026-01-01T00:00:00"), "occurred_at"),
        (lambda d: d.update(surprise=1), "surprise"),
        (lambda d: d.update(schema={"name": "PageScanned", "version": 9}), "schema"),
        (lambda d: d.update(document_sha256="XYZ"), "document_sha256"),
        (lambda d: d.update(schema={"name": "Nope", "version": 1}), "schema.name"),
        (lambda d: d.pop("schema"), "schema"),
    ],
)
@pytest.mark.parametrize("compact", [False, True], ids=["spaced", "as-to_json-writes-it"])
def test_rejection_names_the_field(mutate, field: str, compact: bool) -> None:
    data = _page().to_dict()
    mutate(data)
    raw = json.dumps(data, separators=(",", ":") if compact else None).encode()
    with pytest.raises(InvalidEvent) as exc:
        parse_event(raw)
    assert f"'{field}" in exc.value.reason


def test_fields_in_any_order_parse_the_same() -> None:
    page = _page()
    data = page.to_dict()
    reordered = json.dumps(dict(reversed(list(data.items())))).encode()
    assert parse_event(reordered) == parse_event(page.to_json()) == page


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1,2]", b"\xff\xfe", b"null"])
def test_garbage_is_rejected_with_a_reason(raw: bytes) -> None:
    with pytest.raises(InvalidEvent) as exc:
        parse_event(raw)
    assert exc.value.reason
    assert exc.value.payload == raw


def test_naive_timestamps_are_refused_and_aware_ones_normalised_to_utc() -> None:
    from datetime import timedelta, timezone

    ict = timezone(timedelta(hours=7))
    e = ev.FileClosed(site_id="s", file_code="F", occurred_at=datetime(2026, 6, 30, 17, tzinfo=ict))
    assert e.occurred_at == datetime(2026, 6, 30, 10, tzinfo=UTC)


def test_classified_manifest_may_carry_no_title() -> None:
    m = ev.FileManifest(site_id="s", file_code="F", classification="secret")
    assert m.title is None and m.classification.is_classified


def test_schema_export_writes_one_valid_schema_per_event(tmp_path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    paths = ev.export_schemas(tmp_path)
    assert len(paths) == len(ev.EVENT_TYPES)
    by_title = {}
    for p in paths:
        schema = json.loads(p.read_text(encoding="utf-8"))
        jsonschema.Draft202012Validator.check_schema(schema)
        by_title[schema["title"]] = schema
    # The exported schema accepts what we send and refuses what parse_event refuses.
    good = _page().to_dict()
    jsonschema.validate(good, by_title["PageScanned"])
    bad = dict(good, sha256="nope")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, by_title["PageScanned"])


V1_EVENTS: dict[str, dict[str, Any]] = {
    "PageScanned": {"page_no": 3, "uri": "file:///scan/UBND/HS-001/003.tif", "sha256": SHA,
                    "size_bytes": 10, "media_type": "image/tiff", "revision": 2,
                    "path": "UBND/HS-001/003.tif"},
    "PageRemoved": {"page_no": 3, "sha256": SHA, "path": "UBND/HS-001/003.tif"},
    "FileManifest": {"title": "T", "expected_pages": 3, "metadata": {"k": "v"}},
    "FileAssembled": {"revision": 2, "pages": [
        {"page_no": 1, "uri": "file:///s/UBND/HS-001/001.tif", "sha256": SHA},
        {"page_no": 3, "uri": "file:///s/UBND/HS-001/003.tif", "sha256": SHA}],
        "gaps": [2], "duplicate_content": [[1, 3]],
        "duplicate_in_site": [{"page_no": 1, "other_file_code": "X", "other_page_no": 9}]},
    "PageChecked": {"page_no": 3, "sha256": SHA, "checks": [
        {"check": "dpi", "value": 150, "threshold": 200, "passed": False}], "passed": False},
    "OcrCompleted": {"output_uri": "file:///o.pdf", "output_sha256": SHA,
                     "pages": [{"page_no": 1, "chars": 5}]},
    "FileVerdict": {"verdict": "needs_rescan", "reasons": [{"page_no": 2,
                                                            "reason": "missing_page"}]},
}


@pytest.mark.parametrize("name", sorted(V1_EVENTS))
def test_version_1_events_are_still_read_as_their_version_2(name: str) -> None:
    data = {"schema": {"name": name, "version": 1}, "event_id": "0123456789-v1",
            "occurred_at": "2026-05-04T03:02:01Z", "site_id": "xa-tan-phu", "fonds": "UBND",
            "file_code": "HS-001", **V1_EVENTS[name]}
    e = parse_event(json.dumps(data).encode())
    kind = (e.NAME, e.VERSION)
    assert kind == (name, 2)
    assert e.event_id == "0123456789-v1"  # the fact keeps its id: a replay stays a replay
    assert e.key() == "xa-tan-phu/UBND/HS-001"
    if isinstance(e, ev.PageScanned):
        assert (e.document, e.page_index, e.number, e.document_pages, e.revision) == (
            "003.tif", 1, 3, 1, 2)
        assert e.sha256 == e.document_sha256 == SHA
    elif isinstance(e, ev.PageRemoved):
        assert (e.document, e.page_index) == ("003.tif", 1)
    elif isinstance(e, ev.FileAssembled):
        assert [(p.document, p.number) for p in e.pages] == [("001.tif", 1), ("003.tif", 3)]
        assert [[k.document for k in g] for g in e.duplicate_content] == [["001.tif",
                                                                           "003.tif"]]
        assert e.duplicate_in_site[0].document == "001.tif"
    elif isinstance(e, ev.PageChecked):
        # Named by number only: the consumer finds the stored page with that number.
        assert e.document == ev.legacy_document(3)
    elif isinstance(e, ev.FileVerdict):
        assert [(r.number, r.document) for r in e.reasons] == [(2, None)]


def test_a_version_1_event_that_breaks_its_own_contract_names_the_field() -> None:
    data = {"schema": {"name": "PageScanned", "version": 1}, "site_id": "s",
            "file_code": "F", **dict(V1_EVENTS["PageScanned"], sha256="nope")}
    with pytest.raises(InvalidEvent) as exc:
        parse_event(json.dumps(data).encode())
    assert "PageScanned v1" in exc.value.reason and "'sha256'" in exc.value.reason


def test_ocr_progress_cannot_claim_more_pages_done_than_there_are() -> None:
    with pytest.raises(InvalidEvent, match="pages_done"):
        parse_event(ev.OcrProgress(site_id="s1", file_code="F", pages_done=2,
                                   pages_total=2).to_json().replace(b'"pages_done":2',
                                                                    b'"pages_done":3'))


def test_a_version_1_removal_without_a_path_is_named_by_number() -> None:
    data = {"schema": {"name": "PageRemoved", "version": 1}, "site_id": "s", "file_code": "F",
            "page_no": 7, "sha256": SHA}
    e = parsed(json.dumps(data).encode(), ev.PageRemoved)
    assert (e.document, e.page_index) == (ev.legacy_document(7), 1)


def test_a_version_1_uri_urllib_cannot_split_is_an_invalid_event() -> None:
    data = {"schema": {"name": "FileAssembled", "version": 1}, "site_id": "s",
            "file_code": "F", "pages": [{"page_no": 1, "uri": "file://[x/y.tif", "sha256": SHA}]}
    with pytest.raises(InvalidEvent) as exc:
        parse_event(json.dumps(data).encode())
    assert exc.value.reason.startswith("FileAssembled v1:")
