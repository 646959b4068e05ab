"""The spreadsheet contractors fill in: mục lục hồ sơ (one row per file) and danh mục văn bản
(one row per document), written as a template and loaded into the file folders' ``hoso.json``.

Loading goes through the site, not the centre: each file's record lands in its own
``hoso.json`` (merged with what is there: expected pages, classification, documents' page
counts and languages are kept), the agent reads it like any manifest and sends it, and a
classified file's record stays in its folder (:mod:`producers.manifest`). Every bad cell is
reported as ``dòng N, cột X: …`` and nothing is written unless the whole workbook is right;
each ``hoso.json`` is replaced atomically (temp file + rename). Scans are never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from producers.layout import Layout, NameMismatch
from producers.manifest import MANIFEST_MAX_BYTES, manifest_event
from sohoa.metadata import (
    DOCUMENT_FIELDS,
    FILE_FIELDS,
    FieldSpec,
    check_fields,
    document_rules,
    file_rules,
)
from sohoa.naming import nfc

FILES_SHEET = "Mục lục hồ sơ"
DOCUMENTS_SHEET = "Danh mục văn bản"
GUIDE_SHEET = "Hướng dẫn"
FONDS_LABEL = "Thư mục phông"       # the fonds folder in the hot folder (may be empty)
DOCUMENT_LABEL = "Tệp văn bản"      # the document's file name in the file folder
# Which column says which file: Mã hồ sơ is also the file folder's name.
_FILE_KEY = "ma_ho_so"


class MetadataImportError(ValueError):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass
class FileRows:
    fonds: str
    file_code: str
    row: int
    record: dict[str, Any]
    documents: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)


@dataclass
class ImportPlan:
    """What an import would write: each file folder and its new ``hoso.json`` text."""

    writes: list[tuple[Path, str]]
    files: int
    documents: int


def _columns(specs: Iterable[FieldSpec], lead: list[str]) -> list[str]:
    return lead + [s.label for s in specs]


FILE_COLUMNS = _columns(FILE_FIELDS, [FONDS_LABEL])
DOCUMENT_COLUMNS = _columns(DOCUMENT_FIELDS, [FONDS_LABEL, "Mã hồ sơ",
                                                           DOCUMENT_LABEL])


def write_template(path: Path) -> None:
    """The empty workbook: two sheets with Vietnamese headers, lists for the fields that take
    fixed values, and a sheet that says each field's rule."""
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Font
    from openpyxl.utils import get_column_letter
    from openpyxl.worksheet.datavalidation import DataValidation

    wb = Workbook()
    sheets = ((FILES_SHEET, FILE_COLUMNS, [None, *FILE_FIELDS]),
              (DOCUMENTS_SHEET, DOCUMENT_COLUMNS, [None, None, None, *DOCUMENT_FIELDS]))
    for i, (title, columns, specs) in enumerate(sheets):
        ws = wb.active if i == 0 else wb.create_sheet()
        ws.title = title
        ws.append(columns)
        ws.freeze_panes = "A2"
        for col, (label, spec) in enumerate(zip(columns, specs, strict=True), 1):
            cell = ws.cell(row=1, column=col)
            cell.font = Font(bold=True)
            cell.alignment = Alignment(wrap_text=True, vertical="top")
            ws.column_dimensions[get_column_letter(col)].width = max(14, min(40, len(label)))
            letter = get_column_letter(col)
            if spec is not None and spec.choices:
                dv = DataValidation(type="list", formula1='"' + ",".join(spec.choices) + '"',
                                    allow_blank=not spec.required)
                dv.error = f"{spec.label}: chọn một trong danh sách"
                ws.add_data_validation(dv)
                dv.add(f"{letter}2:{letter}5000")
    guide = wb.create_sheet(GUIDE_SHEET)
    guide.append(["Bảng", "Cột", "Bắt buộc", "Quy tắc"])
    for title, fields in ((FILES_SHEET, FILE_FIELDS), (DOCUMENTS_SHEET, DOCUMENT_FIELDS)):
        for s in fields:
            guide.append([title, s.label, "có" if s.required else "không", _rule_text(s)])
    guide.append([FILES_SHEET, FONDS_LABEL, "không",
                  "Tên thư mục phông trong thư mục quét (để trống nếu không có)"])
    guide.append([DOCUMENTS_SHEET, DOCUMENT_LABEL, "có",
                  "Tên tệp của văn bản trong thư mục hồ sơ, ví dụ 001.pdf"])
    guide.append([FILES_SHEET, "Mã hồ sơ", "có",
                  "Mã phông.Mục lục số.Số và ký hiệu hồ sơ; cũng là tên thư mục hồ sơ"])
    for letter, width in zip("ABCD", (18, 38, 10, 90), strict=True):
        guide.column_dimensions[letter].width = width
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)


def _rule_text(s: FieldSpec) -> str:
    if s.kind == "choice":
        return "Một trong: " + ", ".join(s.choices)
    if s.kind == "date":
        return "Ngày dạng dd/mm/yyyy"
    if s.kind == "int":
        return "Số nguyên từ 1 đến 9.999"
    if s.kind == "retention":
        return "'Vĩnh viễn' hoặc số năm, ví dụ '10 năm'"
    if s.kind == "digits":
        return f"Chữ số, tối đa {s.max_len}"
    return f"Chữ, tối đa {s.max_len} ký tự" if s.max_len else "Chữ"


def _norm(h: Any) -> str:
    return " ".join(nfc(str(h or "")).casefold().split())


def _sheet_rows(wb: Any, title: str, columns: list[str],
                errors: list[str]) -> list[tuple[int, dict[str, Any], dict[str, str]]]:
    """(row number, {label: value}, {label: column letter}) of each non-empty row."""
    from openpyxl.utils import get_column_letter

    by_norm = {_norm(ws.title): ws for ws in wb.worksheets}
    ws = by_norm.get(_norm(title))
    if ws is None:
        errors.append(f"thiếu bảng '{title}'")
        return []
    rows = ws.iter_rows(values_only=True)
    header = next(rows, None) or ()
    index = {_norm(h): i for i, h in enumerate(header) if h is not None}
    missing = [c for c in columns if _norm(c) not in index]
    if missing:
        errors.append(f"bảng '{title}': thiếu cột " + ", ".join(f"'{c}'" for c in missing))
        return []
    letters = {c: get_column_letter(index[_norm(c)] + 1) for c in columns}
    out = []
    for n, values in enumerate(rows, start=2):
        cells = {c: (values[index[_norm(c)]] if index[_norm(c)] < len(values) else None)
                 for c in columns}
        if all(v is None or (isinstance(v, str) and not v.strip()) for v in cells.values()):
            continue
        out.append((n, cells, letters))
    return out


def _checked(specs: tuple[FieldSpec, ...], cells: dict[str, Any], letters: dict[str, str],
             where: str, rules: Any, errors: list[str]) -> dict[str, Any]:
    raw = {s.key: cells.get(s.label) for s in specs}
    values, faults = check_fields(specs, raw, require=True)
    for f in faults + rules(values):
        errors.append(f"{where}, cột {letters.get(f.spec.label, '?')}: {f.message}")
    return values


def read_workbook(path: Path) -> tuple[list[FileRows], list[str]]:
    """The files of the workbook with their documents, and every bad cell."""
    from openpyxl import load_workbook

    errors: list[str] = []
    try:
        wb = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many kinds on a file that is not a workbook
        raise MetadataImportError([f"{path.name}: không đọc được tệp Excel ({exc})"]) from None
    file_rows = _sheet_rows(wb, FILES_SHEET, FILE_COLUMNS, errors)
    doc_rows = _sheet_rows(wb, DOCUMENTS_SHEET, DOCUMENT_COLUMNS, errors)
    wb.close()
    files: dict[tuple[str, str], FileRows] = {}
    for n, cells, letters in file_rows:
        where = f"{FILES_SHEET} dòng {n}"
        values = _checked(FILE_FIELDS, cells, letters, where, file_rules, errors)
        fonds = _text(cells.get(FONDS_LABEL))
        code = values.get(_FILE_KEY)
        if code is None:
            continue
        key = (fonds, code)
        if key in files:
            errors.append(f"{where}, cột {letters['Mã hồ sơ']}: hồ sơ '{code}' trùng với "
                          f"dòng {files[key].row}")
            continue
        files[key] = FileRows(fonds, code, n, values)
    for n, cells, letters in doc_rows:
        where = f"{DOCUMENTS_SHEET} dòng {n}"
        values = _checked(DOCUMENT_FIELDS, cells, letters, where, document_rules, errors)
        fonds, code = _text(cells.get(FONDS_LABEL)), _text(cells.get("Mã hồ sơ"))
        name = _text(cells.get(DOCUMENT_LABEL))
        if not name or "/" in name or "\\" in name:
            errors.append(f"{where}, cột {letters[DOCUMENT_LABEL]}: {DOCUMENT_LABEL}: bắt buộc, "
                          "là tên tệp trong thư mục hồ sơ (không có '/')")
            continue
        owner = files.get((fonds, code))
        if owner is None:
            errors.append(f"{where}, cột {letters['Mã hồ sơ']}: Mã hồ sơ: không có hồ sơ "
                          f"'{code}' (phông '{fonds}') trong bảng '{FILES_SHEET}'")
            continue
        owner.documents.append((n, name, values))
    for f in files.values():
        _file_level_checks(f, errors)
    return list(files.values()), errors


def _file_level_checks(f: FileRows, errors: list[str]) -> None:
    where = f"{FILES_SHEET} dòng {f.row}"
    total = f.record.get("tong_so_van_ban")
    if total is not None and total != len(f.documents):
        errors.append(f"{where}: Tổng số văn bản trong hồ sơ là {total} nhưng bảng "
                      f"'{DOCUMENTS_SHEET}' có {len(f.documents)} văn bản của hồ sơ này")
    seen_no: dict[int, int] = {}
    seen_name: dict[str, int] = {}
    for n, name, values in f.documents:
        no = values.get("so_thu_tu")
        if no is not None and no in seen_no:
            errors.append(f"{DOCUMENTS_SHEET} dòng {n}: Số thứ tự văn bản trong hồ sơ {no} "
                          f"trùng với dòng {seen_no[no]}")
        elif no is not None:
            seen_no[no] = n
        if name in seen_name:
            errors.append(f"{DOCUMENTS_SHEET} dòng {n}: {DOCUMENT_LABEL} '{name}' trùng với "
                          f"dòng {seen_name[name]}")
        seen_name[name] = n
    pages = f.record.get("so_luong_trang")
    doc_pages = sum(v.get("so_trang") or 0 for _, _, v in f.documents)
    if pages is not None and f.documents and doc_pages != pages:
        errors.append(f"{where}: Số lượng trang là {pages} nhưng các văn bản cộng lại "
                      f"{doc_pages} trang")


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return nfc(str(v)).strip()


def file_folders(root: Path, layout: Layout) -> dict[tuple[str, str], Path]:
    """Every file folder under ``root`` by (fonds, file code), as the agent names them."""
    out: dict[tuple[str, str], Path] = {}
    depth = layout.depth - 1

    def walk(d: Path, parts: tuple[str, ...]) -> None:
        if len(parts) == depth:
            with contextlib.suppress(NameMismatch):  # not a file folder: not ours
                out.setdefault(layout.parse_file_dir(parts), d)
            return
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            return
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                walk(Path(e.path), (*parts, e.name))

    walk(root, ())
    return out


def plan_import(path: Path, root: Path, layout: Layout, site: str,
                manifest_name: str = "hoso.json") -> ImportPlan:
    """Check the workbook against the hot folder and build every new ``hoso.json``; raise
    :class:`MetadataImportError` with every fault (nothing is written here)."""
    files, errors = read_workbook(path)
    folders = file_folders(root, layout)
    writes: list[tuple[Path, str]] = []
    n_docs = 0
    for f in files:
        folder = folders.get((f.fonds, f.file_code))
        where = f"{FILES_SHEET} dòng {f.row}"
        if folder is None:
            errors.append(f"{where}: không có thư mục hồ sơ '{f.file_code}' (phông "
                          f"'{f.fonds}') dưới {root}")
            continue
        present = {nfc(e.name) for e in os.scandir(folder) if e.is_file(follow_symlinks=False)}
        for n, name, _ in f.documents:
            if nfc(name) not in present:
                errors.append(f"{DOCUMENTS_SHEET} dòng {n}: {DOCUMENT_LABEL} '{name}' không có "
                              f"trong thư mục {folder}")
        target = folder / manifest_name
        try:
            text = _merged_manifest(target, f)
            manifest_event(text.encode(), site, f.fonds, f.file_code)
        except ValueError as exc:
            errors.append(f"{where}: {target.name}: {exc}")
            continue
        writes.append((target, text))
        n_docs += len(f.documents)
    if not files and not errors:
        errors.append(f"{path.name}: không có dòng dữ liệu nào")
    if errors:
        raise MetadataImportError(errors)
    return ImportPlan(writes, len(files), n_docs)


def _merged_manifest(target: Path, f: FileRows) -> str:
    data: dict[str, Any] = {}
    if target.exists():
        raw = target.read_bytes()
        if len(raw) > MANIFEST_MAX_BYTES:
            raise ValueError("tệp hiện có quá lớn")
        try:
            data = json.loads(raw.decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"tệp hiện có không phải JSON hợp lệ ({exc}); sửa tay trước") \
                from None
        if not isinstance(data, dict):
            raise ValueError("tệp hiện có không phải một đối tượng JSON")
    data["record"] = _jsonable(f.record)
    old = {}
    for d in data.get("documents") or []:
        entry = {"name": d} if isinstance(d, str) else dict(d)
        old[nfc(str(entry.get("name", "")))] = entry
    docs = []
    for _n, name, values in sorted(f.documents, key=lambda d: d[2].get("so_thu_tu") or 0):
        entry = old.pop(nfc(name), {"name": name})
        entry["record"] = _jsonable(values)
        docs.append(entry)
    data["documents"] = docs + list(old.values())  # documents the sheet does not list stay
    return json.dumps(data, ensure_ascii=False, indent=2) + "\n"


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, date) else v for k, v in values.items()}


def apply_import(plan: ImportPlan) -> None:
    """Write each ``hoso.json`` through a temp file and a rename, so the agent never reads a
    half-written manifest."""
    for target, text in plan.writes:
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
