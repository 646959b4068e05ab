"""Official documents (văn bản) the office signs: one model, rendered to DOCX, PDF and XLSX.

- :mod:`.model`: the blocks of a document (heading, paragraphs, tables, chart, signatures);
- :mod:`.form`: the heading and signature wording of the issuing body's system, state
  (Nghị định 30/2020/NĐ-CP) or Party (Hướng dẫn 36-HD/VPTW);
- :mod:`.to_docx`, :mod:`.to_pdf`, :mod:`.to_xlsx`: the renderers.
"""

from consumers.official.model import (
    Block,
    Chart,
    Col,
    Heading,
    OfficialDoc,
    Para,
    Row,
    RowStyle,
    SignBlock,
    Table,
)

__all__ = ["Block", "Chart", "Col", "Heading", "OfficialDoc", "Para", "Row", "RowStyle",
           "SignBlock", "Table", "write"]


def write(doc: OfficialDoc, fmt: str, out):
    """Render ``doc`` as ``fmt`` (docx, pdf or xlsx) into ``out``; returns ``out``."""
    from pathlib import Path

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "docx":
        from consumers.official.to_docx import write_docx
        write_docx(doc, out)
    elif fmt == "pdf":
        from consumers.official.to_pdf import write_pdf
        write_pdf(doc, out)
    elif fmt == "xlsx":
        from consumers.official.to_xlsx import write_xlsx
        write_xlsx(doc, out)
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return out
