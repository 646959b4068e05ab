"""sohoa.tiff_walk: a directory laid out like an earlier one (same entry bytes) is served from
what that one parsed to, and gives exactly what a first walk of it gives: the same tags,
strips and canonical header, and the same error for a cut or changed file."""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sohoa import tiff_walk
from sohoa.tiff_walk import Directory, TiffDamaged, walk
from tests.support import labelled_pages as lp
from tests.support import pages


def _walk(data: bytes, size: int | None = None) -> list[Directory]:
    return walk(lambda off, n: data[off:off + n], len(data) if size is None else size)


def _cold(data: bytes, size: int | None = None) -> list[Directory] | str:
    """The walk with nothing remembered: its directories, or its error."""
    tiff_walk._LAYOUTS.clear()
    try:
        return _walk(data, size)
    except TiffDamaged as exc:
        return str(exc)
    finally:
        tiff_walk._LAYOUTS.clear()


def _facts(dirs: list[Directory] | str) -> Any:
    if isinstance(dirs, str):
        return dirs
    # The header recomputed from the tags, not taken from the directory.
    return [(d.index, d.tags, d.regions, Directory(d.index, d.tags, d.regions).canonical_header())
            for d in dirs]


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts the directories served from a remembered layout."""
    hits = [0]
    real = tiff_walk._Layout.directory

    def counted(self: Any, read_at: Any, size: int, index: int) -> Directory | None:
        d = real(self, read_at, size, index)
        hits[0] += d is not None
        return d

    monkeypatch.setattr(tiff_walk._Layout, "directory", counted)
    tiff_walk._LAYOUTS.clear()
    yield hits
    tiff_walk._LAYOUTS.clear()


def _pillow_tiff(seed: int, **kw: Any) -> bytes:
    buf = io.BytesIO()
    lp.page_image(text=pages.text_lines(4, seed)).save(buf, "TIFF", **kw)
    return buf.getvalue()


def _files(tmp_path: Path) -> dict[str, bytes]:
    a, b = np.asarray(lp.page_image(text=pages.text_lines(4, 1))), \
        np.asarray(lp.page_image(text=pages.text_lines(4, 2)))
    out = {"raw": _pillow_tiff(1, compression="raw", dpi=(300, 300)),
           "lzw": _pillow_tiff(2, compression="tiff_lzw", dpi=(200, 200))}
    for bo in "<>":
        for big in (False, True):
            p = lp.write_tiff(tmp_path / f"{bo == '<'}{big}.tif", [a, b], bo=bo, big=big,
                              strips=7, thumbnail=True)
            out[f"{bo}{big}"] = p.read_bytes()
    return out


def test_a_directory_laid_out_like_an_earlier_one_walks_the_same(
        tmp_path: Path, served: list[int]) -> None:
    for name, data in _files(tmp_path).items():
        cold = _facts(_cold(data))
        first, again = _walk(data), _walk(data)
        before = served[0]
        assert _facts(first) == cold and _facts(again) == cold, name
        assert [d.canonical_header() for d in again] == [c[3] for c in cold], name
        # The second walk of the same bytes parsed nothing again.
        assert before >= len(again), name
    assert served[0] >= 2


def test_a_page_whose_strips_differ_is_parsed_for_its_own(tmp_path: Path,
                                                          served: list[int]) -> None:
    """Same entries, other out-of-line values (several strips of other lengths): its own tags,
    strips and header, not the earlier page's."""
    a = np.asarray(lp.page_image(text=pages.text_lines(4, 1)))
    one = lp.write_tiff(tmp_path / "a.tif", [a], strips=7).read_bytes()
    dirs = _walk(one)
    counts = dirs[0].tags[279]
    assert counts[0] == "i" and len(counts[1]) == 7
    # The same file with its strip byte counts rewritten in place (shorter strips): the entry
    # bytes are unchanged, only the values they point at differ.
    at = one.index(struct.pack("<7I", *counts[1]))
    other = one[:at] + struct.pack("<7I", *(n - 1 for n in counts[1])) + one[at + 28:]
    got = _walk(other)
    assert served[0] == 0
    assert _facts(got) == _facts(_cold(other)) != _facts(_cold(one))
    assert got[0].tags[279][1] == tuple(n - 1 for n in counts[1])


@pytest.mark.parametrize("where", ["image data", "tag data", "directory"])
def test_a_cut_file_laid_out_like_a_whole_one_is_still_damaged(where: str,
                                                               served: list[int]) -> None:
    data = _pillow_tiff(3, compression="raw", dpi=(300, 300))
    whole = _walk(data)
    assert len(whole) == 1 and len(_walk(data)) == 1 and served[0] == 1
    d = whole[0]
    if where == "image data":
        size = d.regions[-1][0] + d.regions[-1][1] - 1
    elif where == "tag data":  # Pillow writes out-of-line values after the directory
        size = len(data) - sum(n for _, n in d.regions) - 1
    else:
        size = 12
    cut = data[:size]
    expected = _cold(cut)
    assert isinstance(expected, str), expected
    with pytest.raises(TiffDamaged) as e:
        _walk(cut)
    assert str(e.value) == expected
    assert {"image data": "image data ends", "tag data": "tag data outside",
            "directory": "cut short"}[where] in expected


def test_remembered_layouts_are_bounded(served: list[int]) -> None:
    for i in range(tiff_walk._MAX_LAYOUTS + 5):
        buf = io.BytesIO()
        Image.new("L", (16 + i, 16)).save(buf, "TIFF", compression="raw")
        _walk(buf.getvalue())
        assert len(tiff_walk._LAYOUTS) <= tiff_walk._MAX_LAYOUTS


def test_a_directory_of_many_strips_is_not_remembered(tmp_path: Path,
                                                     served: list[int]) -> None:
    """Its strips' offsets and lengths are kilobytes: parsed each time, as before."""
    frame = np.zeros((800, 64), dtype=np.uint8)
    data = lp.write_tiff(tmp_path / "strips.tif", [frame], strips=400).read_bytes()
    first = _walk(data)
    assert len(first[0].regions) == 400
    assert not tiff_walk._LAYOUTS
    assert _facts(_walk(data)) == _facts(first) and served[0] == 0
