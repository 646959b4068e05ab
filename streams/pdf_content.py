"""What a scanned PDF page draws, as the OCR engine needs to know it: the text already on it
(a scanner's own OCR, or an earlier OCR's layer), removed so that the output's only text is
ours, and whether the page is one scanned image over the whole page (Tesseract then reads
that image itself rather than a rendering of the page).

The page's content streams are read with pikepdf (qpdf's tokenizer), following only the state
these two questions need: the transformation matrix and the text render mode, saved and
restored by ``q``/``Q``, into the form XObjects the page draws. Text shown in render mode 3
(invisible: every OCR layer is) is taken out with everything that only serves text (text
objects, their positioning and text state); paths, images and colours stay as they were. Text
shown in any other mode is seen on the page: such a page is left as it is and the caller
rebuilds it from its rendering (which draws that text and not the invisible one).

The page is changed in the pikepdf document it belongs to, never in a file: the OCR engine
opens the document from bytes it has read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pikepdf
from pikepdf import Matrix, Name

from sohoa.pdf_pages import inherited

INVISIBLE = 3  # text render mode: neither filled nor stroked nor clipped
_MAX_DEPTH = 24
# Text objects, their positioning and the text state: nothing else reads them, so they go
# when no text is left to show.
_TEXT_OPS = frozenset({"BT", "ET", "Td", "TD", "Tm", "T*", "Tj", "TJ", "'", '"',
                       "Tc", "Tw", "Tz", "TL", "Tf", "Tr", "Ts"})
_SHOW = frozenset({"Tj", "TJ", "'", '"'})
_PAINT = frozenset({"S", "s", "f", "F", "f*", "B", "B*", "b", "b*", "sh"})


@dataclass
class Drawing:
    """What one page draws."""

    images: list[tuple[Matrix, pikepdf.Stream]] = field(default_factory=list)
    other_paint: bool = False    # paths, shadings, inline images, image masks
    hidden_text: bool = False    # text shown invisibly (and removed, with ``strip``)
    seen_text: bool = False      # text shown in any other mode (left where it is)


def read_page(page: pikepdf.Page, strip: bool = True) -> Drawing:
    """What ``page`` draws; with ``strip``, its invisible text is removed unless it also
    shows text that is seen (then nothing is changed)."""
    drawing = Drawing()
    edits: list[tuple[Any, list[Any], Any]] = []
    ops = pikepdf.parse_content_stream(page)
    resources = inherited(page.obj, "/Resources")
    kept = _walk(ops, resources, Matrix(), 0, drawing, edits, (), 0)
    if strip and drawing.hidden_text and not drawing.seen_text:
        if len(kept) != len(ops):
            page.contents_coalesce()
            edits.append((page.obj.Contents, kept, resources))
        for stream, new_ops, res in edits:
            stream.write(pikepdf.unparse_content_stream(new_ops))
            if isinstance(res, pikepdf.Dictionary) and Name.Font in res:
                del res[Name.Font]  # no text is left to use them
    return drawing


def _walk(ops: list[Any], resources: Any, ctm: Matrix, mode: int, d: Drawing,
          edits: list[tuple[Any, list[Any], Any]], path: tuple, depth: int) -> list[Any]:
    """Follow ``ops`` into ``d``; returns them without text (forms' go to ``edits``)."""
    kept: list[Any] = []
    stack: list[tuple[Matrix, int]] = []
    for ins in ops:
        if isinstance(ins, pikepdf.ContentStreamInlineImage):
            d.other_paint = True
            kept.append(ins)
            continue
        op = str(ins.operator)
        if op == "q":
            stack.append((ctm, mode))
        elif op == "Q":
            if stack:
                ctm, mode = stack.pop()
        elif op == "cm" and len(ins.operands) == 6:
            ctm = Matrix(*(float(v) for v in ins.operands)) @ ctm
        elif op == "Tr" and ins.operands:
            mode = int(ins.operands[0])
        elif op in _SHOW:
            if mode == INVISIBLE:
                d.hidden_text = True
            else:
                d.seen_text = True
        elif op in _PAINT:
            d.other_paint = True
        elif op == "Do" and ins.operands:
            _draw(ins.operands[0], resources, ctm, mode, d, edits, path, depth)
        if op not in _TEXT_OPS:
            kept.append(ins)
    return kept


def _draw(name: Any, resources: Any, ctm: Matrix, mode: int, d: Drawing,
          edits: list[tuple[Any, list[Any], Any]], path: tuple, depth: int) -> None:
    xobjects = resources.get(Name.XObject) if isinstance(resources, pikepdf.Dictionary) else None
    x = xobjects.get(name) if isinstance(xobjects, pikepdf.Dictionary) else None
    if not isinstance(x, pikepdf.Stream):
        return
    subtype = x.get(Name.Subtype)
    if subtype == Name.Image:
        if x.get(Name.ImageMask):
            d.other_paint = True  # a stencil painted in the fill colour, not a scan
        else:
            d.images.append((ctm, x))
        return
    if subtype != Name.Form:
        return
    key = tuple(x.objgen) if x.is_indirect else (0, id(x))
    if key in path or depth >= _MAX_DEPTH:
        d.other_paint = True  # a form drawing itself: not a scanner's page
        return
    matrix = x.get(Name.Matrix)
    inner = Matrix(*(float(v) for v in matrix)) @ ctm if matrix is not None else ctm
    form_ops = pikepdf.parse_content_stream(x)
    form_resources = x.get(Name.Resources, resources)
    kept = _walk(form_ops, form_resources, inner, mode, d, edits, (*path, key), depth + 1)
    if len(kept) != len(form_ops):  # text operators taken out
        edits.append((x, kept, x.get(Name.Resources)))


def full_page_image(page: pikepdf.Page, d: Drawing) -> tuple[pikepdf.Stream, int] | None:
    """The page's one image and its resolution (dots per inch), when the page draws only that
    image, upright, over its whole crop box (what a scanner writes); else None."""
    if d.other_paint or d.seen_text or len(d.images) != 1:
        return None
    m, image = d.images[0]
    x0, y0, x1, y1 = (float(v) for v in page.cropbox)
    if m.b or m.c or m.a <= 0 or m.d <= 0:
        return None
    if max(abs(m.e - x0), abs(m.f - y0), abs(m.a - (x1 - x0)), abs(m.d - (y1 - y0))) > 1:
        return None
    width = int(image.get(Name.Width, 0))
    return (image, round(width / (m.a / 72))) if width > 0 else None
