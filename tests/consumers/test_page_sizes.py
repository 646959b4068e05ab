"""A page's size class and A4 equivalents, the unit of payment."""

from __future__ import annotations

import pytest

from consumers.page_sizes import SizeClass, SizeTally, size_class

TOL = 0.03


@pytest.mark.parametrize(("width", "height", "cls", "units"), [
    (210, 297, SizeClass.A4, 1),
    (297, 210, SizeClass.A4, 1),            # landscape is the same sheet
    (148, 210, SizeClass.A4, 1),            # A5: A4 and smaller
    (215.9, 279.4, SizeClass.A4, 1),        # US Letter, within the tolerance
    (214, 304, SizeClass.A4, 1),            # an A4 scanned with a few mm of margin
    (220, 310, SizeClass.A3, 2),            # beyond it
    (250, 353, SizeClass.A3, 2),            # B4
    (297, 420, SizeClass.A3, 2),
    (420, 594, SizeClass.LARGER, 4),        # A2
    (430, 604, SizeClass.LARGER, 4),        # A2 with margins
    (594, 841, SizeClass.LARGER, 8),        # A1
    (841, 1189, SizeClass.LARGER, 16),      # A0 (its mm rounding is not a 17th A4)
    (500, 700, SizeClass.LARGER, 6),        # 5.6 A4 → 6
    (100, 800, SizeClass.LARGER, 2),        # a long strip: its area, rounded up
    (None, 297, SizeClass.UNKNOWN, None),
    (210, None, SizeClass.UNKNOWN, None),
    (0, 0, SizeClass.UNKNOWN, None),
])
def test_size_classes_and_a4_equivalents(width, height, cls, units) -> None:
    assert size_class(width, height, TOL) == (cls, units)


def test_without_tolerance_a_millimetre_over_is_the_next_class() -> None:
    assert size_class(210, 298, 0.0) == (SizeClass.A3, 2)
    assert size_class(210, 298, TOL) == (SizeClass.A4, 1)


def test_a_tally_keeps_unknown_pages_apart() -> None:
    t = SizeTally()
    for size in [(210, 297), (297, 420), (None, None), (420, 594), (None, None)]:
        t.add(*size, TOL)
    assert (t.a4, t.a3, t.larger, t.unknown, t.a4_equivalents, t.pages) == (1, 1, 1, 2, 7, 5)
    t += t
    assert (t.pages, t.a4_equivalents) == (10, 14)
