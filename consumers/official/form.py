"""The wording of an issuing body's heading, number, date line, recipients and signature, by
its system:

- state bodies, Nghị định 30/2020/NĐ-CP (Phụ lục I): "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM" /
  "Độc lập - Tự do - Hạnh phúc"; "Số: 12/BC-SNV"; "Lưu: VT, …"; quyền hạn "KT.", "TL.", "TM.";
- Party bodies, Hướng dẫn 36-HD/VPTW (2018): "ĐẢNG CỘNG SẢN VIỆT NAM"; the issuer over a star;
  "Số 12-BC/VPTU" (no colon, a hyphen before the type); "Lưu Văn phòng …"; "T/M", "K/T", "T/L".

The layout (positions, sizes, lines) is the renderers'; this module only words it.
"""

from __future__ import annotations

from datetime import date

from consumers import vi
from consumers.official.model import Heading, SignBlock
from sohoa.config import IssuerConfig

STATE_MOTTO = ("CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", "Độc lập - Tự do - Hạnh phúc")
PARTY_TITLE = "ĐẢNG CỘNG SẢN VIỆT NAM"
# Symbols of the document types (NĐ 30/2020 Phụ lục III; 36-HD/VPTW uses the same letters).
TYPE_CODES = {"BÁO CÁO": "BC", "BIÊN BẢN": "BB"}
BLANK_NUMBER = "\u00a0" * 8  # room for the number the văn thư writes on issue
BLANK_PLACE = "………"


def number_line(issuer: IssuerConfig, doc_type: str) -> str:
    code = TYPE_CODES[doc_type]
    number = issuer.number.strip() or BLANK_NUMBER
    if issuer.form == "party":
        return f"Số {number}-{code}/{issuer.abbreviation}"
    return f"Số: {number}/{code}-{issuer.abbreviation}"


def place_date(issuer: IssuerConfig, day: date) -> str:
    return f"{issuer.place.strip() or BLANK_PLACE}, {vi.long_date(day)}"


def heading(issuer: IssuerConfig, doc_type: str, summary: str, day: date) -> Heading:
    return Heading(form=issuer.form, parent=issuer.parent.strip().upper(),
                   issuer=issuer.name.strip().upper(),
                   number_line=number_line(issuer, doc_type),
                   place_date=place_date(issuer, day), doc_type=doc_type, summary=summary)


def recipients(issuer: IssuerConfig, extra: list[str] | None = None) -> list[str]:
    """"- X;" lines ending in "- Lưu: VT." (state) or "- X," ending in "- Lưu …." (Party)."""
    names = [*(extra or []), *issuer.recipients]
    sep = "," if issuer.form == "party" else ";"
    lines = [f"- {n.strip().rstrip(';,.')}{sep}" for n in names if n.strip()]
    archive = issuer.archive.strip().rstrip(".")
    lines.append(f"- Lưu {archive}." if issuer.form == "party" else f"- Lưu: {archive}.")
    return lines


def signer(issuer: IssuerConfig) -> SignBlock:
    s = issuer.signer
    lines = [x.strip().upper() for x in (s.authority, s.title) if x.strip()]
    return SignBlock(lines=lines, name=s.name.strip())
