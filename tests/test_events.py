"""The event contract: round-trips, stable ids, and rejections that name the field."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from sohoa import events as ev
from sohoa.events import InvalidEvent, parse_event

SHA = "ab" * 32


def _page(**over):
    data = dict(site_id="xa-tan-phu", fonds="UBND", file_code="HS-001", page_no=3,
                uri="file:///scan/UBND/HS-001/003.tif", sha256=SHA, size_bytes=1234,
                media_type="image/tiff")
    data.update(over)
    return ev.PageScanned.make(**data)


EXAMPLES: list[ev.Event] = [
    _page(),
    ev.PageRemoved(site_id="s1", file_code="F", page_no=1, sha256=SHA),
    ev.FileManifest(site_id="s1", file_code="F", title="Hồ sơ đất đai xã Tân Phú",
                    expected_pages=12, classification=ev.Classification.CONFIDENTIAL,
                    metadata={"ma_ho_so": "F"}),
    ev.FileClosed(site_id="s1", file_code="F", expected_pages=12, pages_seen=12),
    ev.SiteHeartbeat(site_id="s1", agent_version="0.1", outbox_depth=5,
                     oldest_unsent_age_s=1.5, disk_free_bytes=10, roots=["/a"]),
    ev.FileAssembled(site_id="s1", file_code="F", pages=[
        ev.PageRef(page_no=1, uri="file:///a/1.tif", sha256=SHA)], gaps=[2]),
    ev.PageChecked(site_id="s1", file_code="F", page_no=1, sha256=SHA, passed=False,
                   checks=[ev.CheckResult(check="dpi", value=150, threshold=200, passed=False)]),
    ev.OcrCompleted(site_id="s1", file_code="F", output_uri="file:///o.pdf", output_sha256=SHA,
                    pages=[ev.PageText(page_no=1, chars=100, mean_confidence=91.5)]),
    ev.OcrFailed(site_id="s1", file_code="F", reason="timeout", attempts=3),
    ev.FileVerdict(site_id="s1", file_code="F", verdict=ev.Verdict.NEEDS_RESCAN,
                   reasons=[ev.RescanReason(page_no=2, reason="dpi 150 < 200")]),
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


def test_file_events_are_keyed_by_site_and_file_and_heartbeats_by_site() -> None:
    assert _page().key() == "xa-tan-phu/HS-001"
    assert EXAMPLES[4].key() == "s1"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.pop("sha256"), "sha256"),
        (lambda d: d.update(sha256="XYZ"), "sha256"),
        (lambda d: d.update(page_no=-1), "page_no"),
        (lambda d: d.update(site_id="Xã Tân Phú"), "site_id"),
        (lambda d: d.update(size_bytes=0), "size_bytes"),
        (lambda d: d.update(occurred_at="2026-01-01T00:00:00"), "occurred_at"),
        (lambda d: d.update(surprise=1), "surprise"),
        (lambda d: d.update(schema={"name": "PageScanned", "version": 9}), "schema"),
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


def test_ocr_progress_cannot_claim_more_pages_done_than_there_are() -> None:
    with pytest.raises(InvalidEvent, match="pages_done"):
        parse_event(ev.OcrProgress(site_id="s1", file_code="F", pages_done=2,
                                   pages_total=2).to_json().replace(b'"pages_done":2',
                                                                    b'"pages_done":3'))
