"""An official document as DOCX (python-docx) the office can edit before signing: Times New
Roman, A4 portrait with margins 20/20/30/15 mm, the heading in a borderless two-column table,
real Word tables whose header row repeats on every page, page numbers from page 2 at the top
centre, the appendix in a landscape section."""

from __future__ import annotations

import io
from pathlib import Path
from xml.sax.saxutils import escape

from docx import Document
from docx.enum.section import WD_ORIENT, WD_SECTION
from docx.enum.table import WD_TABLE_ALIGNMENT
from docx.enum.text import WD_ALIGN_PARAGRAPH
from docx.oxml import OxmlElement, parse_xml
from docx.oxml.ns import nsdecls, qn
from docx.shared import Cm, Mm, Pt, Twips

from consumers.official.fonts import DOCX_FONT, text_width_pt
from consumers.official.form import PARTY_TITLE, STATE_MOTTO
from consumers.official.model import Chart, OfficialDoc, Para, SignBlock, Table, show

ALIGN = {"left": WD_ALIGN_PARAGRAPH.LEFT, "center": WD_ALIGN_PARAGRAPH.CENTER,
         "right": WD_ALIGN_PARAGRAPH.RIGHT, "justify": WD_ALIGN_PARAGRAPH.JUSTIFY}
PORTRAIT_TEXT_MM = 210 - 30 - 15
LANDSCAPE_TEXT_MM = 297 - 20 - 15


def _para(container, text: str, size: float, *, bold: bool = False, italic: bool = False,
          align: str = "center", underline: bool = False, indent_cm: float = 0.0,
          space_after: float = 0.0):
    p = container.add_paragraph()
    p.alignment = ALIGN[align]
    fmt = p.paragraph_format
    fmt.space_before = Pt(0)
    fmt.space_after = Pt(space_after)
    if indent_cm:
        fmt.first_line_indent = Cm(indent_cm)
    run = p.add_run(text)
    run.font.size = Pt(size)
    run.bold = bold
    run.italic = italic
    run.underline = underline
    return p


def _rule(container, length_pt: float, avail_pt: float) -> None:
    """A centred rule ``length_pt`` long: a tiny paragraph's bottom border, its indents taking
    the rest of ``avail_pt`` (Word then draws a line exactly that long, and it stays editable)."""
    p = container.add_paragraph()
    side = max(0.0, (avail_pt - length_pt) / 2)
    fmt = p.paragraph_format
    fmt.left_indent = Pt(side)
    fmt.right_indent = Pt(side)
    fmt.space_before = Pt(0)
    fmt.space_after = Pt(4)
    fmt.line_spacing = Pt(2)
    p_pr = p._p.get_or_add_pPr()
    borders = OxmlElement("w:pBdr")
    bottom = OxmlElement("w:bottom")
    for k, v in (("w:val", "single"), ("w:sz", "6"), ("w:space", "1"), ("w:color", "auto")):
        bottom.set(qn(k), v)
    borders.append(bottom)
    p_pr.append(borders)


def _no_borders(table) -> None:
    """A layout table: no borders and no cell margins (the heading's lines must fit)."""
    tbl_pr = table._tbl.tblPr
    borders = OxmlElement("w:tblBorders")
    for edge in ("top", "left", "bottom", "right", "insideH", "insideV"):
        el = OxmlElement(f"w:{edge}")
        el.set(qn("w:val"), "nil")
        borders.append(el)
    tbl_pr.append(borders)
    margins = OxmlElement("w:tblCellMar")
    for side in ("left", "right"):
        el = OxmlElement(f"w:{side}")
        el.set(qn("w:w"), "0")
        el.set(qn("w:type"), "dxa")
        margins.append(el)
    tbl_pr.append(margins)


def _heading(doc, d: OfficialDoc) -> None:
    h = d.heading
    party = h.form == "party"
    left_mm, right_mm = PORTRAIT_TEXT_MM * 0.45, PORTRAIT_TEXT_MM * 0.55
    t = doc.add_table(rows=1, cols=2)
    _no_borders(t)
    t.autofit = False
    left, right = t.rows[0].cells
    left.width, right.width = Mm(left_mm), Mm(right_mm)
    left._tc.remove(left.paragraphs[0]._p)
    right._tc.remove(right.paragraphs[0]._p)
    size = 14 if party else 12
    if h.parent:
        _para(left, h.parent, size)
    _para(left, h.issuer, size, bold=True)
    if party:
        _para(left, "*", size, bold=True)
    else:
        _rule(left, min(left_mm * 2.835 * 0.5, text_width_pt(h.issuer, 12, True) * 0.4),
              left_mm * 2.835)
    _para(left, h.number_line, 14 if party else 13)
    if party:
        _para(right, PARTY_TITLE, 15, bold=True)
        _rule(right, text_width_pt(PARTY_TITLE, 15, True), right_mm * 2.835)
        _para(right, h.place_date, 14, italic=True)
    else:
        _para(right, STATE_MOTTO[0], 12, bold=True)
        _para(right, STATE_MOTTO[1], 13, bold=True)
        _rule(right, text_width_pt(STATE_MOTTO[1], 13, True), right_mm * 2.835)
        _para(right, h.place_date, 13, italic=True)
    _para(doc, "", 8)
    _para(doc, h.doc_type, 16 if party else 14, bold=True)
    _para(doc, h.summary, 14, bold=True)
    if party:
        _para(doc, "-----", 14)
    else:
        avail = PORTRAIT_TEXT_MM * 2.835
        _rule(doc, min(avail * 0.5, text_width_pt(h.summary, 14, True) * 0.4) or 60, avail)
    _para(doc, "", 6)


def _tc(text: str, width: int, size_pt: float, *, bold: bool = False, align: str = "left",
        red: bool = False, fill: str | None = None) -> str:
    """One table cell as WordprocessingML (rows are written as text and parsed once per
    table: python-docx's element API is slow per row, and a province's table has thousands)."""
    props = f'<w:tcW w:w="{width}" w:type="dxa"/>'
    if fill:
        props += f'<w:shd w:val="clear" w:color="auto" w:fill="{fill}"/>'
    run = ("<w:b/>" if bold else "") + ('<w:color w:val="C00000"/>' if red else "") + \
        f'<w:sz w:val="{round(size_pt * 2)}"/>'
    return (f"<w:tc><w:tcPr>{props}</w:tcPr><w:p><w:pPr><w:spacing w:after=\"0\"/>"
            f'<w:jc w:val="{align}"/></w:pPr><w:r><w:rPr>{run}</w:rPr>'
            f'<w:t xml:space="preserve">{escape(text)}</w:t></w:r></w:p></w:tc>')


def _table(doc, t: Table, text_mm: float) -> None:
    t = t.printed()
    if t.caption:
        _para(doc, t.caption, 12, bold=True, space_after=4).paragraph_format.keep_with_next = True
    table = doc.add_table(rows=0, cols=len(t.columns))
    table.style = "Table Grid"
    table.alignment = WD_TABLE_ALIGNMENT.CENTER
    total = sum(c.width for c in t.columns)
    widths = [round(text_mm * 56.7 * c.width / total) for c in t.columns]  # twips
    for col, w in zip(table.columns, widths, strict=True):
        col.width = Twips(w)
    size = t.font_pt
    rows = ["<w:tr><w:trPr><w:tblHeader/></w:trPr>" + "".join(
        _tc(c.title, w, size, bold=True, align="center", fill="DDEBF7")
        for c, w in zip(t.columns, widths, strict=True)) + "</w:tr>"]
    last = len(t.columns) - 1
    for r in t.rows:
        values = r.values + [""] * (len(widths) - len(r.values))
        strong = r.style in ("subtotal", "total", "group")
        rows.append("<w:tr>" + "".join(
            _tc(show(v, c.kind), w, size, bold=strong,
                align="left" if c.kind == "text" else "right", red=r.emphasis and i == last,
                fill="F2F2F2" if r.style in ("subtotal", "total") else None)
            for i, (c, v, w) in enumerate(zip(t.columns, values, widths, strict=True)))
            + "</w:tr>")
    body = parse_xml(f"<w:tbl {nsdecls('w')}>{''.join(rows)}</w:tbl>")
    for tr in list(body):
        table._tbl.append(tr)
    for n in t.notes:
        _para(doc, n, 11, italic=True, align="justify")
    _para(doc, "", 6)


def _blocks(doc, blocks, text_mm: float) -> None:
    for b in blocks:
        if isinstance(b, Para):
            if b.style == "body":
                _para(doc, b.text, 13, align="justify", indent_cm=1.0, space_after=4)
            elif b.style == "heading":
                head = _para(doc, b.text, 13, bold=True, align="left", space_after=3)
                head.paragraph_format.keep_with_next = True
            elif b.style == "caption":
                _para(doc, b.text, 12, bold=True, space_after=4)
            elif b.style == "note":
                _para(doc, b.text, 11, italic=True, align="justify", space_after=2)
            else:
                _para(doc, b.text, 12, italic=True)
        elif isinstance(b, Table):
            _table(doc, b, text_mm)
        elif isinstance(b, Chart):
            if b.caption:
                cap = _para(doc, b.caption, 12, bold=True, space_after=4)
                cap.paragraph_format.keep_with_next = True
            doc.add_picture(io.BytesIO(b.png), width=Cm(min(b.width_cm, text_mm / 10)))
            doc.paragraphs[-1].alignment = WD_ALIGN_PARAGRAPH.CENTER


def _sign(cell, sb: SignBlock) -> None:
    for line in sb.lines:
        _para(cell, line, 13, bold=True)
    if sb.hint:
        _para(cell, sb.hint, 12, italic=True)
    for _ in range(4):
        _para(cell, "", 13)
    _para(cell, sb.name, 13, bold=True)


def _closing(doc, d: OfficialDoc) -> None:
    party = d.heading.form == "party"
    t = doc.add_table(rows=1, cols=2)
    _no_borders(t)
    left, right = t.rows[0].cells
    for c in (left, right):
        c._tc.remove(c.paragraphs[0]._p)
    if len(d.signatures) >= 2:
        left.width = right.width = Mm(PORTRAIT_TEXT_MM / 2)
        _sign(left, d.signatures[0])
        _sign(right, d.signatures[1])
        return
    left.width, right.width = Mm(PORTRAIT_TEXT_MM * 0.45), Mm(PORTRAIT_TEXT_MM * 0.55)
    if d.recipients is not None:
        if party:
            _para(left, d.recipients_title, 14, underline=True, align="left")
        else:
            _para(left, d.recipients_title, 12, bold=True, italic=True, align="left")
        for r in d.recipients:
            _para(left, r, 12 if party else 11, align="left")
    else:
        _para(left, "", 11)
    if d.signatures:
        _sign(right, d.signatures[0])
    else:
        _para(right, "", 11)


def _page_number(section) -> None:
    """Page numbers from page 2, top centre: the PAGE field in the header, none on page 1."""
    section.different_first_page_header_footer = True
    p = section.header.paragraphs[0]
    p.alignment = WD_ALIGN_PARAGRAPH.CENTER
    run = p.add_run()
    run.font.size = Pt(13)
    for kind, text in (("begin", None), (None, "PAGE"), ("end", None)):
        if kind:
            el = OxmlElement("w:fldChar")
            el.set(qn("w:fldCharType"), kind)
        else:
            el = OxmlElement("w:instrText")
            el.set(qn("xml:space"), "preserve")
            el.text = text
        run._r.append(el)


def write_docx(d: OfficialDoc, out: Path) -> Path:
    doc = Document()
    normal = doc.styles["Normal"]
    normal.font.name = DOCX_FONT
    normal.font.size = Pt(13)
    normal.element.rPr.rFonts.set(qn("w:eastAsia"), DOCX_FONT)
    normal.paragraph_format.space_after = Pt(0)
    sec = doc.sections[0]
    sec.page_width, sec.page_height = Mm(210), Mm(297)
    sec.top_margin, sec.bottom_margin = Mm(20), Mm(20)
    sec.left_margin, sec.right_margin = Mm(30), Mm(15)
    _page_number(sec)
    doc.core_properties.title = d.title
    doc.core_properties.author = d.heading.issuer
    doc.core_properties.language = "vi-VN"
    _heading(doc, d)
    _blocks(doc, d.body, PORTRAIT_TEXT_MM)
    _closing(doc, d)
    if d.appendix:
        land = doc.add_section(WD_SECTION.NEW_PAGE)
        land.orientation = WD_ORIENT.LANDSCAPE
        land.page_width, land.page_height = Mm(297), Mm(210)
        land.left_margin, land.right_margin = Mm(20), Mm(15)
        land.top_margin, land.bottom_margin = Mm(30), Mm(15)
        land.different_first_page_header_footer = False
        if d.appendix_title:
            _para(doc, d.appendix_title, 14, bold=True, space_after=6)
        _blocks(doc, d.appendix, LANDSCAPE_TEXT_MM)
    doc.save(str(out))
    return out
