"""The consumer's fast page-event decoder against the contract (pydantic): whatever it accepts,
pydantic accepts with the same staged values; whatever pydantic rejects, it rejects."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from pydantic import BaseModel

from consumers.apply import Record, StageRow, stage_rows
from consumers.apply.staging import row_of_event, row_of_page
from consumers.fast_events import FastPageChecked, FastPageScanned, decode_page_event
from consumers.synth import SynthConfig, generate
from sohoa.events import InvalidEvent, PageChecked, PageScanned, parse_event
from tests.support.typed_events import parsed

SHA = "a" * 64
DOC_SHA = "b" * 64


def _scanned() -> dict[str, Any]:
    return PageScanned.make(site_id="xa-tan-phu", fonds="UBND", file_code="HS-01",
                            document="QĐ-15.pdf", page_index=3, document_pages=4,
                            uri="file:///x/QĐ-15.pdf", sha256=SHA, document_sha256=DOC_SHA,
                            size_bytes=1200, media_type="application/pdf",
                            path="UBND/HS-01/QĐ-15.pdf").to_dict()


def _checked() -> dict[str, Any]:
    return PageChecked(site_id="xa-tan-phu", file_code="HS-01", document="003.tif", sha256=SHA,
                       revision=2, passed=False, width_mm=210, height_mm=297.5, checks=[
                           {"check": "dpi", "value": 150.0, "threshold": 200.0, "passed": False},
                           {"check": "blank", "value": "no", "passed": True},
                           {"check": "skew", "value": 3, "threshold": None, "passed": False},
                       ]).to_dict()


def _raw(payload: dict[str, Any]) -> bytes:
    # Compact, schema first: as our producers write it, so the fast path is tried at all.
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def _typed(row: StageRow) -> list[tuple[str, type, Any]]:
    """A staged row with each value's type (True == 1 in Python; here they differ) and the
    checks document as the JSON value it stands for (the fast path keeps it as sent)."""
    return [(name, type(v), json.loads(v) if name == "doc" and v is not None else v)
            for name, v in row._asdict().items()]


def _judge(raw: bytes) -> tuple[list | None, list | None]:
    """(fast row, pydantic row), each None where that side rejects ``raw``."""
    rec = Record("t", 0, 7, raw)
    page = decode_page_event(raw)
    fast = _typed(row_of_page(0, page, rec)) if page is not None else None
    try:
        slow = _typed(row_of_event(0, parse_event(raw), rec))
    except InvalidEvent:
        slow = None
    return fast, slow


def test_every_generated_page_event_decodes_fast_to_the_same_row() -> None:
    events = generate(SynthConfig(sites=2, files_per_site=3, pages_per_file=4, days=5, seed=3))
    pages = [e for e in events if e.NAME in ("PageScanned", "PageChecked")]
    assert len(pages) > 20
    for e in pages:
        fast, slow = _judge(e.to_json())
        assert fast is not None, e.to_json()
        assert fast == slow


# Values tried in every field, then values aimed at one field. Each case is judged both ways.
_ANY: list[Any] = [None, "", "5", "x\n", 0, -1, 1, 1.0, 1.5, True, 2**63, 10**30, [], {}, "a" * 65,
        "a" * 201, "A", "\u0110à Nẵng", " a"]
_FIELD: dict[str, list[Any]] = {
    "occurred_at": ["2026-03-02T02:18:56", "2026-03-02T02:18:56.1234567Z",
                    "2026-03-02T02:18:56.123456Z", "2026-03-02T02:18:56+07:00",
                    "2026-03-02T02:18:56+0700", "2026-03-02 02:18:56Z", "2026-03-02t02:18:56z",
                    "2026-03-02T02:18Z", "2026-03-02T02:18:56,5Z", "2026-02-30T00:00:00Z",
                    1700000000, "2026-03-02T02:18:56.Z", "2026-03-02T02:18:56-00:00"],
    "site_id": ["xa-tan-phu\n", "Xa", "-xa", "a" * 63, "a" * 64, "xã"],
    "sha256": [SHA + "\n", SHA.upper(), SHA[:-1], "g" * 64],
    "event_id": ["12345678", "1234567", "x" * 64, "x" * 65],
    "number": [100_000, 100_001, "3", 0],
    "page_index": [100_000, 100_001, "3", 4, 5],
    "document_pages": [2, 3, 100_001, "4"],
    "revision": [0, 1, 2, "2"],
    "size_bytes": [0, 1, 2**62],
    "document": ["a/b.tif", "a\x00b", "a\x1fb", "x\n", "b" * 255, "b" * 256, "Qu\u0301y.tif",
                 "Qú.tif", "\u1ea0.pdf", "A\u0323.pdf"],
    "fonds": ["P/Q", "Phông\u0300", "Phô\u0300ng", "\x7f"],
    "file_code": ["HS\u0301", "HS/1", "HS\t1"],
    "width_mm": [0, 0.1, 100_000, 100_001, "210", -1, True],
    "height_mm": [0, 297, 1e6, None],
    "schema": [{"name": "PageScanned", "version": 1}, {"name": "PageScanned", "version": "2"},
               {"name": "PageChecked", "version": 2}, {"name": "PageScanned"},
               {"name": "PageScanned", "version": 2, "x": 1}],
    "checks": [[], [{"check": "dpi", "value": 1, "passed": True}],
               [{"check": "dpi", "value": True, "passed": True}],
               [{"check": "dpi", "value": None, "passed": "true"}],
               [{"check": "dpi", "passed": True}],
               [{"check": "dpi", "value": 1, "passed": True, "extra": 1}],
               [{"check": 3, "value": 1, "passed": True}],
               {"check": "dpi", "value": 1, "passed": True}],
    "passed": ["true", 1, 0, None],
}


def _cases(base: dict[str, Any]) -> list[tuple[str, bytes]]:
    name = base["schema"]["name"]
    out = [(f"{name} as is", _raw(base)), (f"{name} extra field", _raw({**base, "extra": 1}))]
    for field in base:
        if field != "schema":
            out.append((f"{name} without {field}", _raw({k: v for k, v in base.items()
                                                         if k != field})))
        for value in _ANY + _FIELD.get(field, []):
            out.append((f"{name} {field}={value!r}", _raw({**base, field: value})))
    raw = _raw(base)
    # The same key twice: both decoders must keep the same one.
    out.append((f"{name} revision twice", raw.replace(b'"revision":', b'"revision":3,"revision":')))
    out.append((f"{name} lone surrogate", raw.replace(b'"HS-01"', b'"HS-\\ud800"')))
    out.append((f"{name} not schema first", _raw({"site_id": base["site_id"], **base})))
    out.append((f"{name} truncated", raw[:-5]))
    return out


@pytest.mark.parametrize("base", [_scanned(), _checked()], ids=["PageScanned", "PageChecked"])
def test_the_fast_decoder_accepts_nothing_the_contract_rejects_and_agrees_on_values(
        base: dict[str, Any]) -> None:
    accepted = rejected = deferred = 0
    for label, raw in _cases(base):
        fast, slow = _judge(raw)
        if fast is not None:
            assert slow is not None, f"{label}: fast accepted what pydantic rejects"
            assert fast == slow, label
            accepted += 1
        elif slow is None:
            rejected += 1
        else:
            deferred += 1  # stricter here: pydantic decides (and accepts)
    # The battery reaches all three outcomes, so the assertions above are exercised.
    assert accepted >= 10 and rejected >= 50 and deferred >= 5, (accepted, rejected, deferred)


def test_seven_fractional_digits_go_to_pydantic_which_truncates() -> None:
    raw = _raw({**_scanned(), "occurred_at": "2026-03-02T02:18:56.1234567Z"})
    assert decode_page_event(raw) is None
    assert parse_event(raw).occurred_at.microsecond == 123456


def test_names_not_in_nfc_go_to_pydantic_which_normalises_them() -> None:
    import unicodedata

    nfd = {k: unicodedata.normalize("NFD", v) for k, v in
           (("fonds", "Phông UBND"), ("file_code", "Hồ sơ 1"), ("document", "Quyết định.pdf"))}
    raw = _raw({**_scanned(), **nfd})
    assert decode_page_event(raw) is None
    ev = parsed(raw, PageScanned)
    assert (ev.fonds, ev.file_code, ev.document) == ("Phông UBND", "Hồ sơ 1", "Quyết định.pdf")
    (row,), _ = stage_rows([Record("t", 0, 0, raw)])
    assert row.document == "Quyết định.pdf"


def test_a_batch_mixing_fast_deferred_and_bad_records_stages_each_once() -> None:
    good = _raw(_scanned())
    lax = _raw({**_checked(), "page_index": "3"})  # pydantic takes a numeric string; fast not
    bad = _raw({**_scanned(), "sha256": "zz"})
    rows, result = stage_rows([Record("t", 0, i, v) for i, v in enumerate([good, lax, bad, good])])
    assert [(r.etype, r.document, r.page_index) for r in rows] == [
        ("PageScanned", "QĐ-15.pdf", 3), ("PageChecked", "003.tif", 3)]
    assert result.duplicates == 1
    assert [d.offset for d in result.dead_letters] == [2]
    assert "sha256" in result.dead_letters[0].reason


@pytest.mark.parametrize(("fast", "model"), [(FastPageScanned, PageScanned),
                                              (FastPageChecked, PageChecked)])
def test_the_fast_structs_mirror_the_models_fields(fast: type, model: type[BaseModel]) -> None:
    """A field added to the contract must be added here (else its events would be rejected
    by the fast decoder, and slow, or worse, mirrored wrongly): same names, a default only
    where the model has the same one."""
    ours = {f.encode_name: f for f in msgspec.structs.fields(fast)}
    theirs = {(f.alias or name): f for name, f in model.model_fields.items()}
    assert ours.keys() == theirs.keys()
    for name, f in ours.items():
        if f.required:
            continue
        assert not theirs[name].is_required() and theirs[name].default == f.default, name


def test_the_fast_checks_follow_the_contracts_patterns() -> None:
    """`plain` checks digests and names by hand (one pass, not a pattern per field): it must
    change when the contract's patterns do."""
    from consumers.fast_events import CHECKED_PATTERNS
    from sohoa import events

    assert {k: getattr(events, k) for k in CHECKED_PATTERNS} == CHECKED_PATTERNS
