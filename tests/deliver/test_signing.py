"""The digitizing body's signature (Art. 8): PAdES with pyHanko from a PKCS#12 file and a
PKCS#11 token (SoftHSM2), the visible text, PDF/A kept (veraPDF), and every refusal."""

from __future__ import annotations

import re
import shutil
from datetime import datetime
from pathlib import Path

import pikepdf
import pytest
from pydantic import SecretStr

from deliver.signing import SigningError, check_signature, find_font, load_key, sign_pdf
from infra.verapdf import validate
from sohoa.config import SigningConfig
from tests.support.deliver_helpers import (
    BODY,
    PASSPHRASE,
    SOFTHSM_LIB,
    make_ca,
    make_pdfa,
    softhsm_token,
)


@pytest.fixture(scope="module")
def material(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("sign")
    return {"dir": d, "ca": make_ca(d / "ca"), "expired": make_ca(d / "old", expired=True),
            "pdfa": make_pdfa(d / "in.pdf", pages=2)}


def _cfg(p12: Path, **kw) -> SigningConfig:
    return SigningConfig(**{"body_name": BODY, "pkcs12_path": p12,
                            "pkcs12_passphrase": SecretStr(PASSPHRASE), **kw})


def _stamp(path: Path) -> tuple[list[float], bytes, str, list[float]]:
    """The signature widget's rectangle, appearance stream, font name and the page box."""
    with pikepdf.open(path) as pdf:
        page = pdf.pages[0]
        annot = next(a for a in page.obj.Annots if a.get("/FT") == "/Sig")
        ap = annot.AP.N
        fonts = [f for _, f in ap.Resources.Font.items()]
        inner = ap.Resources.get("/XObject")
        content = ap.read_bytes()
        if not fonts and inner is not None:  # pyHanko nests the text in a form XObject
            for _, xo in inner.items():
                fonts += [f for _, f in xo.Resources.get("/Font", {}).items()]
                content += xo.read_bytes()
        base = str(fonts[0].DescendantFonts[0].BaseFont) if fonts else ""
        return [float(v) for v in annot.Rect], content, base, [float(v) for v in page.mediabox]


def test_signed_copy_is_pades_valid_pdfa_with_arts_visible_text(material) -> None:
    ca, src = material["ca"], material["pdfa"]
    before = src.read_bytes()
    key = load_key(_cfg(ca.p12))
    out = material["dir"] / "out" / "H01.1.05.001.pdf"
    copy = sign_pdf(src, out, key, _cfg(ca.p12))
    assert src.read_bytes() == before                      # the input is never modified
    assert check_signature(out, [ca.root_pem]) == []
    body, when = copy.stamp_text.split("\n")
    assert body == BODY
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+07:00", when)
    assert abs((datetime.fromisoformat(when) - copy.signing_time).total_seconds()) < 1
    rect, content, font, box = _stamp(out)
    assert rect[2] > box[2] * 0.6 and rect[3] > box[3] * 0.85  # top right of page 1
    assert b" 10 Tf" in content                             # 10 pt
    assert not re.search(rb"(?<![\d.])(0?\.\d+|1) (0?\.\d+|1) (0?\.\d+|1) rg", content)
    assert "LiberationSerif" in font or "TimesNewRoman" in font
    assert Path(find_font(SigningConfig())).suffix == ".ttf"
    with pikepdf.open(out) as pdf:
        assert pdf.Root.AcroForm.Fields[0].V.SubFilter == "/ETSI.CAdES.detached"  # PAdES
    [verdict] = validate([out])
    assert verdict.compliant, verdict.summary()


def test_missing_expired_or_locked_keys_are_clear_errors_and_write_nothing(material) -> None:
    src, out = material["pdfa"], material["dir"] / "refused" / "H01.1.05.001.pdf"
    with pytest.raises(SigningError, match="Chưa cấu hình khóa ký số"):
        load_key(SigningConfig(body_name=BODY))
    with pytest.raises(SigningError, match="Không đọc được tệp khóa"):
        load_key(_cfg(material["dir"] / "khong-co.p12"))
    with pytest.raises(SigningError, match="đã hết hạn"):
        load_key(_cfg(material["expired"].p12))
    wrong = SigningConfig(body_name=BODY, pkcs12_path=material["ca"].p12,
                          pkcs12_passphrase=SecretStr("sai"))
    with pytest.raises(SigningError, match="sai mật khẩu"):
        load_key(wrong)
    key = load_key(_cfg(material["ca"].p12))
    with pytest.raises(SigningError, match="tên cơ quan số hóa"):
        sign_pdf(src, out, key, _cfg(material["ca"].p12, body_name=" "))
    assert not out.parent.exists() or not list(out.parent.iterdir())


def test_tampered_copies_fail_the_signature_check(material) -> None:
    ca = material["ca"]
    out = material["dir"] / "t" / "a.pdf"
    sign_pdf(material["pdfa"], out, load_key(_cfg(ca.p12)), _cfg(ca.p12))
    data = bytearray(out.read_bytes())
    flipped = out.with_name("flipped.pdf")
    at = data.index(b"stream", len(data) // 4) + 40      # inside a signed stream
    data[at] ^= 0xFF
    flipped.write_bytes(bytes(data))
    assert any("nguyên vẹn" in f or "không đọc" in f for f in check_signature(flipped,
                                                                               [ca.root_pem]))
    appended = out.with_name("appended.pdf")
    with pikepdf.open(out) as pdf:                       # an edit saved after signing
        pdf.Root.Lang = pikepdf.String("en")
        pdf.save(appended)
    assert check_signature(appended, [ca.root_pem])      # rewritten: the signature breaks
    assert check_signature(material["pdfa"], [ca.root_pem]) == ["không có chữ ký số"]
    other = make_ca(material["dir"] / "other")
    assert any("không được tin cậy" in f for f in check_signature(out, [other.root_pem]))


@pytest.mark.skipif(not SOFTHSM_LIB.exists() or not shutil.which("softhsm2-util"),
                    reason="softhsm2 not installed (infra/install-system-deps.sh)")
def test_signing_with_a_pkcs11_token(material, monkeypatch) -> None:
    ca = make_ca(material["dir"] / "token-ca")
    env = softhsm_token(material["dir"] / "hsm", ca)
    monkeypatch.setenv("SOFTHSM2_CONF", env["SOFTHSM2_CONF"])
    cfg = SigningConfig(body_name=BODY, pkcs11_lib=SOFTHSM_LIB, pkcs11_token_label="sohoa-test",
                        pkcs11_pin=SecretStr("123456"), pkcs11_key_label="ky-so",
                        pkcs11_cert_label="ky-so")
    key = load_key(cfg)
    try:
        out = material["dir"] / "p11" / "H01.1.05.002.pdf"
        sign_pdf(material["pdfa"], out, key, cfg)
    finally:
        key.close()
    assert check_signature(out, [ca.root_pem]) == []
    [verdict] = validate([out])
    assert verdict.compliant, verdict.summary()
    bad_pin = cfg.model_copy(update={"pkcs11_pin": SecretStr("000000")})
    with pytest.raises(SigningError, match="Không mở được token"):
        load_key(bad_pin)
