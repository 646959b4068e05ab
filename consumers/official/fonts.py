"""Fonts of the official documents. Both systems prescribe Times New Roman (Unicode, TCVN
6909:2001): DOCX names it, so the office's Word uses its own; the PDF embeds Liberation Serif
(fonts-liberation2, metric-compatible with Times New Roman, every Vietnamese letter), else
DejaVu Serif, else matplotlib's DejaVu Sans so a PDF is always written."""

from __future__ import annotations

from pathlib import Path

DOCX_FONT = "Times New Roman"
_CANDIDATES = [
    ("/usr/share/fonts/truetype/liberation2/LiberationSerif-{}.ttf",
     {"regular": "Regular", "bold": "Bold", "italic": "Italic", "bolditalic": "BoldItalic"}),
    ("/usr/share/fonts/truetype/liberation/LiberationSerif-{}.ttf",
     {"regular": "Regular", "bold": "Bold", "italic": "Italic", "bolditalic": "BoldItalic"}),
    ("/usr/share/fonts/truetype/dejavu/DejaVuSerif{}.ttf",
     {"regular": "", "bold": "-Bold", "italic": "-Italic", "bolditalic": "-BoldItalic"}),
]


def _files() -> dict[str, Path]:
    for pattern, styles in _CANDIDATES:
        files = {k: Path(pattern.format(v)) for k, v in styles.items()}
        if all(p.exists() for p in files.values()):
            return files
    import matplotlib

    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return {"regular": ttf / "DejaVuSans.ttf", "bold": ttf / "DejaVuSans-Bold.ttf",
            "italic": ttf / "DejaVuSans-Oblique.ttf",
            "bolditalic": ttf / "DejaVuSans-BoldOblique.ttf"}


def pdf_family() -> str:
    """Register the serif family with reportlab once; its name for ``fontName``."""
    from reportlab.lib.fonts import addMapping
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    name = "SohoaSerif"
    if name not in pdfmetrics.getRegisteredFontNames():
        files = _files()
        for style, path in files.items():
            face = name if style == "regular" else f"{name}-{style}"
            pdfmetrics.registerFont(TTFont(face, str(path)))
        addMapping(name, 0, 0, name)
        addMapping(name, 1, 0, f"{name}-bold")
        addMapping(name, 0, 1, f"{name}-italic")
        addMapping(name, 1, 1, f"{name}-bolditalic")
    return name


def text_width_pt(text: str, size: float, bold: bool = False) -> float:
    """Width of ``text`` in points in the Times-metric serif (for the lines under headings)."""
    from reportlab.pdfbase.pdfmetrics import stringWidth

    family = pdf_family()
    return stringWidth(text, f"{family}-bold" if bold else family, size)
