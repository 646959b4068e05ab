"""METS, EAD and PREMIS validated against the XSDs shipped in ``deliver/schemas`` — never
fetched: the schemas' remote imports (XLink, xml.xsd) resolve to the local copies and any
other address is refused."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from lxml import etree

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
VOCABULARY_DIR = SCHEMA_DIR / "vocabularies"
# What a package's schemas/ folder holds (copied from SCHEMA_DIR).
PACKAGE_SCHEMAS = ("mets.xsd", "xlink.xsd", "xml.xsd", "DILCISExtensionMETS.xsd",
                   "ead2002.xsd", "premis.xsd")
_REMOTE = {
    "http://www.loc.gov/standards/xlink/xlink.xsd": "xlink.xsd",
    "http://www.w3.org/1999/xlink.xsd": "xlink.xsd",
    "http://www.w3.org/2001/03/xml.xsd": "xml.xsd",
    "http://www.w3.org/2001/xml.xsd": "xml.xsd",
}
ROOTS = {"mets": "mets.xsd", "ead": "ead2002.xsd", "premis": "premis.xsd"}


class _Local(etree.Resolver):
    def resolve(self, url, pubid, context):  # type: ignore[override]
        name = _REMOTE.get(url) or (Path(url).name if url and "://" not in url else None)
        if name and (SCHEMA_DIR / name).is_file():
            return self.resolve_filename(str(SCHEMA_DIR / name), context)
        raise etree.XMLSchemaParseError(f"refused to fetch {url!r}: schemas are local only")


@cache
def schema(name: str) -> etree.XMLSchema:
    parser = etree.XMLParser(no_network=True, resolve_entities=False)
    parser.resolvers.add(_Local())
    doc = etree.parse(str(SCHEMA_DIR / name), parser)
    return etree.XMLSchema(doc)


def validate(data: bytes, kind: str) -> list[str]:
    """Schema errors of an XML document of ``kind`` (mets | ead | premis), as
    'line N: message'."""
    try:
        doc = etree.fromstring(data, etree.XMLParser(no_network=True, resolve_entities=False))
    except etree.XMLSyntaxError as exc:
        return [f"không phải XML hợp lệ: {exc}"]
    xsd = schema(ROOTS[kind])
    if xsd.validate(doc):
        return []
    return [f"dòng {e.line}: {e.message}" for e in xsd.error_log]
