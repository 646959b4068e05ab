"""Is there anything on this page? Text-like marks, not a count of dark pixels.

A page is content when it holds a text line (marks of character height side by side) or a
large mark (a stamp, a signature, a photo, a drawing). Specks, dust, scanner noise and
bleed-through from the other side are not content: they are too small, too faint, or do not
line up. A page of one signature line ("T/L BAN THƯỜNG VỤ") is content, though its share of
dark pixels (~0.1 %) is what a count of dark pixels would call blank.

Connected components come from scipy.ndimage (C), so a full page of text costs a few
milliseconds on the analysis copy; every threshold is in QcConfig, in millimetres, so the
verdict does not depend on the scan's resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sohoa.config import QcConfig


@dataclass(frozen=True)
class Content:
    lines: int          # text lines (>= blank_line_min_marks marks side by side)
    marks: int          # large marks: stamps, signatures, photos, drawings
    text: np.ndarray | None  # mask of the text lines' character marks (what skew measures)

    @property
    def items(self) -> int:
        return self.lines + self.marks


def find_content(luma: np.ndarray, px_per_mm: float, qc: QcConfig) -> Content:
    """Text lines and large marks on a greyscale page (float, 0..255)."""
    from scipy import ndimage

    mask = ink_mask(luma, qc)
    lab, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return Content(0, 0, None)
    boxes = np.array([(s[0].start, s[0].stop, s[1].start, s[1].stop)
                      for s in ndimage.find_objects(lab)], dtype=np.int64)
    h_mm = (boxes[:, 1] - boxes[:, 0]) / px_per_mm
    w_mm = (boxes[:, 3] - boxes[:, 2]) / px_per_mm
    rows, cols = mask.shape
    # Edge shadows and the scanner bed around the sheet touch the image's border.
    inside = ((boxes[:, 0] > 0) & (boxes[:, 2] > 0) & (boxes[:, 1] < rows)
              & (boxes[:, 3] < cols))
    area = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    fill = area / np.maximum(1, (boxes[:, 1] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 2]))
    large = (inside & (h_mm >= qc.blank_mark_min_mm) & (w_mm >= qc.blank_mark_min_mm)
             & (fill >= qc.blank_mark_min_fill))
    char = (inside & ~large & (h_mm >= qc.blank_char_min_mm) & (h_mm <= qc.blank_char_max_mm)
            & (w_mm <= qc.blank_char_max_mm * 2))
    lines, text = 0, None
    if int(char.sum()) >= qc.blank_line_min_marks:
        lines, text = _text_lines(lab, char, px_per_mm, qc)
    return Content(lines, int(large.sum()), text)


def ink_mask(luma: np.ndarray, qc: QcConfig) -> np.ndarray:
    """Pixels darker than the page's own paper (its bright 90th percentile) by
    ``ink_contrast``: cream or grey paper and a dark or light scan are judged on contrast."""
    paper = float(np.percentile(luma, 90))
    return luma < paper * (1.0 - qc.ink_contrast)


def _text_lines(lab: np.ndarray, char: np.ndarray, px_per_mm: float,
                qc: QcConfig) -> tuple[int, np.ndarray | None]:
    """Character-sized marks smeared sideways by the word gap join into line fragments; a
    fragment of enough marks is a text line. Smearing only sideways keeps lines apart."""
    from scipy import ndimage

    keep = np.concatenate(([False], char))
    chars = keep[lab]
    gap = max(1, round(qc.blank_line_gap_mm * px_per_mm))
    joined = ndimage.maximum_filter1d(chars.view(np.uint8), size=gap, axis=1) > 0
    fragments, n_frag = ndimage.label(joined)
    ids = np.flatnonzero(char) + 1
    # A mark lies whole inside one fragment: any of its pixels names it.
    fragment_of = np.zeros(len(keep), dtype=np.int64)
    fragment_of[lab[chars]] = fragments[chars]
    per_fragment = np.bincount(fragment_of[ids], minlength=n_frag + 1)
    is_line = per_fragment >= qc.blank_line_min_marks
    is_line[0] = False
    lines = int(is_line.sum())
    if not lines:
        return 0, None
    in_line = np.zeros(len(keep), dtype=bool)
    in_line[ids[is_line[fragment_of[ids]]]] = True
    return lines, in_line[lab]
