"""The digitizing body's signature on a digitized document (Art. 8 TT 05/2025/TT-BNV).

One step, whatever made the PDF/A: :func:`sign_pdf` takes a PDF/A and writes its signed copy
(PAdES baseline B, pyHanko, incremental update so the PDF/A stays valid). The visible
signature sits at the top right of the first page and shows only the body's name and the
signing time in ISO 8601 in Vietnam's time zone, in Times New Roman (or a metric-compatible
font where it is not installed: Liberation Serif), regular, 10 pt, black; no seal image.

The key comes from a PKCS#12 file or a PKCS#11 token (:func:`load_key`). A missing, locked,
expired or not-yet-valid key is a :class:`SigningError` before anything is written: there is
never an unsigned copy under a signed copy's name.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pikepdf
from pyhanko.pdf_utils.font.opentype import GlyphAccumulatorFactory
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.layout import AxisAlignment, Margins, SimpleBoxLayoutRule
from pyhanko.pdf_utils.text import TextBoxStyle
from pyhanko.sign import fields, signers
from pyhanko.sign.fields import SigFieldSpec
from pyhanko.stamp import TextStampStyle

from sohoa.config import SigningConfig

# Families accepted for the stamp: Times New Roman itself, or fonts made metric-compatible
# with it (same advance widths), so the text sets exactly as in Times New Roman.
TIMES_COMPATIBLE = ("Times New Roman", "Liberation Serif", "Tinos")
_KNOWN_FONT_PATHS = (
    "/usr/share/fonts/truetype/msttcorefonts/Times_New_Roman.ttf",
    "/usr/share/fonts/truetype/msttcorefonts/times.ttf",
    "/usr/share/fonts/truetype/liberation2/LiberationSerif-Regular.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSerif-Regular.ttf",
)
FIELD_NAME = "ChuKySoHoa"   # the signature field's name (no spaces, ASCII)


class SigningError(RuntimeError):
    """The document could not be signed; the message is Vietnamese and says what to fix."""


@dataclass(frozen=True)
class SigningKey:
    signer: Any                 # pyhanko.sign.signers.Signer
    subject: str
    not_after: datetime
    source: str                 # "pkcs12:<path>" or "pkcs11:<token label>"
    session: Any = None         # the PKCS#11 session to close, if any

    def close(self) -> None:
        if self.session is not None:
            self.session.close()


@dataclass(frozen=True)
class SignedCopy:
    path: Path
    sha256: str
    signing_time: datetime      # in the configured time zone
    stamp_text: str


def find_font(cfg: SigningConfig) -> Path:
    """Times New Roman, or a metric-compatible free font; SigningError when neither is here."""
    if cfg.font_path is not None:
        if not cfg.font_path.is_file():
            raise SigningError(f"Không thấy phông chữ signing.font_path: {cfg.font_path}")
        return cfg.font_path
    fc = shutil.which("fc-match")
    if fc is not None:
        res = subprocess.run([fc, "-f", "%{family}\t%{file}", "Times New Roman:style=Regular"],
                             capture_output=True, text=True, timeout=30)
        family, _, file = res.stdout.partition("\t")
        if res.returncode == 0 and any(f in family for f in TIMES_COMPATIBLE) \
                and file.endswith(".ttf") and Path(file).is_file():
            return Path(file)
    for p in _KNOWN_FONT_PATHS:
        if Path(p).is_file():
            return Path(p)
    raise SigningError("Không có phông Times New Roman hay phông tương thích (Liberation Serif):"
                       " cài gói fonts-liberation (infra/install-system-deps.sh) hoặc đặt "
                       "signing.font_path")


def load_key(cfg: SigningConfig, now: datetime | None = None) -> SigningKey:
    """The body's key and certificate, checked valid at ``now``."""
    now = now or datetime.now(UTC)
    if cfg.pkcs11_lib is not None:
        key = _load_pkcs11(cfg)
    elif cfg.pkcs12_path is not None:
        key = _load_pkcs12(cfg)
    else:
        raise SigningError("Chưa cấu hình khóa ký số: đặt signing.pkcs12_path (tệp .p12/.pfx) "
                           "hoặc signing.pkcs11_lib (USB token)")
    cert = key.signer.signing_cert
    not_before, not_after = cert.not_valid_before, cert.not_valid_after
    if now < not_before:
        key.close()
        raise SigningError(f"Chứng thư số của {key.subject} chưa có hiệu lực (từ "
                           f"{not_before:%d/%m/%Y %H:%M} UTC)")
    if now > not_after:
        key.close()
        raise SigningError(f"Chứng thư số của {key.subject} đã hết hạn ngày "
                           f"{not_after:%d/%m/%Y}; không ký, không tạo bản sao")
    return key


def _load_pkcs12(cfg: SigningConfig) -> SigningKey:
    path = cfg.pkcs12_path
    assert path is not None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningError(f"Không đọc được tệp khóa {path}: {exc.strerror or exc}") from None
    pw = cfg.pkcs12_passphrase.get_secret_value().encode() if cfg.pkcs12_passphrase else None
    try:
        signer = signers.SimpleSigner.load_pkcs12_data(data, other_certs=(), passphrase=pw)
    except Exception as exc:  # wrong passphrase, not PKCS#12, no key: all "cannot load"
        raise SigningError(f"Không mở được tệp khóa {path} (sai mật khẩu hoặc không phải "
                           f"PKCS#12): {exc}") from None
    return SigningKey(signer, _subject(signer), signer.signing_cert.not_valid_after,
                      f"pkcs12:{path}")


def _load_pkcs11(cfg: SigningConfig) -> SigningKey:
    from pyhanko.config.pkcs11 import TokenCriteria
    from pyhanko.sign import pkcs11

    lib = cfg.pkcs11_lib
    assert lib is not None
    if not lib.is_file():
        raise SigningError(f"Không thấy thư viện PKCS#11 của token: {lib}")
    pin = cfg.pkcs11_pin.get_secret_value() if cfg.pkcs11_pin else None
    try:
        session = pkcs11.open_pkcs11_session(
            str(lib), token_criteria=TokenCriteria(label=cfg.pkcs11_token_label),
            user_pin=pin)
    except Exception as exc:
        raise SigningError(f"Không mở được token '{cfg.pkcs11_token_label}' (chưa cắm, sai "
                           f"PIN hoặc sai nhãn): {exc}") from None
    try:
        signer = pkcs11.PKCS11Signer(session, cert_label=cfg.pkcs11_cert_label,
                                     key_label=cfg.pkcs11_key_label)
        cert = signer.signing_cert  # fetched from the token now, so a missing one fails here
    except Exception as exc:
        session.close()
        raise SigningError(f"Token '{cfg.pkcs11_token_label}' không có khóa/chứng thư "
                           f"'{cfg.pkcs11_key_label or cfg.pkcs11_cert_label}': {exc}") from None
    return SigningKey(signer, _subject(signer), cert.not_valid_after,
                      f"pkcs11:{cfg.pkcs11_token_label}", session)


def _subject(signer: Any) -> str:
    name = signer.signing_cert.subject.native
    return str(name.get("common_name") or signer.signing_cert.subject.human_friendly)


def stamp_font(font: Path) -> Path:
    """``font`` with 1,000 units per em, made once into ~/.cache/sohoa/fonts. pyHanko writes
    a CID font's /W from the font's own units, which PDF reads per 1,000 em: with any other
    scale (Liberation Serif and Times New Roman have 2,048) the widths disagree with the
    embedded program and the signed copy is no longer valid PDF/A (veraPDF 6.2.11.5)."""
    from fontTools.ttLib import TTFont
    from fontTools.ttLib.scaleUpem import scale_upem

    data = font.read_bytes()
    out = (Path.home() / ".cache" / "sohoa" / "fonts"
           / f"{font.stem}-{hashlib.sha256(data).hexdigest()[:12]}-upem1000.ttf")
    if out.is_file():
        return out
    with TTFont(str(font)) as tt:
        if tt["head"].unitsPerEm == 1000:
            return font
        scale_upem(tt, 1000)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        tt.save(str(tmp))
    os.replace(tmp, out)
    return out


def _text_width(font: Path, text: str, size: float) -> float:
    from fontTools.ttLib import TTFont

    with TTFont(str(font), lazy=True) as tt:
        cmap, hmtx = tt.getBestCmap(), tt["hmtx"]
        upem = tt["head"].unitsPerEm
        total = sum(hmtx[cmap.get(ord(c), ".notdef")][0] for c in text)
    return total * size / upem


def _stamp_box(page: Any, width: float, height: float, margin: float
               ) -> tuple[int, int, int, int]:
    """The field's rectangle at the visual top right of a page (its /Rotate honoured)."""
    x0, y0, x1, y1 = (float(v) for v in page.mediabox)
    rot = int(page.obj.get("/Rotate", 0)) % 360
    if rot == 90:    # the visual top edge is the page's right edge
        box = (x1 - margin - height, y1 - margin - width, x1 - margin, y1 - margin)
    elif rot == 180:
        box = (x0 + margin, y0 + margin, x0 + margin + width, y0 + margin + height)
    elif rot == 270:
        box = (x0 + margin, y0 + margin, x0 + margin + height, y0 + margin + width)
    else:
        box = (x1 - margin - width, y1 - margin - height, x1 - margin, y1 - margin)
    left, bottom, right, top = box
    return round(left), round(bottom), round(right), round(top)


def sign_pdf(src: Path, dst: Path, key: SigningKey, cfg: SigningConfig,
             body_name: str | None = None) -> SignedCopy:
    """Write ``dst``, the signed copy of the PDF/A ``src`` (which is never modified)."""
    body = (body_name or cfg.body_name).strip()
    if not body:
        raise SigningError("Chưa có tên cơ quan số hóa (signing.body_name) để hiện trên chữ ký")
    font = stamp_font(find_font(cfg))
    tz = ZoneInfo(cfg.timezone)
    size = cfg.font_size_pt
    sample = datetime(2000, 1, 1, tzinfo=tz).isoformat(timespec="seconds")
    width = max(_text_width(font, body, size), _text_width(font, sample, size)) + 6
    height = 2 * size * 1.25 + 6
    with pikepdf.open(src) as pdf:
        if not len(pdf.pages):
            raise SigningError(f"{src.name}: tệp PDF không có trang nào")
        box = _stamp_box(pdf.pages[0], width, height, cfg.margin_pt)

    style = VietnamTimeStampStyle(
        tz=tz, stamp_text="%(body)s\n%(ts)s", timestamp_format="%Y-%m-%dT%H:%M:%S%z",
        border_width=0, background=None,
        # pyHanko lays text out in integer points (Fractions).
        text_box_style=TextBoxStyle(
            font=GlyphAccumulatorFactory(str(font), font_size=round(size)),
            font_size=round(size)),
        inner_content_layout=SimpleBoxLayoutRule(
            x_align=AxisAlignment.ALIGN_MAX, y_align=AxisAlignment.ALIGN_MAX,
            margins=Margins.uniform(2)))
    meta = signers.PdfSignatureMetadata(
        field_name=FIELD_NAME, subfilter=fields.SigSeedSubFilter.PADES,
        md_algorithm="sha256", name=body)
    pdf_signer = signers.PdfSigner(
        meta, signer=key.signer, stamp_style=style,
        new_field_spec=SigFieldSpec(sig_field_name=FIELD_NAME, on_page=0, box=box))
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        with open(src, "rb") as inf, open(tmp, "wb") as out:
            writer = IncrementalPdfFileWriter(inf, strict=False)
            pdf_signer.sign_pdf(writer, output=out, appearance_text_params={"body": body})
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dst)
    except SigningError:
        raise
    except Exception as exc:
        raise SigningError(f"Ký {src.name} thất bại: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    when = style.last_time or datetime.now(tz)
    digest = hashlib.sha256(dst.read_bytes()).hexdigest()
    return SignedCopy(dst, digest, when, f"{body}\n{when.isoformat(timespec='seconds')}")


@dataclass(frozen=True)
class VietnamTimeStampStyle(TextStampStyle):
    """pyHanko renders the signing time in the machine's zone; Art. 8 wants Vietnam's. The
    time arrives formatted with its offset, so it is re-read and shown in ``tz``."""

    tz: Any = None
    holder: dict = field(default_factory=dict)   # the time shown, for the caller

    @property
    def last_time(self) -> datetime | None:
        return self.holder.get("t")

    def create_stamp(self, writer: Any, box: Any, text_params: dict) -> Any:
        ts = datetime.strptime(text_params["ts"], self.timestamp_format).astimezone(self.tz)
        self.holder["t"] = ts
        return super().create_stamp(writer, box, {**text_params,
                                                  "ts": ts.isoformat(timespec="seconds")})


def check_signature(path: Path, trust_roots: list[Path]) -> list[str]:
    """What is wrong with a signed copy's signature (empty: one PAdES signature, intact, its
    certificate valid and chaining to ``trust_roots``, covering the whole file)."""
    from pyhanko.keys import load_certs_from_pemder
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import validate_pdf_signature
    from pyhanko.sign.validation.status import SignatureCoverageLevel
    from pyhanko_certvalidator import ValidationContext

    roots = list(load_certs_from_pemder([str(p) for p in trust_roots]))
    vc = ValidationContext(trust_roots=roots, allow_fetching=False)
    try:
        with open(path, "rb") as fh:
            reader = PdfFileReader(fh, strict=False)
            sigs = reader.embedded_signatures
            if not sigs:
                return ["không có chữ ký số"]
            out = []
            for sig in sigs:
                st = validate_pdf_signature(sig, vc)
                if not st.intact:
                    out.append("chữ ký không còn nguyên vẹn (nội dung đã bị sửa)")
                elif not st.valid:
                    out.append("chữ ký không hợp lệ")
                if not st.trusted:
                    out.append("chứng thư số không được tin cậy (không dẫn tới CA đã cho)")
                if st.coverage != SignatureCoverageLevel.ENTIRE_FILE:
                    out.append("tệp có phần được thêm sau khi ký")
            return out
    except Exception as exc:  # a file pyHanko cannot even read is a fault, not a crash
        return [f"không đọc được chữ ký: {exc}"]
