"""The XML of a package: METS (E-ARK CSIP 2.0.4), EAD 2002 with the Vietnamese descriptive
metadata, PREMIS 3.0 (package level and representation level). Each builder returns bytes;
:mod:`deliver.xmlcheck` validates them against the schemas shipped in ``deliver/schemas``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lxml import etree

from sohoa import __version__
from sohoa.metadata import DocumentRecord, FileRecord

METS = "http://www.loc.gov/METS/"
XLINK = "http://www.w3.org/1999/xlink"
CSIP = "https://DILCIS.eu/XML/METS/CSIPExtensionMETS"
EAD = "urn:isbn:1-931666-22-9"
PREMIS = "http://www.loc.gov/premis/v3"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
CSIP_PROFILE = "https://earkcsip.dilcis.eu/profile/E-ARK-CSIP.xml"
SIP_PROFILE = "https://earksip.dilcis.eu/profile/E-ARK-SIP.xml"
CONTENT_CATEGORY = "Textual works – Digital"     # CSIP vocabulary (an en dash, as published)
OTHER_CONTENT_TYPE = "VN TT 05/2025/TT-BNV hồ sơ số hóa"
PDFA2B_PRONOM = "fmt/477"                         # PRONOM: PDF/A-2b


def q(ns: str, tag: str) -> str:
    return f"{{{ns}}}{tag}"


@dataclass(frozen=True)
class PackedFile:
    """A file inside the package: its path there, size, SHA-256, media type, time."""

    path: str
    size: int
    sha256: str
    mimetype: str
    created: datetime
    xml_id: str


@dataclass(frozen=True)
class DocumentEntry:
    """A digitized document in the package (its signed copy) and what made it."""

    name: str                 # the document in the site's file folder
    number: int
    file: PackedFile          # the signed copy
    record: DocumentRecord
    arc_doc_code: str
    source_sha256: list[str]  # the scanned pages' content digests, in order
    signed_at: datetime


@dataclass(frozen=True)
class PremisEvent:
    xml_id: str
    type: str                 # id.loc.gov event type, e.g. "capture"
    at: datetime
    detail: str               # Vietnamese
    outcome: str              # "success"
    agents: list[str]         # agent xml ids
    objects: list[str]        # object identifiers


@dataclass(frozen=True)
class PremisAgent:
    xml_id: str
    name: str
    type: str                 # "organization" | "software" | "person"
    note: str = ""


def _iso(dt: datetime) -> str:
    return dt.isoformat(timespec="seconds")


def _xml(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


# --- EAD ---------------------------------------------------------------------------------------

def ead(record: FileRecord, arc_file_code: str, docs: list[DocumentEntry], *,
        package_id: str, repository: str) -> bytes:
    E = _maker(EAD)
    root = etree.Element(q(EAD, "ead"), nsmap={None: EAD, "xlink": XLINK, "xsi": XSI})
    root.set(q(XSI, "schemaLocation"), f"{EAD} ../../schemas/ead2002.xsd")
    header = etree.SubElement(root, q(EAD, "eadheader"), langencoding="iso639-2b",
                              countryencoding="iso3166-1", dateencoding="iso8601",
                              repositoryencoding="iso15511", scriptencoding="iso15924")
    header.append(E("eadid", package_id, countrycode="VN"))
    header.append(E("filedesc", E("titlestmt", E("titleproper", record.tieu_de or ""))))
    header.append(E("profiledesc", E("langusage", E("language", "Tiếng Việt",
                                                     langcode="vie", scriptcode="Latn"))))
    arch = etree.SubElement(root, q(EAD, "archdesc"), level="file")
    did = etree.SubElement(arch, q(EAD, "did"))
    did.append(E("unitid", arc_file_code, type="arcFileCode"))
    did.append(E("unitid", record.ma_ho_so or "", type="ma_ho_so"))
    did.append(E("unittitle", record.tieu_de or ""))
    if record.thoi_gian_bat_dau and record.thoi_gian_ket_thuc:
        did.append(E("unitdate", f"{record.thoi_gian_bat_dau:%d/%m/%Y} - "
                                 f"{record.thoi_gian_ket_thuc:%d/%m/%Y}",
                     normal=f"{record.thoi_gian_bat_dau.isoformat()}/"
                            f"{record.thoi_gian_ket_thuc.isoformat()}"))
    did.append(E("physdesc", *_extents(record)))
    did.append(E("langmaterial", record.ngon_ngu or ""))
    if repository:
        did.append(E("repository", E("corpname", repository)))
    arch.append(E("accessrestrict", E("head", "Chế độ sử dụng"), E("p", record.che_do_su_dung
                                                                    or "")))
    arch.append(E("appraisal", E("head", "Thời hạn bảo quản"),
                  E("p", record.thoi_han_bao_quan or "")))
    _odd_fields(arch, E, record)
    if record.tu_khoa:
        arch.append(E("controlaccess", E("subject", record.tu_khoa)))
    dsc = etree.SubElement(arch, q(EAD, "dsc"))
    for d in docs:
        r = d.record
        c = etree.SubElement(dsc, q(EAD, "c"), level="item", id=f"doc-{d.number:03d}")
        cdid = etree.SubElement(c, q(EAD, "did"))
        cdid.append(E("unitid", d.arc_doc_code, type="arcDocCode"))
        cdid.append(E("unittitle", r.trich_yeu or ""))
        if r.ngay:
            cdid.append(E("unitdate", f"{r.ngay:%d/%m/%Y}", normal=r.ngay.isoformat()))
        cdid.append(E("physdesc", E("extent", str(r.so_trang or ""), unit="trang"),
                      E("genreform", r.ten_loai or "")))
        if r.co_quan_ban_hanh:
            cdid.append(E("origination", E("corpname", r.co_quan_ban_hanh)))
        cdid.append(E("langmaterial", r.ngon_ngu or ""))
        dao = etree.SubElement(cdid, q(EAD, "dao"))
        dao.set(q(XLINK, "type"), "simple")
        dao.set(q(XLINK, "href"), f"../../{d.file.path}")
        _odd_fields(c, E, r)
    return _xml(root)


def _extents(record: FileRecord) -> list[etree._Element]:
    E = _maker(EAD)
    out = []
    for value, unit in ((record.tong_so_van_ban, "văn bản"), (record.so_luong_to, "tờ"),
                        (record.so_luong_trang, "trang")):
        if value is not None:
            out.append(E("extent", str(value), unit=unit))
    if record.tinh_trang_vat_ly:
        out.append(E("physfacet", record.tinh_trang_vat_ly, type="tinh_trang_vat_ly"))
    return out


def _odd_fields(parent: etree._Element, E: Any, record: Any) -> None:
    """Every field, labelled as the annex labels it, so no value is lost in the mapping."""
    for spec in record._specs():
        value = getattr(record, spec.key)
        if value is None:
            continue
        text = value.strftime("%d/%m/%Y") if hasattr(value, "strftime") else str(value)
        parent.append(E("odd", E("head", spec.label), E("p", text), type=spec.key))


def _maker(ns: str) -> Any:
    def make(tag: str, *children: Any, **attrs: str) -> etree._Element:
        el = etree.Element(q(ns, tag), **attrs)
        for ch in children:
            if isinstance(ch, str):
                el.text = (el.text or "") + ch
            else:
                el.append(ch)
        return el
    return make


# --- PREMIS ------------------------------------------------------------------------------------

def premis(objects: list[etree._Element], events: list[PremisEvent],
           agents: list[PremisAgent], schema_path: str) -> bytes:
    root = etree.Element(q(PREMIS, "premis"), version="3.0",
                         nsmap={None: PREMIS, "xsi": XSI, "xlink": XLINK})
    root.set(q(XSI, "schemaLocation"), f"{PREMIS} {schema_path}")
    for o in objects:
        root.append(o)
    P = _maker(PREMIS)
    for ev in events:
        el = P("event",
               P("eventIdentifier", P("eventIdentifierType", "local"),
                 P("eventIdentifierValue", ev.xml_id)),
               P("eventType", ev.type), P("eventDateTime", _iso(ev.at)),
               P("eventDetailInformation", P("eventDetail", ev.detail)),
               P("eventOutcomeInformation", P("eventOutcome", ev.outcome)))
        for agent_id in ev.agents:
            el.append(P("linkingAgentIdentifier", P("linkingAgentIdentifierType", "local"),
                        P("linkingAgentIdentifierValue", agent_id)))
        for o in ev.objects:
            el.append(P("linkingObjectIdentifier", P("linkingObjectIdentifierType", "local"),
                        P("linkingObjectIdentifierValue", o)))
        root.append(el)
    for a in agents:
        el = P("agent", P("agentIdentifier", P("agentIdentifierType", "local"),
                          P("agentIdentifierValue", a.xml_id)),
               P("agentName", a.name), P("agentType", a.type))
        if a.note:
            el.append(P("agentNote", a.note))
        root.append(el)
    return _xml(root)


def premis_file_object(identifier: str, f: PackedFile, original_name: str,
                       format_name: str, pronom: str | None) -> etree._Element:
    P = _maker(PREMIS)
    obj = etree.Element(q(PREMIS, "object"))
    obj.set(q(XSI, "type"), "file")
    obj.append(P("objectIdentifier", P("objectIdentifierType", "local"),
                 P("objectIdentifierValue", identifier)))
    fmt = P("format", P("formatDesignation", P("formatName", format_name)))
    if pronom:
        fmt.append(P("formatRegistry", P("formatRegistryName", "PRONOM"),
                     P("formatRegistryKey", pronom)))
    obj.append(P("objectCharacteristics", P("compositionLevel", "0"),
                 P("fixity", P("messageDigestAlgorithm", "SHA-256"),
                   P("messageDigest", f.sha256)),
                 P("size", str(f.size)), fmt))
    obj.append(P("originalName", original_name))
    return obj


def premis_entity_object(identifier: str, title: str, kind: str) -> etree._Element:
    P = _maker(PREMIS)
    obj = etree.Element(q(PREMIS, "object"))
    obj.set(q(XSI, "type"), kind)   # "intellectualEntity" | "representation"
    obj.append(P("objectIdentifier", P("objectIdentifierType", "local"),
                 P("objectIdentifierValue", identifier)))
    if kind == "intellectualEntity":
        obj.append(P("originalName", title))
    return obj


# --- METS --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MetsInput:
    package_id: str
    label: str
    kind: str                          # "AIP" | "SIP"
    created: datetime
    ead: PackedFile
    premis: list[PackedFile]           # package then representation level (none in a SIP)
    data: list[PackedFile]             # representations/rep1/data/...
    schemas: list[PackedFile]
    documentation: list[PackedFile]
    agency: str


def mets(m: MetsInput) -> bytes:
    nsmap = {None: METS, "xlink": XLINK, "csip": CSIP, "xsi": XSI}
    root = etree.Element(q(METS, "mets"), nsmap=nsmap)
    root.set("OBJID", m.package_id)
    root.set("LABEL", m.label)
    root.set("TYPE", CONTENT_CATEGORY)
    root.set(q(CSIP, "CONTENTINFORMATIONTYPE"), "OTHER")
    root.set(q(CSIP, "OTHERCONTENTINFORMATIONTYPE"), OTHER_CONTENT_TYPE)
    root.set("PROFILE", SIP_PROFILE if m.kind == "SIP" else CSIP_PROFILE)
    root.set(q(XSI, "schemaLocation"),
             f"{METS} schemas/mets.xsd {XLINK} schemas/xlink.xsd "
             f"{CSIP} schemas/DILCISExtensionMETS.xsd")
    hdr = etree.SubElement(root, q(METS, "metsHdr"), CREATEDATE=_iso(m.created),
                           LASTMODDATE=_iso(m.created), RECORDSTATUS="NEW")
    hdr.set(q(CSIP, "OAISPACKAGETYPE"), m.kind)
    agent = etree.SubElement(hdr, q(METS, "agent"), ROLE="CREATOR", TYPE="OTHER",
                             OTHERTYPE="SOFTWARE")
    etree.SubElement(agent, q(METS, "name")).text = "sohoa"
    note = etree.SubElement(agent, q(METS, "note"))
    note.text = __version__
    note.set(q(CSIP, "NOTETYPE"), "SOFTWARE VERSION")
    if m.agency:
        org = etree.SubElement(hdr, q(METS, "agent"), ROLE="ARCHIVIST", TYPE="ORGANIZATION")
        etree.SubElement(org, q(METS, "name")).text = m.agency

    dmd = etree.SubElement(root, q(METS, "dmdSec"), ID="dmd-ead", CREATED=_iso(m.created),
                           STATUS="CURRENT")
    _mdref(dmd, m.ead, "EAD")
    amd = None
    if m.premis:
        amd = etree.SubElement(root, q(METS, "amdSec"))
        for i, p in enumerate(m.premis):
            dp = etree.SubElement(amd, q(METS, "digiprovMD"), ID=f"premis-{i + 1}",
                                  CREATED=_iso(m.created), STATUS="CURRENT")
            _mdref(dp, p, "PREMIS")

    fsec = etree.SubElement(root, q(METS, "fileSec"), ID="filesec")
    for gid, use, files in (("grp-documentation", "Documentation", m.documentation),
                            ("grp-schemas", "Schemas", m.schemas),
                            ("grp-rep1", "Representations", m.data)):
        grp = etree.SubElement(fsec, q(METS, "fileGrp"), ID=gid, USE=use)
        if use == "Representations":
            grp.set(q(CSIP, "CONTENTINFORMATIONTYPE"), "OTHER")
            grp.set(q(CSIP, "OTHERCONTENTINFORMATIONTYPE"), OTHER_CONTENT_TYPE)
        for f in files:
            _file(grp, f)

    smap = etree.SubElement(root, q(METS, "structMap"), ID="structmap-csip", TYPE="PHYSICAL",
                            LABEL="CSIP")
    top = etree.SubElement(smap, q(METS, "div"), ID="div-root", LABEL=m.package_id)
    md = etree.SubElement(top, q(METS, "div"), ID="div-metadata", LABEL="Metadata",
                          DMDID="dmd-ead")
    if amd is not None:
        md.set("ADMID", " ".join(f"premis-{i + 1}" for i in range(len(m.premis))))
    for did, label, gid in (("div-documentation", "Documentation", "grp-documentation"),
                            ("div-schemas", "Schemas", "grp-schemas"),
                            ("div-representations", "Representations", "grp-rep1")):
        div = etree.SubElement(top, q(METS, "div"), ID=did, LABEL=label)
        etree.SubElement(div, q(METS, "fptr"), FILEID=gid)
    return _xml(root)


def _mdref(parent: etree._Element, f: PackedFile, mdtype: str) -> None:
    ref = etree.SubElement(parent, q(METS, "mdRef"), LOCTYPE="URL", MDTYPE=mdtype,
                           MIMETYPE=f.mimetype, SIZE=str(f.size), CREATED=_iso(f.created),
                           CHECKSUM=f.sha256, CHECKSUMTYPE="SHA-256")
    ref.set(q(XLINK, "type"), "simple")
    ref.set(q(XLINK, "href"), f.path)


def _file(grp: etree._Element, f: PackedFile) -> None:
    el = etree.SubElement(grp, q(METS, "file"), ID=f.xml_id, MIMETYPE=f.mimetype,
                          SIZE=str(f.size), CREATED=_iso(f.created), CHECKSUM=f.sha256,
                          CHECKSUMTYPE="SHA-256")
    loc = etree.SubElement(el, q(METS, "FLocat"), LOCTYPE="URL")
    loc.set(q(XLINK, "type"), "simple")
    loc.set(q(XLINK, "href"), f.path)
