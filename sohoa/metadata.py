"""Archival metadata of a hồ sơ (file) and of each văn bản (document), typed and checked field
by field with Vietnamese messages that name the field and the rule.

The fields follow the descriptive metadata of digitized records (TT 05/2025/TT-BNV, which
keeps the 18 file fields and the document fields of TT 02/2019/TT-BNV's annexes; see
docs/architecture.md, "Deliverable", for what was verified and where sohoa departs).

One table per level (:data:`FILE_FIELDS`, :data:`DOCUMENT_FIELDS`) drives everything: the
wire models (:class:`FileRecord`, :class:`DocumentRecord`, carried by ``FileManifest``), the
checks of ``hoso.json`` and of the contractors' spreadsheet, the XLSX template's columns and
the EAD written into packages. On the wire every field is optional (metadata is often filled
in after scanning) but any value present must be right; what a package needs is judged when
it is built (:meth:`FileRecord.missing`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from sohoa.naming import nfc

Kind = Literal["text", "code", "digits", "int", "date", "choice", "retention"]

ACCESS_CHOICES = ("Công khai", "Sử dụng có điều kiện", "Mật")        # chế độ sử dụng
RELIABILITY_CHOICES = ("Số hóa", "Gốc điện tử", "Hỗn hợp")            # mức độ tin cậy
PERMANENT = "Vĩnh viễn"
_RETENTION = re.compile(r"^(\d{1,3})\s*năm$", re.IGNORECASE)
_DIGITS = re.compile(r"^\d+$")
_CODE = re.compile(r"^[^/\\\x00-\x1f\x7f]+$")  # a code becomes a file name and a key part
_DATE_VN = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")
_DATE_ISO = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
MAX_COUNT = 9_999


@dataclass(frozen=True)
class FieldSpec:
    key: str
    label: str              # Vietnamese, as the annex names it
    kind: Kind
    required: bool
    max_len: int = 0        # text, code, digits: most characters
    choices: tuple[str, ...] = ()


FILE_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("ma_ho_so", "Mã hồ sơ", "code", True, 30),
    FieldSpec("ma_phong", "Mã phông", "code", True, 13),
    FieldSpec("muc_luc", "Mục lục số hoặc năm hình thành hồ sơ", "digits", True, 4),
    FieldSpec("so_ky_hieu_ho_so", "Số và ký hiệu hồ sơ", "code", True, 20),
    FieldSpec("tieu_de", "Tiêu đề hồ sơ", "text", True, 1000),
    FieldSpec("thoi_han_bao_quan", "Thời hạn bảo quản", "retention", True),
    FieldSpec("che_do_su_dung", "Chế độ sử dụng", "choice", True, choices=ACCESS_CHOICES),
    FieldSpec("ngon_ngu", "Ngôn ngữ", "text", True, 100),
    FieldSpec("thoi_gian_bat_dau", "Thời gian bắt đầu", "date", True),
    FieldSpec("thoi_gian_ket_thuc", "Thời gian kết thúc", "date", True),
    FieldSpec("tong_so_van_ban", "Tổng số văn bản trong hồ sơ", "int", True),
    FieldSpec("so_luong_to", "Số lượng tờ", "int", True),
    FieldSpec("so_luong_trang", "Số lượng trang", "int", True),
    FieldSpec("ky_hieu_thong_tin", "Ký hiệu thông tin", "text", False, 30),
    FieldSpec("tu_khoa", "Từ khóa", "text", False, 100),
    FieldSpec("tinh_trang_vat_ly", "Tình trạng vật lý", "text", False, 50),
    FieldSpec("muc_do_tin_cay", "Mức độ tin cậy", "choice", True, choices=RELIABILITY_CHOICES),
    FieldSpec("ghi_chu", "Ghi chú", "text", False, 255),
)

DOCUMENT_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("so_thu_tu", "Số thứ tự văn bản trong hồ sơ", "int", True),
    FieldSpec("ten_loai", "Tên loại văn bản", "text", True, 100),
    FieldSpec("so", "Số của văn bản", "text", False, 11),
    FieldSpec("ky_hieu", "Ký hiệu của văn bản", "text", False, 30),
    FieldSpec("ngay", "Ngày, tháng, năm văn bản", "date", True),
    FieldSpec("co_quan_ban_hanh", "Tên cơ quan, tổ chức ban hành văn bản", "text", True, 200),
    FieldSpec("trich_yeu", "Trích yếu nội dung", "text", True, 500),
    FieldSpec("ngon_ngu", "Ngôn ngữ", "text", True, 100),
    FieldSpec("so_trang", "Số lượng trang của văn bản", "int", True),
    FieldSpec("ky_hieu_thong_tin", "Ký hiệu thông tin", "text", False, 30),
    FieldSpec("tu_khoa", "Từ khóa", "text", False, 100),
    FieldSpec("che_do_su_dung", "Chế độ sử dụng", "choice", True, choices=ACCESS_CHOICES),
    FieldSpec("muc_do_tin_cay", "Mức độ tin cậy", "choice", True, choices=RELIABILITY_CHOICES),
    FieldSpec("but_tich", "Bút tích", "text", False, 2000),
    FieldSpec("tinh_trang_vat_ly", "Tình trạng vật lý", "text", False, 50),
    FieldSpec("ghi_chu", "Ghi chú", "text", False, 500),
)

FILE_SPEC = {f.key: f for f in FILE_FIELDS}
DOCUMENT_SPEC = {f.key: f for f in DOCUMENT_FIELDS}


def vn_int(n: int) -> str:
    """An integer as officers read it (vi-VN: 1.234)."""
    return f"{n:,}".replace(",", ".")


def vn_date(d: date) -> str:
    return d.strftime("%d/%m/%Y")


class RecordInvalid(ValueError):
    """A record with faults; ``messages`` holds one Vietnamese message per fault."""

    def __init__(self, messages: list[str]) -> None:
        self.messages = messages
        super().__init__("; ".join(messages))


class FieldError(ValueError):
    """One field's value breaks its rule; ``message`` is Vietnamese and names the field."""

    def __init__(self, spec: FieldSpec, rule: str) -> None:
        self.spec = spec
        self.message = f"{spec.label}: {rule}"
        super().__init__(self.message)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def convert(spec: FieldSpec, value: Any) -> Any:
    """The typed value of one field, or FieldError. ``value`` is not blank."""
    if spec.kind == "int":
        return _to_int(spec, value)
    if spec.kind == "date":
        return _to_date(spec, value)
    text = _to_text(spec, value)
    if spec.kind == "choice":
        for c in spec.choices:
            if text.casefold() == c.casefold():
                return c
        raise FieldError(spec, "phải là một trong: " + ", ".join(spec.choices)
                         + f" (nhận được '{_shown(text)}')")
    if spec.kind == "retention":
        if text.casefold() == PERMANENT.casefold():
            return PERMANENT
        m = _RETENTION.match(text)
        if not m or not 1 <= int(m.group(1)) <= 100:
            raise FieldError(spec, f"phải là '{PERMANENT}' hoặc số năm từ 1 đến 100, ví dụ "
                                   f"'10 năm' (nhận được '{_shown(text)}')")
        return f"{int(m.group(1))} năm"
    if spec.kind == "digits" and not _DIGITS.match(text):
        raise FieldError(spec, f"chỉ gồm chữ số (nhận được '{_shown(text)}')")
    if spec.kind == "code" and not _CODE.match(text):
        raise FieldError(spec, "không được chứa '/', '\\' hay ký tự điều khiển")
    if spec.max_len and len(text) > spec.max_len:
        raise FieldError(spec, f"tối đa {vn_int(spec.max_len)} ký tự (có {vn_int(len(text))})")
    return text


def _shown(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "…"


def _to_text(spec: FieldSpec, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise FieldError(spec, "phải là chữ")
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a spreadsheet's 12 arrives as 12.0
    text = nfc(str(value)).strip()
    if any((ord(c) < 32 and c not in "\t\n") or ord(c) == 127 for c in text):
        raise FieldError(spec, "không được chứa ký tự điều khiển")
    return text


def _to_int(spec: FieldSpec, value: Any) -> int:
    n: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, float) and value.is_integer():
        n = int(value)
    elif isinstance(value, str) and _DIGITS.match(value.strip().replace(".", "")):
        n = int(value.strip().replace(".", ""))  # "1.234" as a vi-VN number
    if n is None or not 1 <= n <= MAX_COUNT:
        raise FieldError(spec, f"phải là số nguyên từ 1 đến {vn_int(MAX_COUNT)} "
                               f"(nhận được '{_shown(str(value))}')")
    return n


def _to_date(spec: FieldSpec, value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            if m := _DATE_VN.match(text):
                return date(int(m.group(3)), int(m.group(2)), int(m.group(1)))
            if m := _DATE_ISO.match(text):
                return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        except ValueError:
            raise FieldError(spec, f"ngày không có thật '{_shown(text)}'") from None
    raise FieldError(spec, f"phải là ngày dạng dd/mm/yyyy (nhận được '{_shown(str(value))}')")


def check_fields(specs: Iterable[FieldSpec], raw: Mapping[str, Any], *,
                 require: bool) -> tuple[dict[str, Any], list[FieldError]]:
    """The typed values of ``raw`` and every field at fault (unknown keys too). With
    ``require``, a required field left blank is a fault."""
    specs = list(specs)
    known = {s.key: s for s in specs}
    values: dict[str, Any] = {}
    errors: list[FieldError] = []
    for key in raw:
        if key not in known:
            errors.append(FieldError(FieldSpec(str(key), str(key), "text", False),
                                     "không phải trường siêu dữ liệu đã định nghĩa"))
    for spec in specs:
        value = raw.get(spec.key)
        if _blank(value):
            if require and spec.required:
                errors.append(FieldError(spec, "bắt buộc, không được để trống"))
            continue
        try:
            values[spec.key] = convert(spec, value)
        except FieldError as exc:
            errors.append(exc)
    return values, errors


def _check_dates(values: Mapping[str, Any], start: str, end: str,
                 specs: Mapping[str, FieldSpec], today: date) -> list[FieldError]:
    out = []
    for key in (start, end):
        d = values.get(key)
        if d is not None and d > today:
            out.append(FieldError(specs[key], f"không được sau ngày hôm nay ({vn_date(d)})"))
    if values.get(start) and values.get(end) and values[end] < values[start]:
        out.append(FieldError(specs[end], f"không được trước {specs[start].label} "
                                          f"({vn_date(values[end])} < "
                                          f"{vn_date(values[start])})"))
    return out


def file_rules(values: Mapping[str, Any], today: date | None = None) -> list[FieldError]:
    """Rules between a file's fields."""
    today = today or date.today()
    out = _check_dates(values, "thoi_gian_bat_dau", "thoi_gian_ket_thuc", FILE_SPEC, today)
    parts = [values.get(k) for k in ("ma_phong", "muc_luc", "so_ky_hieu_ho_so")]
    code = values.get("ma_ho_so")
    if code is not None and all(parts) and code != ".".join(str(p) for p in parts):
        out.append(FieldError(FILE_SPEC["ma_ho_so"], "phải ghép từ Mã phông, Mục lục số và "
                              "Số và ký hiệu hồ sơ, cách nhau bởi dấu chấm ('"
                              + ".".join(str(p) for p in parts) + f"', nhận được '{code}')"))
    sheets, pages = values.get("so_luong_to"), values.get("so_luong_trang")
    if sheets is not None and pages is not None and not sheets <= pages <= 2 * sheets:
        out.append(FieldError(FILE_SPEC["so_luong_trang"],
                              f"phải từ Số lượng tờ đến gấp đôi ({vn_int(sheets)}–"
                              f"{vn_int(2 * sheets)}, nhận được {vn_int(pages)})"))
    return out


def document_rules(values: Mapping[str, Any], today: date | None = None) -> list[FieldError]:
    today = today or date.today()
    d = values.get("ngay")
    if d is not None and d > today:
        return [FieldError(DOCUMENT_SPEC["ngay"], f"không được sau ngày hôm nay ({vn_date(d)})")]
    return []


class _Record(BaseModel):
    """Typed, validated metadata: the before-validator turns raw values (texts from a
    spreadsheet, numbers, dates) into their types and refuses, in Vietnamese, what breaks a
    rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _SPECS: tuple[FieldSpec, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _typed(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            raise RecordInvalid(["siêu dữ liệu phải là một đối tượng {trường: giá trị}"])
        values, errors = check_fields(cls._specs(), data, require=False)
        errors += cls._rules(values)
        if errors:
            raise RecordInvalid([e.message for e in errors])
        return values

    @classmethod
    def _specs(cls) -> tuple[FieldSpec, ...]:  # pragma: no cover - subclasses override
        return ()

    @classmethod
    def _rules(cls, values: Mapping[str, Any]) -> list[FieldError]:
        return []

    def missing(self) -> list[str]:
        """Labels of the required fields left empty."""
        return [s.label for s in self._specs() if s.required and getattr(self, s.key) is None]

    def labelled(self) -> list[tuple[str, str]]:
        """(label, value as officers read it) of each field filled in, in the annex's order."""
        out = []
        for s in self._specs():
            v = getattr(self, s.key)
            if v is None:
                continue
            out.append((s.label, vn_date(v) if isinstance(v, date) else
                        vn_int(v) if isinstance(v, int) else str(v)))
        return out


class FileRecord(_Record):
    """The 18 fields of a hồ sơ."""

    ma_ho_so: str | None = None
    ma_phong: str | None = None
    muc_luc: str | None = None
    so_ky_hieu_ho_so: str | None = None
    tieu_de: str | None = None
    thoi_han_bao_quan: str | None = None
    che_do_su_dung: str | None = None
    ngon_ngu: str | None = None
    thoi_gian_bat_dau: date | None = None
    thoi_gian_ket_thuc: date | None = None
    tong_so_van_ban: int | None = None
    so_luong_to: int | None = None
    so_luong_trang: int | None = None
    ky_hieu_thong_tin: str | None = None
    tu_khoa: str | None = None
    tinh_trang_vat_ly: str | None = None
    muc_do_tin_cay: str | None = None
    ghi_chu: str | None = None

    @classmethod
    def _specs(cls) -> tuple[FieldSpec, ...]:
        return FILE_FIELDS

    @classmethod
    def _rules(cls, values: Mapping[str, Any]) -> list[FieldError]:
        return file_rules(values)


class DocumentRecord(_Record):
    """The fields of a văn bản in a hồ sơ."""

    so_thu_tu: int | None = None
    ten_loai: str | None = None
    so: str | None = None
    ky_hieu: str | None = None
    ngay: date | None = None
    co_quan_ban_hanh: str | None = None
    trich_yeu: str | None = None
    ngon_ngu: str | None = None
    so_trang: int | None = None
    ky_hieu_thong_tin: str | None = None
    tu_khoa: str | None = None
    che_do_su_dung: str | None = None
    muc_do_tin_cay: str | None = None
    but_tich: str | None = None
    tinh_trang_vat_ly: str | None = None
    ghi_chu: str | None = None

    @classmethod
    def _specs(cls) -> tuple[FieldSpec, ...]:
        return DOCUMENT_FIELDS

    @classmethod
    def _rules(cls, values: Mapping[str, Any]) -> list[FieldError]:
        return document_rules(values)


def _folded(text: str) -> str:
    import unicodedata

    decomposed = unicodedata.normalize("NFD", nfc(text).casefold())
    return " ".join("".join(c for c in decomposed if not unicodedata.combining(c)).split())


def is_large_format(document_type: str | None, large_types: Iterable[str]) -> bool:
    """Whether a document's type (tên loại) is a map or drawing that Art. 8 wants at the
    higher resolution: its name starts with one of ``large_types`` (case and accents aside,
    so "BẢN ĐỒ địa chính" and "Ban do" are maps)."""
    if not document_type:
        return False
    name = _folded(document_type)
    return any(name.startswith(_folded(t)) for t in large_types if t.strip())


def signed_copy_name(file_code: str, number: int | None) -> str:
    """Art. 8's name of a digitized document's PDF: the file code, a dot and the document's
    number in the file (three digits at least); a file digitized as one PDF has its code."""
    return f"{file_code}.pdf" if number is None else f"{file_code}.{number:03d}.pdf"


def record_problems(model: type[_Record], raw: Mapping[str, Any]) -> list[str]:
    """Each Vietnamese message a raw record would be refused with (empty: it is valid)."""
    from pydantic import ValidationError

    try:
        model.model_validate(raw)
    except ValidationError as exc:
        out: list[str] = []
        for e in exc.errors():
            err = e.get("ctx", {}).get("error")
            out += err.messages if isinstance(err, RecordInvalid) else [e["msg"]]
        return out
    return []
