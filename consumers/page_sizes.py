"""A page's physical size class and its A4 equivalents, the unit contracts pay digitization in:
A4 and smaller = 1, A3 = 2, larger = area ÷ A4, rounded up. A page whose size is unknown (its
image states no resolution) is counted as such, never as 1."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

A4_MM = (210.0, 297.0)
A3_MM = (297.0, 420.0)


class SizeClass(StrEnum):
    A4 = "a4"  # A4 and smaller
    A3 = "a3"
    LARGER = "larger"
    UNKNOWN = "unknown"


# The reports' names of the classes (Vietnamese first).
SIZE_CLASS_VI = {SizeClass.A4: "Khổ A4 trở xuống", SizeClass.A3: "Khổ A3",
                 SizeClass.LARGER: "Khổ lớn hơn A3", SizeClass.UNKNOWN: "Chưa rõ khổ"}


def _fits(short: float, long: float, fmt: tuple[float, float], tolerance: float) -> bool:
    return short <= fmt[0] * (1 + tolerance) and long <= fmt[1] * (1 + tolerance)


def size_class(width_mm: float | None, height_mm: float | None,
               tolerance: float) -> tuple[SizeClass, int | None]:
    """The class of a page ``width_mm`` × ``height_mm`` (either orientation) and its A4
    equivalents (None when its size is unknown); ``tolerance`` is
    ``reports.page_size_tolerance``."""
    if not width_mm or not height_mm or width_mm <= 0 or height_mm <= 0:
        return SizeClass.UNKNOWN, None
    short, long = sorted((width_mm, height_mm))
    if _fits(short, long, A4_MM, tolerance):
        return SizeClass.A4, 1
    if _fits(short, long, A3_MM, tolerance):
        return SizeClass.A3, 2
    ratio = (short / (1 + tolerance)) * (long / (1 + tolerance)) / (A4_MM[0] * A4_MM[1])
    return SizeClass.LARGER, max(1, math.ceil(ratio))


@dataclass
class SizeTally:
    """Pages by size class and the A4 equivalents of those whose size is known."""

    a4: int = 0
    a3: int = 0
    larger: int = 0
    unknown: int = 0
    a4_equivalents: int = 0

    @property
    def pages(self) -> int:
        return self.a4 + self.a3 + self.larger + self.unknown

    def add(self, width_mm: float | None, height_mm: float | None, tolerance: float) -> None:
        cls, units = size_class(width_mm, height_mm, tolerance)
        setattr(self, cls.value, getattr(self, cls.value) + 1)
        self.a4_equivalents += units or 0

    def __iadd__(self, other: SizeTally) -> SizeTally:
        for name in ("a4", "a3", "larger", "unknown", "a4_equivalents"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self
