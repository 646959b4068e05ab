"""Archival metadata: the typed records, their Vietnamese checks, the manifest and the
spreadsheet contractors fill in, and the dpi floor that follows a document's type."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from producers.layout import Layout
from producers.manifest import manifest_event
from producers.metadata_xlsx import (
    DOCUMENTS_SHEET,
    FILES_SHEET,
    MetadataImportError,
    apply_import,
    plan_import,
    write_template,
)
from sohoa.config import Settings
from sohoa.events import FileManifest, parse_event
from sohoa.metadata import (
    DocumentRecord,
    FileRecord,
    is_large_format,
    record_problems,
    signed_copy_name,
)
from streams.assembly import FileState
from tests.support.metadata_helpers import GOOD_DOC, GOOD_FILE, fill_sheets
from tests.support.streams_helpers import closed, fake_page


def test_a_record_is_typed_and_round_trips_on_the_wire() -> None:
    r = FileRecord.model_validate({**GOOD_FILE, "thoi_han_bao_quan": "vĩnh viễn",
                                   "che_do_su_dung": "công khai", "so_luong_to": "3"})
    assert r.thoi_han_bao_quan == "Vĩnh viễn" and r.che_do_su_dung == "Công khai"
    assert r.thoi_gian_bat_dau == date(2019, 2, 1) and r.so_luong_to == 3
    assert r.missing() == []
    assert FileRecord.model_validate_json(r.model_dump_json()) == r
    assert FileRecord().missing()[:2] == ["Mã hồ sơ", "Mã phông"]
    assert len(FileRecord.model_fields) == 18


def test_each_bad_field_gets_a_vietnamese_message_naming_field_and_rule() -> None:
    bad = {**GOOD_FILE, "tieu_de": "x" * 1001, "so_luong_to": "ba", "ma_phong": "H/01",
           "thoi_gian_bat_dau": "31/02/2019", "che_do_su_dung": "mở",
           "thoi_han_bao_quan": "mãi mãi", "muc_luc": "1a", "khac": "?"}
    problems = record_problems(FileRecord, bad)
    assert "khac: không phải trường siêu dữ liệu đã định nghĩa" in problems
    assert "Tiêu đề hồ sơ: tối đa 1.000 ký tự (có 1.001)" in problems
    assert "Số lượng tờ: phải là số nguyên từ 1 đến 9.999 (nhận được 'ba')" in problems
    assert "Mã phông: không được chứa '/', '\\' hay ký tự điều khiển" in problems
    assert "Thời gian bắt đầu: ngày không có thật '31/02/2019'" in problems
    assert ("Chế độ sử dụng: phải là một trong: Công khai, Sử dụng có điều kiện, Mật "
            "(nhận được 'mở')") in problems
    assert any(p.startswith("Thời hạn bảo quản: phải là 'Vĩnh viễn' hoặc số năm")
               for p in problems)
    assert "Mục lục số hoặc năm hình thành hồ sơ: chỉ gồm chữ số (nhận được '1a')" in problems


def test_rules_between_fields() -> None:
    problems = record_problems(FileRecord, {
        **GOOD_FILE, "ma_ho_so": "H01.2.05", "thoi_gian_ket_thuc": "01/01/2019",
        "so_luong_trang": 7})
    assert ("Mã hồ sơ: phải ghép từ Mã phông, Mục lục số và Số và ký hiệu hồ sơ, cách nhau bởi "
            "dấu chấm ('H01.1.05', nhận được 'H01.2.05')") in problems
    assert ("Thời gian kết thúc: không được trước Thời gian bắt đầu (01/01/2019 < 01/02/2019)"
            in problems)
    assert "Số lượng trang: phải từ Số lượng tờ đến gấp đôi (3–6, nhận được 7)" in problems
    assert record_problems(DocumentRecord, {**GOOD_DOC, "ngay": "01/01/2999"}) == [
        "Ngày, tháng, năm văn bản: không được sau ngày hôm nay (01/01/2999)"]


def test_a_version_2_manifest_without_records_still_reads() -> None:
    old = {"schema": {"name": "FileManifest", "version": 2}, "site_id": "xa-tan-phu",
           "fonds": "UBND", "file_code": "HS-01", "title": "Hồ sơ", "expected_pages": 3,
           "documents": [{"name": "001.pdf", "pages": 2}], "metadata": {"so_to": "4"}}
    ev = parse_event(json.dumps(old).encode())
    assert isinstance(ev, FileManifest) and ev.record is None
    assert ev.documents[0].record is None


def _hoso(record: dict | None = None, docs: list | None = None, **extra) -> bytes:
    data = {"expected_pages": 3, **extra}
    if record is not None:
        data["record"] = record
    if docs is not None:
        data["documents"] = docs
    return json.dumps(data, ensure_ascii=False).encode()


def test_hoso_json_records_are_checked_and_every_fault_named() -> None:
    ev = manifest_event(_hoso(GOOD_FILE, [{"name": "001.pdf", "record": GOOD_DOC}]),
                        "xa-tan-phu", "UBND", "H01.1.05")
    assert ev.record is not None and ev.record.tieu_de is not None
    assert ev.record.tieu_de.startswith("Hồ sơ xây dựng")
    first = ev.documents[0].record
    assert first is not None and first.ten_loai == "Quyết định"
    with pytest.raises(ValueError) as err:
        manifest_event(_hoso({**GOOD_FILE, "so_luong_to": 0},
                             [{"name": "001.pdf", "record": {**GOOD_DOC, "so_trang": "x"}}]),
                       "xa-tan-phu", "UBND", "H01.1.05")
    msg = str(err.value)
    assert "hồ sơ — Số lượng tờ: phải là số nguyên từ 1 đến 9.999 (nhận được '0')" in msg
    assert ("văn bản '001.pdf' — Số lượng trang của văn bản: phải là số nguyên từ 1 đến "
            "9.999 (nhận được 'x')") in msg


def test_classified_file_keeps_its_records_at_the_site_but_the_type_for_qc() -> None:
    ev = manifest_event(_hoso(GOOD_FILE, [
        {"name": "001.pdf", "record": {**GOOD_DOC, "ten_loai": "Bản đồ"}},
        {"name": "002.pdf", "record": GOOD_DOC}], classification="secret", title="Mật"),
        "xa-tan-phu", "UBND", "H01.1.05")
    assert ev.record is None and ev.title is None
    assert [d.record and d.record.model_dump(exclude_none=True) for d in ev.documents] == [
        {"ten_loai": "Bản đồ"}, {"ten_loai": "Quyết định"}]
    wire = ev.to_json().decode()
    for secret in ("trường tiểu học", "UBND xã Tân Phú", "QĐ-UBND", "Tân Phú"):
        assert secret not in wire


def test_large_format_types_and_signed_copy_names() -> None:
    types = Settings().qc.large_format_types
    assert is_large_format("BẢN ĐỒ địa chính xã", types)
    assert is_large_format("Ban ve thiet ke", types)
    assert not is_large_format("Quyết định", types) and not is_large_format(None, types)
    assert signed_copy_name("H01.1.05", 3) == "H01.1.05.003.pdf"
    assert signed_copy_name("H01.1.05", None) == "H01.1.05.pdf"


def test_assembly_passes_each_documents_type_to_the_ocr_app() -> None:
    from streams.app_ocr import FileProcessor

    st = FileState("xa-tan-phu", "H01.1.05", fonds="UBND")
    doc = {**GOOD_DOC, "ten_loai": "Bản đồ địa chính"}
    st.apply(FileManifest(site_id="xa-tan-phu", fonds="UBND", file_code="H01.1.05",
                          documents=[{"name": "001.tif", "record": doc},
                                     {"name": "002.tif"}]), 1.0)
    st = FileState.from_dict(json.loads(json.dumps(st.to_dict())))  # through the changelog
    outs = [st.apply(ev, 2.0)[1] for ev in (fake_page("xa-tan-phu", "H01.1.05", 1),
                                            fake_page("xa-tan-phu", "H01.1.05", 2),
                                            closed("xa-tan-phu", "H01.1.05"))]
    fa = next(o for o in outs if o is not None)
    assert fa.document_types == {"001.tif": "Bản đồ địa chính"}
    proc = FileProcessor(Settings(), publish_event=None)
    try:
        assert proc.qc_config_for(fa, "001.tif").min_dpi == 300
        assert proc.qc_config_for(fa, "002.tif").min_dpi == 200
    finally:
        proc.close()


# --- the spreadsheet -------------------------------------------------------------------------

def _folder(root: Path, fonds: str, code: str, docs: list[str]) -> Path:
    d = root / fonds / code
    d.mkdir(parents=True)
    for name in docs:
        (d / name).write_bytes(b"%PDF-1.4 placeholder")
    return d


def _sheet_file(**kw) -> dict:
    return {"fonds": "UBND", **GOOD_FILE, "thoi_gian_bat_dau": date(2019, 2, 1), **kw}


def _sheet_doc(n: int, name: str, **kw) -> dict:
    return {"fonds": "UBND", "file": GOOD_FILE["ma_ho_so"], "doc": name,
            **GOOD_DOC, "so_thu_tu": n, "ngay": date(2019, 3, n), **kw}


def test_template_filled_and_imported_into_hoso_json(tmp_path: Path) -> None:
    root = tmp_path / "hot"
    folder = _folder(root, "UBND", "H01.1.05", ["001.pdf", "002.pdf"])
    (folder / "hoso.json").write_text(json.dumps(
        {"expected_pages": 3, "documents": [{"name": "002.pdf", "language": "vie+fra"}]}),
        encoding="utf-8")
    xlsx = tmp_path / "muc-luc.xlsx"
    write_template(xlsx)
    fill_sheets(xlsx, [_sheet_file()],
                [_sheet_doc(2, "002.pdf", so_trang=1), _sheet_doc(1, "001.pdf", so_trang=2)])
    plan = plan_import(xlsx, root, Layout("{fonds}/{file}/{page}"), "xa-tan-phu")
    assert (plan.files, plan.documents) == (1, 2)
    apply_import(plan)
    data = json.loads((folder / "hoso.json").read_text(encoding="utf-8"))
    assert data["expected_pages"] == 3
    assert [d["name"] for d in data["documents"]] == ["001.pdf", "002.pdf"]  # by số thứ tự
    assert data["documents"][1]["language"] == "vie+fra"                    # kept
    assert data["record"]["thoi_gian_bat_dau"] == "2019-02-01"
    ev = manifest_event((folder / "hoso.json").read_bytes(), "xa-tan-phu", "UBND", "H01.1.05")
    first = ev.documents[0].record
    assert ev.record is not None and ev.record.missing() == []
    assert first is not None and first.so_trang == 2
    assert not list(folder.glob(".*.tmp"))


def test_every_bad_cell_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    root = tmp_path / "hot"
    good = _folder(root, "UBND", "H01.1.05", ["001.pdf", "002.pdf"])
    _folder(root, "UBND", "H01.1.06", ["001.pdf"])
    xlsx = tmp_path / "muc-luc.xlsx"
    write_template(xlsx)
    other = {**GOOD_FILE, "ma_ho_so": "H01.1.06", "so_ky_hieu_ho_so": "06",
             "tong_so_van_ban": 1, "so_luong_to": 1, "so_luong_trang": 1}
    fill_sheets(xlsx, [_sheet_file(), {"fonds": "UBND", **other, "che_do_su_dung": "Bí mật",
                                       "tieu_de": None}],
                [_sheet_doc(1, "001.pdf", so_trang=2), _sheet_doc(2, "002.pdf", so_trang=1),
                 {**_sheet_doc(1, "009.pdf", so_trang="một"), "file": "H01.1.06"}])
    with pytest.raises(MetadataImportError) as err:
        plan_import(xlsx, root, Layout("{fonds}/{file}/{page}"), "xa-tan-phu")
    errors = err.value.errors
    assert f"{FILES_SHEET} dòng 3, cột F: Tiêu đề hồ sơ: bắt buộc, không được để trống" in errors
    assert any(e.startswith(f"{FILES_SHEET} dòng 3, cột H: Chế độ sử dụng: phải là một trong")
               for e in errors)
    assert (f"{DOCUMENTS_SHEET} dòng 4, cột L: Số lượng trang của văn bản: phải là số nguyên "
            "từ 1 đến 9.999 (nhận được 'một')") in errors
    assert any("'009.pdf' không có trong thư mục" in e for e in errors)
    assert not (good / "hoso.json").exists()   # the good file is not written either


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sohoa.cli import main

    root = tmp_path / "hot"
    folder = _folder(root, "UBND", "H01.1.05", ["001.pdf", "002.pdf"])
    xlsx = tmp_path / "m.xlsx"
    runner = CliRunner()
    assert runner.invoke(main, ["metadata", "template", str(xlsx)]).exit_code == 0
    fill_sheets(xlsx, [_sheet_file()], [_sheet_doc(1, "001.pdf", so_trang=2),
                                        _sheet_doc(2, "002.pdf", so_trang=1)])
    res = runner.invoke(main, ["metadata", "import", str(xlsx), "--root", str(root),
                               "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "Hợp lệ: 1 hồ sơ, 2 văn bản" in res.output
    assert not (folder / "hoso.json").exists()
    res = runner.invoke(main, ["metadata", "import", str(xlsx), "--root", str(root)])
    assert res.exit_code == 0 and (folder / "hoso.json").exists()


@pytest.mark.integration
def test_the_progress_store_keeps_the_record_and_each_documents(stack) -> None:
    import psycopg

    from tests.support.progress_store import apply_events, fresh_db

    dsn = fresh_db(stack, "meta")
    ev = manifest_event(_hoso(GOOD_FILE, [{"name": "001.pdf", "record": GOOD_DOC}]),
                        "xa-tan-phu", "UBND", "H01.1.05")
    with psycopg.connect(dsn) as conn:
        apply_events(conn, [ev])
        row = conn.execute(
            "SELECT record, manifest_documents FROM files WHERE file_code = 'H01.1.05'"
        ).fetchone()
        assert row is not None
        record, docs = row
    assert FileRecord.model_validate(record) == ev.record
    assert DocumentRecord.model_validate(docs[0]["record"]) == ev.documents[0].record
