"""Helpers of the deliverable tests: a CA the tests create, PDF/A inputs, SoftHSM2 tokens."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

BODY = "Trung tâm Lưu trữ lịch sử tỉnh Thử nghiệm"
PASSPHRASE = "mat-khau-thu"
SOFTHSM_LIB = Path("/usr/lib/softhsm/libsofthsm2.so")


@dataclass
class TestCA:
    root_pem: Path
    p12: Path
    cert: x509.Certificate
    key: rsa.RSAPrivateKey
    cert_pem: Path
    key_pem: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, BODY),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(directory: Path, *, valid_days: int = 365, expired: bool = False,
            name: str = "ky-so") -> TestCA:
    """A root CA and a signing certificate it issues (expired on request), as PEM and a
    PKCS#12 file protected by :data:`PASSPHRASE`."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root = (x509.CertificateBuilder().subject_name(_name("CA thử nghiệm"))
            .issuer_name(_name("CA thử nghiệm")).public_key(root_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=800)).not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(root_key, hashes.SHA256()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    start = now - timedelta(days=400 if expired else 1)
    end = now - timedelta(days=30) if expired else now + timedelta(days=valid_days)
    cert = (x509.CertificateBuilder().subject_name(_name(BODY)).issuer_name(root.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                           critical=False)
            .sign(root_key, hashes.SHA256()))
    root_pem = directory / "ca.pem"
    root_pem.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    p12 = directory / f"{name}.p12"
    p12.write_bytes(pkcs12.serialize_key_and_certificates(
        name.encode(), key, cert, [root],
        serialization.BestAvailableEncryption(PASSPHRASE.encode())))
    cert_pem = directory / f"{name}.crt.pem"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem = directory / f"{name}.key.pem"
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return TestCA(root_pem, p12, cert, key, cert_pem, key_pem)


def make_pdfa(path: Path, pages: int = 1, *, size_px: tuple[int, int] = (620, 877),
              dpi: int = 150) -> Path:
    """A small image-only PDF/A-2b made by ocrmypdf (OCR skipped: the signing tests need a
    PDF/A, not its text)."""
    import ocrmypdf
    from PIL import Image, ImageDraw

    path.parent.mkdir(parents=True, exist_ok=True)
    frames = []
    for n in range(pages):
        img = Image.new("RGB", size_px, (250, 248, 240))
        d = ImageDraw.Draw(img)
        d.rectangle((40, 200 + n * 10, size_px[0] - 40, 240 + n * 10), fill=(20, 20, 20))
        frames.append(img)
    src = path.with_suffix(".src.pdf")
    frames[0].save(src, "PDF", resolution=dpi, save_all=True, append_images=frames[1:])
    ocrmypdf.ocr(src, path, output_type="pdfa-2", tesseract_timeout=0, progress_bar=False,
                 optimize=0, language=["eng"])
    src.unlink()
    return path


def softhsm_token(directory: Path, ca: TestCA, label: str = "sohoa-test",
                  pin: str = "123456") -> dict[str, str]:
    """A SoftHSM2 token holding ``ca``'s key and certificate; returns the environment
    (SOFTHSM2_CONF) that makes the library find it."""
    tokens = directory / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    conf = directory / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n"
                    "log.level = ERROR\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    util = shutil.which("softhsm2-util")
    assert util, "softhsm2 not installed (infra/install-system-deps.sh)"
    subprocess.run([util, "--init-token", "--free", "--label", label, "--pin", pin,
                    "--so-pin", "654321"], check=True, env=env, capture_output=True)
    subprocess.run([util, "--import", str(ca.key_pem), "--token", label, "--label", "ky-so",
                    "--id", "01", "--pin", pin], check=True, env=env, capture_output=True)
    _import_cert(ca, label, pin, env)
    return {"SOFTHSM2_CONF": str(conf)}


def _import_cert(ca: TestCA, label: str, pin: str, env: dict[str, str]) -> None:
    """The certificate object beside the key, through python-pkcs11 (softhsm2-util imports
    keys only)."""
    import pkcs11
    from pkcs11 import Attribute, CertificateType, ObjectClass

    old = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = env["SOFTHSM2_CONF"]
    try:
        lib = pkcs11.lib(str(SOFTHSM_LIB))
        token = lib.get_token(token_label=label)
        with token.open(rw=True, user_pin=pin) as session:
            der = ca.cert.public_bytes(serialization.Encoding.DER)
            session.create_object({
                Attribute.CLASS: ObjectClass.CERTIFICATE,
                Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
                Attribute.TOKEN: True, Attribute.LABEL: "ky-so", Attribute.ID: b"\x01",
                Attribute.SUBJECT: ca.cert.subject.public_bytes(),
                Attribute.VALUE: der})
    finally:
        if old is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = old
