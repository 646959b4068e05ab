"""The directories of a TIFF (classic and BigTIFF, either byte order), read without pixels.

Used by :mod:`sohoa.documents` for the truncation check, the page count and the page content
digest. Only the tags that define an image are read; every offset is checked against the file
size, so a cut file is found here, not by a decoder later.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

# NewSubfileType bit 0: a reduced-resolution copy (a thumbnail) of another image, not a page.
_REDUCED = 1
_MAX_ENTRIES = 4096        # a directory claiming more entries is damage, not a page
_MAX_DIRECTORIES = 100_000

# Tags whose values define how the page's bytes become pixels (page-model.md), plus the
# strip/tile layout, which the decoder needs as much as the bytes.
DEFINING_TAGS = (
    256, 257, 258, 259, 262, 266, 274, 277, 278, 282, 283, 284, 296, 317, 320, 322, 323,
    338, 339, 347, 530,
)
_STRIPS, _TILES = (273, 279), (324, 325)
_WANTED = frozenset((254, *DEFINING_TAGS, *_STRIPS, *_TILES))
_KIND_BYTES = {"i": b"i", "r": b"r"}

# type code -> (struct code, byte width, kind): i = integers, r = rationals, f = floats,
# b = raw bytes.
_TYPES: dict[int, tuple[str, int, str]] = {
    1: ("B", 1, "b"), 2: ("B", 1, "b"), 3: ("H", 2, "i"), 4: ("I", 4, "i"),
    5: ("I", 8, "r"), 6: ("b", 1, "b"), 7: ("B", 1, "b"), 8: ("h", 2, "i"),
    9: ("i", 4, "i"), 10: ("i", 8, "r"), 11: ("f", 4, "f"), 12: ("d", 8, "f"),
    13: ("I", 4, "i"), 16: ("Q", 8, "i"), 17: ("q", 8, "i"), 18: ("Q", 8, "i"),
}


class TiffDamaged(Exception):
    """The TIFF's structure is cut short or inconsistent; ``str(exc)`` says where."""


# A tag's (kind, values): kind "i", "r", "f" or "b" (see _TYPES), values a tuple of numbers or
# raw bytes. A plain tuple, not a NamedTuple: one is built per tag of every page checked.
Tag = tuple[str, tuple | bytes]


@dataclass(slots=True)
class Directory:
    """One image directory: its defining tags and where its strips or tiles lie. Read-only:
    directories with the same bytes share ``tags`` (see :class:`_Layout`)."""

    index: int                     # position in the main chain, 0-based
    tags: dict[int, Tag]
    regions: tuple[tuple[int, int], ...]   # (offset, byte count) of each strip or tile
    header: bytes | None = None    # canonical_header(), when already known

    @property
    def reduced(self) -> bool:
        sub = self.tags.get(254)
        return bool(sub and isinstance(sub[1], tuple) and sub[1][0] & _REDUCED)

    def canonical_header(self) -> bytes:
        """The defining tags in one encoding, whatever the byte order, TIFF flavour or the
        integer width the writer chose, then the strip/tile lengths (their boundaries matter
        to the decoder; their offsets do not). Numbers are written in decimal, raw bytes
        with their length first."""
        if self.header is not None:
            return self.header
        tags = self.tags
        parts: list[bytes] = []
        for tag in DEFINING_TAGS:
            t = tags.get(tag)
            if t is None:
                continue
            kind, values = t
            if kind == "b":
                parts.append(b"%d:b:%d:%s;" % (tag, len(values), values))
            elif kind == "f":
                parts.append(b"%d:f:%s;" % (tag, ",".join(map(repr, values)).encode()))
            elif len(values) == 1:  # most tags: one integer, whose repr is its decimal
                parts.append(b"%d:%s:%d;" % (tag, _KIND_BYTES[kind], values[0]))
            else:  # integers, rationals (numerator, denominator pairs)
                parts.append(b"%d:%s:%s;" % (tag, _KIND_BYTES[kind],
                                             ",".join(map(str, values)).encode()))
        parts.append(b"L:%s;" % ",".join([str(n) for _, n in self.regions]).encode())
        return b"".join(parts)


# A view of a file in memory or the bytes read from disk: the walk only unpacks them.
ReadAt = Callable[[int, int], bytes | memoryview]
_ENTRY = {(bo, big): struct.Struct(bo + ("HHQ8s" if big else "HHI4s"))
          for bo in "<>" for big in (False, True)}


def walk(read_at: ReadAt, size: int) -> list[Directory]:
    """Every directory of the main chain, each checked to lie inside the file."""
    head = bytes(read_at(0, 16))
    if len(head) < 8:
        raise TiffDamaged("TIFF header is truncated")
    bo = "<" if head[:2] == b"II" else ">"
    magic = struct.unpack(bo + "H", head[2:4])[0]
    if magic == 42:
        big, ifd = False, struct.unpack(bo + "I", head[4:8])[0]
    elif magic == 43 and len(head) >= 16:
        big, ifd = True, struct.unpack(bo + "Q", head[8:16])[0]
    else:
        raise TiffDamaged("TIFF header is damaged")
    dirs: list[Directory] = []
    seen: set[int] = set()
    while ifd:
        if ifd in seen:
            raise TiffDamaged("TIFF directories loop back on themselves")
        if len(seen) >= _MAX_DIRECTORIES:
            raise TiffDamaged(f"TIFF has more than {_MAX_DIRECTORIES} directories")
        seen.add(ifd)
        d, ifd = _directory(read_at, size, bo, big, ifd, len(dirs))
        dirs.append(d)
    if not dirs:
        raise TiffDamaged("TIFF has no image directory")
    return dirs


_COUNT = {(bo, big): struct.Struct(bo + ("Q" if big else "H"))
          for bo in "<>" for big in (False, True)}
_NEXT = {(bo, big): struct.Struct(bo + ("Q" if big else "I"))
         for bo in "<>" for big in (False, True)}
_ONE = {(bo, code): struct.Struct(bo + code).unpack
        for bo in "<>" for code, _, kind in _TYPES.values() if kind == "i"}


class _Layout:
    """What one directory's entry bytes (byte order, flavour) always parse to.

    A scanner writes every page's directory alike: the same entries, and out-of-line values
    (bits per sample, resolutions, several strips' offsets and lengths) whose bytes repeat too.
    The entries fix where those values lie; with the bytes found there they fix the tags, the
    strips and the canonical header, so a page laid out like an earlier one costs a lookup
    instead of a parse. Only the checks that depend on the file (its size, the values' bytes)
    are made again; any that fails goes back to the full parse, which says what is wrong."""

    __slots__ = ("known", "outside")

    def __init__(self, outside: tuple[tuple[int, int], ...]) -> None:
        self.outside = outside  # (offset, byte count) of each value held outside the entries
        # the values' bytes -> (tags, regions, end of the image data, canonical header)
        self.known: dict[tuple[bytes, ...], tuple[dict[int, Tag],
                                                  tuple[tuple[int, int], ...], int, bytes]] = {}

    def directory(self, read_at: ReadAt, size: int, index: int) -> Directory | None:
        values = []
        for off, nbytes in self.outside:
            if off + nbytes > size:
                return None
            values.append(bytes(read_at(off, nbytes)))
        hit = self.known.get(tuple(values))
        if hit is None or hit[2] > size:
            return None
        tags, regions, _end, header = hit
        return Directory(index, tags, regions, header)


# (byte order, BigTIFF, a directory's entry bytes) -> its layout. Bounded: a campaign's
# scanners write a handful of layouts; a file of its own kind must not grow this forever.
_LAYOUTS: dict[tuple[str, bool, bytes], _Layout] = {}
_MAX_LAYOUTS = 64
_MAX_VALUES = 16  # value sets kept per layout (pages whose strips differ in length)
# Only a directory whose entries and out-of-line values fit in this many bytes is remembered
# (a few dozen strips): one of thousands of strips is parsed each time, as its tags and strips
# would hold hundreds of kilobytes in the agent for each page remembered.
_MAX_REMEMBERED = 1024


def _directory(read_at: ReadAt, size: int, bo: str, big: bool, at: int,
               index: int) -> tuple[Directory, int]:
    count_len, entry_len, next_len = (8, 20, 8) if big else (2, 12, 4)
    if at < 8 or at + count_len > size:
        raise TiffDamaged(f"TIFF is truncated ({_where(index)} outside the file)")
    n = _COUNT[bo, big].unpack(read_at(at, count_len))[0]
    if n == 0 or n > _MAX_ENTRIES:
        raise TiffDamaged(f"TIFF {_where(index)} is damaged ({n} entries)")
    entries_len = n * entry_len
    raw = read_at(at + count_len, entries_len + next_len)
    if len(raw) < entries_len + next_len:
        raise TiffDamaged(f"TIFF is truncated ({_where(index)} cut short)")
    pointer = _NEXT[bo, big].unpack
    nxt = pointer(raw[entries_len:entries_len + next_len])[0]
    key = (bo, big, bytes(raw[:entries_len]))
    layout = _LAYOUTS.get(key)
    if layout is not None:
        d = layout.directory(read_at, size, index)
        if d is not None:
            return d, nxt
    inline = next_len  # bytes of a value held in the entry itself
    tags: dict[int, Tag] = {}
    outside: list[tuple[int, int]] = []
    values: list[bytes] = []
    for tag, typ, count, value in _ENTRY[bo, big].iter_unpack(key[2]):
        if tag not in _WANTED:
            continue
        t = _TYPES.get(typ)
        if t is None:
            continue
        code, width, kind = t
        nbytes = count * width
        if nbytes <= inline:
            data: bytes | memoryview = value[:nbytes]
        else:
            off = pointer(value)[0]
            if off + nbytes > size:
                raise TiffDamaged("TIFF is truncated (tag data outside the file)")
            data = bytes(read_at(off, nbytes))
            outside.append((off, nbytes))
            values.append(data)
        if kind == "b":
            tags[tag] = (kind, bytes(data))
        elif count == 1 and kind == "i":  # most tags: one number
            tags[tag] = (kind, _ONE[bo, code](data))
        else:
            items = count * 2 if kind == "r" else count
            tags[tag] = (kind, struct.unpack(f"{bo}{items}{code}", data))
    if 256 not in tags or 257 not in tags:
        raise TiffDamaged(f"TIFF {_where(index)} has no image width/height")
    regions = _regions(tags, size, _where, index)
    d = Directory(index, tags, regions)
    d.header = d.canonical_header()
    if len(key[2]) + sum(map(len, values)) > _MAX_REMEMBERED:
        return d, nxt
    if layout is None or layout.outside != tuple(outside):
        if len(_LAYOUTS) >= _MAX_LAYOUTS:
            _LAYOUTS.clear()
        layout = _LAYOUTS[key] = _Layout(tuple(outside))
    if len(layout.known) >= _MAX_VALUES:
        layout.known.clear()
    layout.known[tuple(values)] = (tags, regions, _end(regions), d.header)
    return d, nxt


def _end(regions: tuple[tuple[int, int], ...]) -> int:
    return max((o + c for o, c in regions), default=0)


def _where(index: int) -> str:
    return "first directory" if index == 0 else f"directory {index + 1}"


def _regions(tags: dict[int, Tag], size: int, where: Callable[[int], str],
             index: int) -> tuple[tuple[int, int], ...]:
    for off_tag, cnt_tag in (_STRIPS, _TILES):
        offsets_t, counts_t = tags.get(off_tag), tags.get(cnt_tag)
        if offsets_t is not None and counts_t is not None:
            offsets, counts = offsets_t[1], counts_t[1]
            if len(offsets) != len(counts):
                raise TiffDamaged(f"TIFF {where(index)}: strip offsets and byte counts "
                                  f"disagree")
            regions = tuple(zip(offsets, counts, strict=True))
            if len(regions) == 1:  # a single strip: no generator for one sum
                end = regions[0][0] + regions[0][1]
            else:
                end = max((o + c for o, c in regions), default=0)
            if end > size:
                raise TiffDamaged(f"TIFF is truncated: image data ends at byte {end}, "
                                  f"file has {size}")
            return regions  # type: ignore[return-value]
    raise TiffDamaged(f"TIFF {where(index)} has no image data offsets")


def pages(dirs: list[Directory]) -> list[Directory]:
    """The directories that are pages: reduced-resolution copies (thumbnails some capture
    software writes into the main chain) are not counted or paid as pages."""
    return [d for d in dirs if not d.reduced]
