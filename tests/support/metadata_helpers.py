"""Archival metadata the tests start from: a complete file record (``GOOD_FILE``) and document
record (``GOOD_DOC``), and ``fill_sheets``, which fills `sohoa metadata template`'s spreadsheet
as a contractor would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

GOOD_FILE: dict[str, Any] = {
    "ma_ho_so": "H01.1.05", "ma_phong": "H01", "muc_luc": "1", "so_ky_hieu_ho_so": "05",
    "tieu_de": "Hồ sơ xây dựng trường tiểu học xã Tân Phú", "thoi_han_bao_quan": "Vĩnh viễn",
    "che_do_su_dung": "Công khai", "ngon_ngu": "Tiếng Việt",
    "thoi_gian_bat_dau": "01/02/2019", "thoi_gian_ket_thuc": "2019-12-31",
    "tong_so_van_ban": 2, "so_luong_to": 3, "so_luong_trang": 3, "muc_do_tin_cay": "Số hóa",
}
GOOD_DOC: dict[str, Any] = {
    "so_thu_tu": 1, "ten_loai": "Quyết định", "so": "15", "ky_hieu": "QĐ-UBND",
    "ngay": "12/03/2019", "co_quan_ban_hanh": "UBND xã Tân Phú",
    "trich_yeu": "Về việc xây dựng trường tiểu học", "ngon_ngu": "Tiếng Việt", "so_trang": 2,
    "che_do_su_dung": "Công khai", "muc_do_tin_cay": "Số hóa",
}


def fill_sheets(path: Path, files: list[dict[str, Any]], docs: list[dict[str, Any]]) -> None:
    """Append ``files`` and ``docs`` (keyed by field, plus ``fonds``, ``file`` and ``doc``) as
    rows of the template's two sheets, each value under its column's label."""
    from openpyxl import load_workbook

    from producers.metadata_xlsx import (
        DOCUMENT_COLUMNS,
        DOCUMENTS_SHEET,
        FILE_COLUMNS,
        FILES_SHEET,
    )
    from sohoa.metadata import DOCUMENT_FIELDS, FILE_FIELDS

    wb = load_workbook(path)
    label = {s.key: s.label for s in (*FILE_FIELDS, *DOCUMENT_FIELDS)}
    label |= {"fonds": "Thư mục phông", "file": "Mã hồ sơ", "doc": "Tệp văn bản"}
    for sheet, cols, rows in ((FILES_SHEET, FILE_COLUMNS, files),
                              (DOCUMENTS_SHEET, DOCUMENT_COLUMNS, docs)):
        ws = wb[sheet]
        for row in rows:
            by_label = {label[k]: v for k, v in row.items()}
            ws.append([by_label.get(c) for c in cols])
    wb.save(path)
