"""An official document as PDF (reportlab): A4 portrait, margins 20/20/30/15 mm, the serif
of :mod:`.fonts`, sizes of Nghị định 30/2020 Phụ lục I (Party: Hướng dẫn 36-HD/VPTW), page
numbers from page 2 at the top centre; the appendix on landscape pages."""

from __future__ import annotations

import io
from pathlib import Path
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER, TA_JUSTIFY, TA_LEFT
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import cm, mm
from reportlab.platypus import (
    BaseDocTemplate,
    Flowable,
    Frame,
    Image,
    KeepTogether,
    LongTable,
    NextPageTemplate,
    PageBreak,
    PageTemplate,
    Paragraph,
    Spacer,
    TableStyle,
)
from reportlab.platypus import Table as RLTable

from consumers.official.fonts import pdf_family, text_width_pt
from consumers.official.form import PARTY_TITLE, STATE_MOTTO
from consumers.official.model import Chart, OfficialDoc, Para, SignBlock, Table, show

MARGINS = {"top": 20 * mm, "bottom": 20 * mm, "left": 30 * mm, "right": 15 * mm}
HEADER_BG = colors.HexColor("#DDEBF7")
SUBTOTAL_BG = colors.HexColor("#F2F2F2")
LATE = colors.HexColor("#C00000")


class HLine(Flowable):
    """A centred horizontal rule of a given length (the lines under the motto and titles)."""

    def __init__(self, length: float, space: float = 2) -> None:
        super().__init__()
        self.length = length
        self.space = space

    def wrap(self, avail_w: float, avail_h: float) -> tuple[float, float]:
        self.avail = avail_w
        return avail_w, self.space * 2

    def draw(self) -> None:
        x0 = (self.avail - self.length) / 2
        self.canv.setLineWidth(0.6)
        self.canv.line(x0, self.space, x0 + self.length, self.space)


def _styles() -> dict[str, ParagraphStyle]:
    f = pdf_family()
    b, i = f"{f}-bold", f"{f}-italic"

    def st(name: str, font: str, size: float, align: int = TA_CENTER, **kw) -> ParagraphStyle:
        kw.setdefault("leading", size * 1.2)
        return ParagraphStyle(name, fontName=font, fontSize=size, alignment=align, **kw)

    return {
        "parent": st("parent", f, 12), "issuer": st("issuer", b, 12),
        "number": st("number", f, 13), "motto": st("motto", b, 12), "slogan": st("slogan", b, 13),
        "party_title": st("party_title", b, 15), "place": st("place", i, 13),
        "p_parent": st("p_parent", f, 14), "p_issuer": st("p_issuer", b, 14),
        "p_number": st("p_number", f, 14), "p_place": st("p_place", i, 14),
        "type": st("type", b, 14), "p_type": st("p_type", b, 16),
        "summary": st("summary", b, 14), "p_summary": st("p_summary", b, 14),
        "body": st("body", f, 13, TA_JUSTIFY, firstLineIndent=1 * cm, spaceBefore=3,
                   spaceAfter=3),
        "heading": st("heading", b, 13, TA_LEFT, spaceBefore=6, spaceAfter=3, keepWithNext=1),
        # No keepWithNext: kept with a long table it would push the table to a new page.
        "caption": st("caption", b, 12, TA_CENTER, spaceBefore=6, spaceAfter=4),
        "note": st("note", i, 11, TA_JUSTIFY, spaceBefore=2),
        "center": st("center", i, 12, TA_CENTER),
        "recip_title": st("recip_title", f"{f}-bolditalic", 12, TA_LEFT),
        "p_recip_title": st("p_recip_title", f, 14, TA_LEFT),
        "recip": st("recip", f, 11, TA_LEFT, leading=13),
        "p_recip": st("p_recip", f, 12, TA_LEFT, leading=14),
        "sign": st("sign", b, 13), "hint": st("hint", i, 12),
        "cell": st("cell", f, 10, TA_LEFT), "cell_b": st("cell_b", b, 10, TA_LEFT),
        "head": st("head", b, 10),
    }


def _p(text: str, style: ParagraphStyle) -> Paragraph:
    return Paragraph(escape(text).replace("\n", "<br/>"), style)


def _heading(doc: OfficialDoc, s: dict[str, ParagraphStyle], width: float) -> list[Flowable]:
    h = doc.heading
    party = h.form == "party"
    left_w, right_w = width * 0.45, width * 0.55
    left: list[Flowable] = []
    if h.parent:
        left.append(_p(h.parent, s["p_parent" if party else "parent"]))
    left.append(_p(h.issuer, s["p_issuer" if party else "issuer"]))
    if party:
        left.append(_p("*", s["p_issuer"]))
    else:
        left.append(HLine(min(left_w * 0.5, text_width_pt(h.issuer, 12, True) * 0.4)))
    left += [Spacer(1, 3), _p(h.number_line, s["p_number" if party else "number"])]
    if party:
        right = [_p(PARTY_TITLE, s["party_title"]),
                 HLine(text_width_pt(PARTY_TITLE, 15, True)), Spacer(1, 8),
                 _p(h.place_date, s["p_place"])]
    else:
        right = [_p(STATE_MOTTO[0], s["motto"]), _p(STATE_MOTTO[1], s["slogan"]),
                 HLine(text_width_pt(STATE_MOTTO[1], 13, True)), Spacer(1, 8),
                 _p(h.place_date, s["place"])]
    top = RLTable([[left, right]], colWidths=[left_w, right_w])
    top.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"),
                             ("FONT", (0, 0), (-1, -1), pdf_family()),
                             ("LEFTPADDING", (0, 0), (-1, -1), 0),
                             ("RIGHTPADDING", (0, 0), (-1, -1), 0)]))
    out: list[Flowable] = [top, Spacer(1, 18),
                           _p(h.doc_type, s["p_type" if party else "type"]),
                           _p(h.summary, s["p_summary" if party else "summary"])]
    if party:
        out.append(_p("-----", s["p_summary"]))
    else:
        out.append(HLine(min(width * 0.5, text_width_pt(h.summary, 14, True) * 0.4) or 60))
    out.append(Spacer(1, 10))
    return out


PAD = 3.0  # reportlab's default top and bottom cell padding


def _row_height(row: list, widths: list[float], size: float) -> float:
    """The height reportlab would give the row: its tallest wrapped cell plus padding."""
    heights = [size * 1.2]  # one line of a plain (number) cell
    for value, w in zip(row, widths, strict=True):
        if isinstance(value, Paragraph):
            heights.append(value.wrap(w - 4, 10_000)[1])
    return max(heights) + 2 * PAD


def _table(t: Table, s: dict[str, ParagraphStyle], width: float) -> list[Flowable]:
    t = t.printed()
    size = t.font_pt
    cell = ParagraphStyle("c", parent=s["cell"], fontSize=size, leading=size * 1.2)
    cell_b = ParagraphStyle("cb", parent=s["cell_b"], fontSize=size, leading=size * 1.2)
    head = ParagraphStyle("h", parent=s["head"], fontSize=size, leading=size * 1.2)
    total_w = sum(c.width for c in t.columns)
    widths = [width * c.width / total_w for c in t.columns]
    header = [_p(c.title, head) for c in t.columns]
    base: list[tuple] = [
        ("FONT", (0, 0), (-1, -1), pdf_family(), size),
        ("GRID", (0, 0), (-1, -1), 0.4, colors.black),
        ("BACKGROUND", (0, 0), (-1, 0), HEADER_BG),
        ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ("LEFTPADDING", (0, 0), (-1, -1), 2), ("RIGHTPADDING", (0, 0), (-1, -1), 2),
    ] + [("ALIGN", (ci, 1), (ci, -1), "RIGHT") for ci, c in enumerate(t.columns)
         if c.kind != "text"]
    bold = f"{pdf_family()}-bold"
    # (cells, style commands for that row with row index 0)
    body: list[tuple[list, list[tuple]]] = []
    for r in t.rows:
        # A group heading is a plain bold row ("I" | "Huyện Tân Phú"), never a SPAN: spans make
        # reportlab walk every cell of the remaining table at each page break.
        strong = r.style in ("subtotal", "total", "group")
        row = []
        values = r.values + [""] * (len(t.columns) - len(r.values))
        for c, v in zip(t.columns, values, strict=True):
            text = show(v, c.kind)
            row.append(_p(text, cell_b if strong else cell) if c.kind == "text" else text)
        cmds: list[tuple] = []
        if strong:
            cmds.append(("FONT", (0, 0), (-1, 0), bold, size))
        if r.style in ("subtotal", "total"):
            cmds.append(("BACKGROUND", (0, 0), (-1, 0), SUBTOTAL_BG))
        if r.emphasis:
            cmds.append(("TEXTCOLOR", (-1, 0), (-1, 0), LATE))
            if isinstance(row[-1], Paragraph):
                row[-1] = Paragraph(f'<font color="#C00000">{escape(show(r.values[-1], "text"))}'
                                    "</font>", cell_b if strong else cell)
        body.append((row, cmds))
    out: list[Flowable] = []
    if t.caption:
        out.append(_p(t.caption, s["caption"]))
    data = [header] + [row for row, _ in body]
    style = list(base)
    for i, (_row, cmds) in enumerate(body, 1):
        style += [(name, (a[0], i), (b[0], i), *rest) for name, a, b, *rest in cmds]
    # Row heights measured once here: given them, reportlab does not measure every remaining
    # row again at each page break (which made a long table cost O(rows²)).
    table = LongTable(data, colWidths=widths, repeatRows=1,
                      rowHeights=[_row_height(row, widths, size) for row in data])
    table.setStyle(TableStyle(style))
    out.append(table)
    out += [_p(n, s["note"]) for n in t.notes]
    out.append(Spacer(1, 8))
    return out


def _blocks(blocks, s, width: float) -> list[Flowable]:
    out: list[Flowable] = []
    for b in blocks:
        if isinstance(b, Para):
            out.append(_p(b.text, s[b.style]))
        elif isinstance(b, Table):
            out += _table(b, s, width)
        elif isinstance(b, Chart):
            img = Image(io.BytesIO(b.png))
            ratio = img.imageHeight / img.imageWidth
            w = min(width, b.width_cm * cm)
            img.drawWidth, img.drawHeight = w, w * ratio
            # The caption stays with its chart on one page.
            out.append(KeepTogether([_p(b.caption, s["caption"]), img] if b.caption
                                    else [img]))
    return out


def _sign_cell(sb: SignBlock, s: dict[str, ParagraphStyle]) -> list[Flowable]:
    cell: list[Flowable] = [_p(line, s["sign"]) for line in sb.lines]
    if sb.hint:
        cell.append(_p(sb.hint, s["hint"]))
    cell += [Spacer(1, 25 * mm), _p(sb.name, s["sign"])]
    return cell


def _closing(doc: OfficialDoc, s: dict[str, ParagraphStyle], width: float) -> Flowable:
    party = doc.heading.form == "party"
    if len(doc.signatures) >= 2:
        cells = [_sign_cell(sb, s) for sb in doc.signatures[:2]]
        widths = [width / 2, width / 2]
    else:
        left: list[Flowable] = []
        if doc.recipients is not None:
            title = (f"<u>{escape(doc.recipients_title)}</u>" if party
                     else escape(doc.recipients_title))
            left.append(Paragraph(title, s["p_recip_title" if party else "recip_title"]))
            left += [_p(r, s["p_recip" if party else "recip"]) for r in doc.recipients]
        cells = [left, _sign_cell(doc.signatures[0], s) if doc.signatures else []]
        widths = [width * 0.45, width * 0.55]
    t = RLTable([cells], colWidths=widths)
    t.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"),
                           ("FONT", (0, 0), (-1, -1), pdf_family()),
                           ("LEFTPADDING", (0, 0), (-1, -1), 0),
                           ("RIGHTPADDING", (0, 0), (-1, -1), 0)]))
    return KeepTogether([Spacer(1, 12), t])


def write_pdf(doc: OfficialDoc, out: Path) -> Path:
    s = _styles()
    family = pdf_family()
    portrait_w, portrait_h = A4
    land_w, land_h = landscape(A4)

    def number_pages(canvas, d) -> None:
        if d.page > 1:  # page numbers from the second page, top centre (NĐ 30/2020)
            canvas.saveState()
            canvas.setFont(family, 13)
            w, h = canvas._pagesize
            canvas.drawCentredString(w / 2, h - 12 * mm, str(d.page))
            canvas.restoreState()

    pw = portrait_w - MARGINS["left"] - MARGINS["right"]
    ph = portrait_h - MARGINS["top"] - MARGINS["bottom"]
    # Landscape: the binding margin stays on the long side that was the left one.
    lw = land_w - 20 * mm - 15 * mm
    lh = land_h - 30 * mm - 15 * mm
    templates = [
        PageTemplate("portrait", [Frame(MARGINS["left"], MARGINS["bottom"], pw, ph, 0, 0, 0, 0)],
                     pagesize=A4, onPage=number_pages),
        PageTemplate("landscape", [Frame(20 * mm, 15 * mm, lw, lh, 0, 0, 0, 0)],
                     pagesize=(land_w, land_h), onPage=number_pages),
    ]
    rl = BaseDocTemplate(str(out), pagesize=A4, pageTemplates=templates, title=doc.title,
                         author=doc.heading.issuer, creator="sohoa", lang="vi-VN",
                         initialFontName=family)
    story: list[Flowable] = [*_heading(doc, s, pw), *_blocks(doc.body, s, pw),
                             _closing(doc, s, pw)]
    if doc.appendix:
        story += [NextPageTemplate("landscape"), PageBreak()]
        if doc.appendix_title:
            story += [_p(doc.appendix_title, s["p_type" if doc.heading.form == "party"
                                                else "type"]), Spacer(1, 6)]
        story += _blocks(doc.appendix, s, lw)
    rl.build(story)
    return out

