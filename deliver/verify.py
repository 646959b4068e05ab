"""`sohoa handover verify DIR`, as the receiving archive runs it: every fault named, none
fixed. Checks, in order: the hand-over's structure and every checksum of SHA256SUMS; inside
each package its folder tree (CSIP, Art. 17), METS/EAD/PREMIS against the shipped schemas,
every file METS lists present with its size and SHA-256 and every file listed; every
signature (pyHanko, against the trusted CA certificates); every PDF/A (veraPDF); and the
E-ARK CSIP validator."""

from __future__ import annotations

import hashlib
import json
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from lxml import etree

from deliver import csip
from deliver.handover import (
    CATALOGUE_NAME,
    LIST_NAME,
    MINUTES_DOCX,
    MINUTES_PDF,
    PACKAGES_DIR,
    SUMS_NAME,
)
from deliver.ipxml import METS, XLINK, q
from deliver.signing import check_signature
from deliver.xmlcheck import validate
from sohoa.hashing import file_sha256


@dataclass
class Report:
    faults: list[str] = field(default_factory=list)
    packages: dict[str, list[str]] = field(default_factory=dict)   # zip name -> its faults
    checked_pdfs: int = 0

    def fault(self, where: str, what: str, package: str | None = None) -> None:
        self.faults.append(f"{where}: {what}")
        if package is not None:
            self.packages.setdefault(package, []).append(what)

    @property
    def ok(self) -> bool:
        return not self.faults


def verify(root: Path, trust_roots: list[Path], *, run_verapdf: bool = True,
           run_csip: bool = True) -> Report:
    rep = Report()
    sums = root / SUMS_NAME
    for name in (SUMS_NAME, LIST_NAME, CATALOGUE_NAME, MINUTES_DOCX, MINUTES_PDF):
        if not (root / name).is_file():
            rep.fault(name, "thiếu tệp bắt buộc của hồ sơ bàn giao")
    listed = _check_sums(root, sums, rep) if sums.is_file() else {}
    zips = sorted((root / PACKAGES_DIR).glob("*.zip"))
    if not zips:
        rep.fault(PACKAGES_DIR, "không có gói tin nào")
    for z in zips:
        rep.packages.setdefault(z.name, [])
        if f"{PACKAGES_DIR}/{z.name}" not in listed:
            rep.fault(z.name, "gói không có trong SHA256SUMS", z.name)
    if (root / LIST_NAME).is_file():
        _check_list(root, zips, rep)
    with tempfile.TemporaryDirectory(prefix="sohoa-verify-") as tmp:
        pdfs: list[tuple[str, Path]] = []
        for z in zips:
            pdfs += _check_package(z, Path(tmp), trust_roots, rep)
        if run_verapdf and pdfs:
            from infra.verapdf import validate as verapdf

            for (pkg, p), v in zip(pdfs, verapdf([p for _, p in pdfs]), strict=True):
                if not v.compliant:
                    rep.fault(f"{pkg}/{p.name}", "không đạt PDF/A-2b (veraPDF): "
                              + (v.error or "; ".join(v.failed_rules[:3])), pkg)
        rep.checked_pdfs = len(pdfs)
    if run_csip and zips:
        for z, found in csip.check(zips).items():
            for f in found:
                rep.fault(z.name, f"E-ARK CSIP: {f}", z.name)
    return rep


def _check_sums(root: Path, sums: Path, rep: Report) -> dict[str, str]:
    listed: dict[str, str] = {}
    for n, line in enumerate(sums.read_text(encoding="utf-8").splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or PurePosixPath(name).is_absolute() or ".." in name:
            rep.fault(SUMS_NAME, f"dòng {n} không hợp lệ")
            continue
        listed[name] = digest
        path = root / name
        pkg = PurePosixPath(name).name if name.startswith(f"{PACKAGES_DIR}/") else None
        if not path.is_file():
            rep.fault(name, "có trong SHA256SUMS nhưng không có tệp", pkg)
        elif file_sha256(path) != digest:
            rep.fault(name, "SHA-256 không khớp SHA256SUMS (tệp đã bị thay đổi)", pkg)
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel != SUMS_NAME and rel not in listed:
            rep.fault(rel, "tệp không có trong SHA256SUMS")
    return listed


def _check_list(root: Path, zips: list[Path], rep: Report) -> None:
    try:
        data = json.loads((root / LIST_NAME).read_text(encoding="utf-8"))
        names = {p["package"] for p in data["packages"]}
    except (ValueError, KeyError, TypeError) as exc:
        rep.fault(LIST_NAME, f"không đọc được danh sách gói ({exc})")
        return
    for z in zips:
        if z.name not in names:
            rep.fault(z.name, f"gói không có trong {LIST_NAME}", z.name)
    for n in sorted(names - {z.name for z in zips}):
        rep.fault(n, f"có trong {LIST_NAME} nhưng thiếu gói")


def _check_package(z: Path, tmp: Path, trust_roots: list[Path],
                   rep: Report) -> list[tuple[str, Path]]:
    name = z.name

    def fault(what: str) -> None:
        rep.fault(name, what, name)

    try:
        zf = zipfile.ZipFile(z)
    except (zipfile.BadZipFile, OSError) as exc:
        fault(f"không mở được tệp ZIP ({exc})")
        return []
    with zf:
        try:
            bad = zf.testzip()
        except Exception as exc:  # some corruptions raise instead of naming the member
            fault(f"ZIP hỏng ({exc})")
            return []
        if bad:  # the bytes of a member changed: nothing else in it can be trusted
            fault(f"tệp hỏng trong ZIP (CRC sai): {bad}")
            return []
        pid = z.stem
        members = {i.filename: i for i in zf.infolist() if not i.is_dir()}
        if any(not m.startswith(f"{pid}/") or ".." in PurePosixPath(m).parts for m in members):
            fault(f"mọi tệp phải nằm trong thư mục gốc {pid}/")
        files = {m[len(pid) + 1:]: m for m in members if m.startswith(f"{pid}/")}
        aip = pid.startswith("AIP_")
        required = ["METS.xml", "metadata/descriptive/EAD.xml"]
        if aip:
            required += ["metadata/preservation/PREMIS.xml",
                         "representations/rep1/metadata/preservation/PREMIS_rep1.xml"]
        for r in required:
            if r not in files:
                fault(f"thiếu {r}")
        if not any(f.startswith("representations/rep1/data/") for f in files):
            fault("thiếu representations/rep1/data/")
        if not any(f.startswith("schemas/") for f in files):
            fault("thiếu schemas/")
        if not aip and any(PurePosixPath(f).name.startswith("PREMIS") for f in files):
            fault("gói SIP không mang PREMIS")
        for path, kind in (("METS.xml", "mets"), ("metadata/descriptive/EAD.xml", "ead"),
                           ("metadata/preservation/PREMIS.xml", "premis"),
                           ("representations/rep1/metadata/preservation/PREMIS_rep1.xml",
                            "premis")):
            if path in files:
                for e in validate(zf.read(files[path]), kind)[:5]:
                    fault(f"{path} sai lược đồ: {e}")
        if "METS.xml" in files:
            _check_mets(zf, files, fault)
        out: list[tuple[str, Path]] = []
        for f, member in sorted(files.items()):
            if f.startswith("representations/rep1/data/") and f.endswith(".pdf"):
                dst = tmp / pid / PurePosixPath(f).name
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_bytes(zf.read(member))
                for s in check_signature(dst, trust_roots):
                    fault(f"{f}: chữ ký số: {s}")
                out.append((name, dst))
        return out


def _check_mets(zf: zipfile.ZipFile, files: dict[str, str], fault) -> None:
    try:
        root = etree.fromstring(zf.read(files["METS.xml"]),
                                etree.XMLParser(no_network=True, resolve_entities=False))
    except etree.XMLSyntaxError as exc:
        fault(f"METS.xml không đọc được ({exc})")
        return
    referenced: set[str] = set()
    entries = [(el, el.find(q(METS, "FLocat"))) for el in root.iter(q(METS, "file"))]
    entries += [(el, el) for el in root.iter(q(METS, "mdRef"))]
    for el, loc in entries:
        href = loc.get(q(XLINK, "href")) if loc is not None else None
        ident = el.get("ID") or href or "?"
        if not href:
            fault(f"METS: {ident} không có đường dẫn (xlink:href)")
            continue
        referenced.add(href)
        for attr in ("SIZE", "CHECKSUM", "CHECKSUMTYPE", "MIMETYPE"):
            if not el.get(attr):
                fault(f"METS: {href} thiếu thuộc tính {attr}")
        if el.get("CHECKSUMTYPE") not in (None, "SHA-256"):
            fault(f"METS: {href} CHECKSUMTYPE phải là SHA-256")
        if href not in files:
            fault(f"METS liệt kê {href} nhưng gói không có")
            continue
        data = zf.read(files[href])
        if el.get("SIZE") and el.get("SIZE") != str(len(data)):
            fault(f"{href}: kích thước khác METS ({len(data)} ≠ {el.get('SIZE')})")
        if el.get("CHECKSUM") and hashlib.sha256(data).hexdigest() != el.get("CHECKSUM"):
            fault(f"{href}: SHA-256 khác METS (tệp đã bị thay đổi hoặc bị thay)")
    for f in files:
        if f != "METS.xml" and f not in referenced:
            fault(f"{f} có trong gói nhưng METS không liệt kê")
