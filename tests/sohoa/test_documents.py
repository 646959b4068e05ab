"""sohoa.documents: page counts and page digests from the container, truncation, digest
stability across re-saves, and open_document on every format (real files, real decoders)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, TiffImagePlugin

from sohoa.documents import (
    DIGEST_PREFIX,
    DocumentRejected,
    inspect_document,
    open_document,
)
from tests.support import labelled_pages as lp
from tests.support import pages
from tests.support.pages import PageSpec


def facts(path: Path):
    with open(path, "rb") as f:
        return inspect_document(f, path.stat().st_size)


def rejected(path: Path) -> DocumentRejected:
    with pytest.raises(DocumentRejected) as e:
        facts(path)
    return e.value


def page(seed: int, **kw) -> Image.Image:
    return lp.page_image(text=pages.text_lines(6, seed), **kw)


# --- inspect_document ---------------------------------------------------------------------

def test_single_page_images_digest_is_the_file_hash(tmp_path: Path) -> None:
    for name, fmt in (("a.jpg", "JPEG"), ("a.png", "PNG")):
        p = tmp_path / name
        page(1).save(p, fmt)
        f = facts(p)
        assert f.page_sha256 == (hashlib.sha256(p.read_bytes()).hexdigest(),) == (f.sha256,)


def test_multipage_tiff_counts_and_digests_every_directory(tmp_path: Path) -> None:
    p = pages.multipage_tiff(tmp_path / "m.tif", [PageSpec(seed=s, text=pages.text_lines(5, s))
                                                  for s in range(4)])
    f = facts(p)
    assert f.media_type == "image/tiff" and f.pages == 4
    assert len(set(f.page_sha256)) == 4 and f.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()
    with open_document(p, f.media_type) as doc:
        assert doc.page_count == 4
        assert [doc.page_sha256(i) for i in (1, 2, 3, 4)] == list(f.page_sha256)


def test_tiff_digest_encoding_is_pinned(tmp_path: Path) -> None:
    """The encoding of page-model.md, written out here independently: change it only with
    a new DIGEST_VERSION (every stored digest would otherwise look like a rescan)."""
    arr = np.arange(6 * 4 * 3, dtype=np.uint8).reshape(4, 6, 3)
    p = lp.write_tiff(tmp_path / "pin.tif", [arr], dpi=300)
    strip = arr.tobytes()
    # Defining tags in tag order (NewSubfileType and the strip offsets are not), numbers in
    # decimal, rationals as numerator,denominator, then the strip lengths.
    encoding = (b"256:i:6;257:i:4;258:i:8,8,8;259:i:1;262:i:2;277:i:3;278:i:4;"
                b"282:r:300,1;283:r:300,1;284:i:1;296:i:2;L:72;")
    expected = hashlib.sha256(b"sohoa-page-digest/1\x00tiff\x00" + encoding + strip).hexdigest()
    assert DIGEST_PREFIX == b"sohoa-page-digest/1\x00"
    assert facts(p).page_sha256 == (expected,)


def test_tiff_digest_encoding_of_floats_signed_and_raw_bytes_is_pinned(tmp_path: Path) -> None:
    """Defining tags a writer stores as float, double, signed short or undefined bytes: floats
    as Python writes them, signed numbers in decimal, raw bytes with their length first."""
    arr = np.arange(6 * 4 * 3, dtype=np.uint8).reshape(4, 6, 3)
    info = TiffImagePlugin.ImageFileDirectory_v2()
    for tag, typ, value in ((282, 11, 72.25), (283, 12, 0.1), (339, 8, (1, -1, 1)),
                            (347, 7, b"\x01\x02;\x00")):
        info[tag] = value
        info.tagtype[tag] = typ
    p = tmp_path / "kinds.tif"
    Image.fromarray(arr).save(p, "TIFF", compression="raw", tiffinfo=info)
    encoding = (b"256:i:6;257:i:4;258:i:8,8,8;259:i:1;262:i:2;277:i:3;278:i:4;"
                b"282:f:72.25;283:f:0.1;284:i:1;339:i:1,-1,1;347:b:4:\x01\x02;\x00;L:72;")
    expected = hashlib.sha256(DIGEST_PREFIX + b"tiff\x00" + encoding + arr.tobytes()).hexdigest()
    assert facts(p).page_sha256 == (expected,)


def test_tiff_digest_ignores_byte_order_flavour_and_layout(tmp_path: Path) -> None:
    """Classic and BigTIFF, II and MM, strips in order or backwards (read again on their
    own, in a file over the one-read size), a thumbnail directory: same pages, same
    digests, and the thumbnail is not a page."""
    a, b = np.asarray(page(1)), np.asarray(page(2))
    seen = set()
    for bo in "<>":
        for big in (False, True):
            for reverse in (False, True):
                p = lp.write_tiff(tmp_path / f"{bo == '<'}{big}{reverse}.tif", [a, b], bo=bo,
                                  big=big, strips=7, reverse=reverse, thumbnail=True)
                assert p.stat().st_size > 1 << 20
                f = facts(p)
                assert f.pages == 2
                with open_document(p) as doc:
                    assert doc.page_count == 2
                    assert (doc.page_sha256(1), doc.page_sha256(2)) == f.page_sha256
                    if bo == ">" and big:  # Pillow cannot: said plainly, not "corrupt"
                        with pytest.raises(DocumentRejected) as e:
                            doc.page_image(1)
                        assert e.value.reason == "unreadable" and "BigTIFF" in e.value.detail
                    else:
                        assert (np.asarray(doc.page_image(2)) == b).all()
                seen.add(f.page_sha256)
    assert len(seen) == 1


def test_tiff_digest_is_stable_when_pages_are_added_or_changed(tmp_path: Path) -> None:
    p1, p2, p3 = (PageSpec(seed=s, text=pages.text_lines(5, s)) for s in range(3))
    two = facts(pages.multipage_tiff(tmp_path / "two.tif", [p1, p2]))
    three = facts(pages.multipage_tiff(tmp_path / "three.tif", [p1, p2, p3]))
    changed = facts(pages.multipage_tiff(tmp_path / "chg.tif", [p1, PageSpec(seed=9, skew_deg=1)]))
    assert three.page_sha256[:2] == two.page_sha256 and three.sha256 != two.sha256
    assert changed.page_sha256[0] == two.page_sha256[0]
    assert changed.page_sha256[1] != two.page_sha256[1]
    # Appended in place (Pillow's appending writer): the first page's bytes stay where they
    # were, only the directory chain grows.
    grow = tmp_path / "grow.tif"
    pages.render_page(p1).save(grow, "TIFF", compression="tiff_lzw", dpi=(200, 200))
    before = facts(grow)
    # (Pillow appends through its appending writer only for two frames or more.)
    pages.render_page(p2).save(grow, "TIFF", compression="tiff_lzw", dpi=(200, 200),
                               save_all=True, append=True,
                               append_images=[pages.render_page(p3)])
    after = facts(grow)
    assert after.pages == 3 and after.page_sha256[0] == before.page_sha256[0]
    assert after.page_sha256[1:] == three.page_sha256[1:]


def test_pdf_counts_pages_and_digests_survive_a_resave(tmp_path: Path) -> None:
    import pikepdf

    imgs = [page(s) for s in range(3)]
    two = lp.image_pdf(tmp_path / "two.pdf", [lp.dct_page(imgs[0]), lp.flate_page(imgs[1])])
    f2 = facts(two)
    assert f2.media_type == "application/pdf" and f2.pages == 2 and len(set(f2.page_sha256)) == 2
    # Another page added and the document saved again by another writer (qpdf renumbers
    # objects, compresses the object streams): the first two pages keep their digests.
    with pikepdf.open(two) as pdf:
        extra = pikepdf.open(lp.image_pdf(tmp_path / "x.pdf", [lp.dct_page(imgs[2])]))
        pdf.pages.append(extra.pages[0])
        pdf.save(tmp_path / "three.pdf", object_stream_mode=pikepdf.ObjectStreamMode.generate)
    f3 = facts(tmp_path / "three.pdf")
    assert f3.pages == 3 and f3.page_sha256[:2] == f2.page_sha256
    with open_document(tmp_path / "three.pdf") as doc:
        assert [doc.page_sha256(i) for i in (1, 2, 3)] == list(f3.page_sha256)


def test_pdf_digest_is_pinned(tmp_path: Path) -> None:
    """A regression pin of the PDF page encoding: change it only with a new DIGEST_VERSION."""
    import pikepdf

    img = Image.new("L", (8, 8), 200)
    p = lp.image_pdf(tmp_path / "pin.pdf", [(img, 72, b"\x00" * 64, {
        "/ColorSpace": pikepdf.Name.DeviceGray, "/BitsPerComponent": 8})])
    assert facts(p).page_sha256 == (PDF_PIN,)


PDF_PIN = "81f8f0289afbdacdd6e9292f141f5abc4216e515d1f20fa78b64c48afdeffd6a"


def test_pdf_pages_are_counted_without_decoding_an_image(tmp_path: Path, monkeypatch) -> None:
    """120 JBIG2 pages, counted and digested with no JBIG2 decoder reachable; decoding one
    of them (the worker's side) needs it and says so."""
    img = page(1, mode="1")
    p = lp.image_pdf(tmp_path / "big.pdf", [lp.jbig2_page(img)] * 120)
    monkeypatch.setenv("PATH", str(tmp_path))  # no jbig2dec on the PATH
    f = facts(p)
    assert f.pages == 120 and len(set(f.page_sha256)) == 1  # the same page 120 times
    with open_document(p) as doc, pytest.raises(DocumentRejected) as e:
        doc.page_image(1)
    assert e.value.reason == "unreadable" and "JBIG2" in e.value.detail


@pytest.mark.parametrize("cut", ["tiff-page-3", "pdf-tail", "png", "jpeg"])
def test_truncated_documents_are_corrupt(tmp_path: Path, cut: str) -> None:
    if cut == "tiff-page-3":
        whole = pages.multipage_tiff(tmp_path / "m.tif", [PageSpec(seed=s) for s in range(3)])
        data = whole.read_bytes()
        with Image.open(whole) as im:
            assert isinstance(im, TiffImagePlugin.TiffImageFile)
            im.seek(2)
            last = max(o + n for o, n in zip(im.tag_v2[273], im.tag_v2[279], strict=True))
        # Pillow writes each page's strips before its directory: cut inside page 3's strips.
        data = data[: last - 100]
    elif cut == "pdf-tail":
        data = pages.scanner_pdf(tmp_path / "s.pdf").read_bytes()
        data = data[: len(data) * 2 // 3]
    else:
        buf = io.BytesIO()
        page(1).save(buf, cut.upper())
        data = buf.getvalue()[:-200]
    p = tmp_path / "cut"
    p.write_bytes(data)
    e = rejected(p)
    assert e.reason == "corrupt" and "truncated" in e.detail.lower(), e.detail


def test_encrypted_empty_and_foreign_files(tmp_path: Path) -> None:
    assert rejected(pages.encrypted_pdf(tmp_path / "e.pdf")).reason == "encrypted"
    (tmp_path / "empty").write_bytes(b"")
    assert rejected(tmp_path / "empty").reason == "empty"
    Image.new("RGB", (9, 9)).save(tmp_path / "g.gif")
    e = rejected(tmp_path / "g.gif")
    assert e.reason == "not_image" and "GIF" in e.detail


def test_damaged_pdf_reason_has_no_object_repr(tmp_path: Path) -> None:
    broken = tmp_path / "b.pdf"
    broken.write_bytes(b"%PDF-1.4\n" + b"\x00garbage" * 50 + b"\n%%EOF\n")
    e = rejected(broken)
    assert e.reason == "corrupt" and " at 0x" not in e.detail and "<" not in e.detail, e.detail


# --- open_document ------------------------------------------------------------------------

def test_open_document_decodes_every_pdf_image_codec(tmp_path: Path) -> None:
    """One PDF whose pages use DCT, Flate, JBIG2 (jbig2dec), CCITT G4 and JPX (OpenJPEG):
    each decodes to the page it was made from."""
    colour, bilevel = page(4), page(4, mode="1")
    p = lp.image_pdf(tmp_path / "all.pdf", [lp.dct_page(colour), lp.flate_page(colour),
                                            lp.jbig2_page(bilevel), lp.ccitt_page(bilevel),
                                            lp.jpx_page(colour)])
    want_grey = np.asarray(colour.convert("L"), dtype=np.int16)
    want_bits = np.asarray(bilevel.convert("L")) > 127
    with open_document(p, "application/pdf") as doc:
        assert doc.page_count == 5
        fmts = [doc.page_info(i).fmt for i in range(1, 6)]
        assert fmts == ["PDF/DCTDecode", "PDF/FlateDecode", "PDF/JBIG2Decode",
                        "PDF/CCITTFaxDecode", "PDF/JPXDecode"]
        for i in (1, 2, 5):
            got = np.asarray(doc.page_image(i).convert("L"), dtype=np.int16)
            assert np.abs(got - want_grey).mean() < 3, i  # lossy codecs: close, not equal
            info = doc.page_info(i)
            assert info.dpi is not None and info.width_mm is not None
            assert round(info.dpi) == 200 and round(info.width_mm) == 210
        for i in (3, 4):
            bits = np.asarray(doc.page_image(i).convert("L")) > 127
            assert (bits == want_bits).all(), i  # bilevel codecs are lossless


def test_open_document_on_image_formats(tmp_path: Path) -> None:
    base = page(5)
    grey = np.asarray(base.convert("L"), dtype=np.int16)
    made = {
        "lzw.tif": lambda p: base.save(p, "TIFF", compression="tiff_lzw", dpi=(300, 300)),
        "deflate.tif": lambda p: base.save(p, "TIFF", compression="tiff_adobe_deflate"),
        "jpeg.tif": lambda p: base.save(p, "TIFF", compression="jpeg", quality=92),
        "rgb48.tif": lambda p: lp.rgb48_tiff(p, base),
        "grey16.png": lambda p: lp.grey16_png(p, base),
        "cmyk.jpg": lambda p: base.convert("CMYK").save(p, "JPEG", quality=92),
        "palette.png": lambda p: base.quantize(colors=256).save(p, "PNG"),
        "alpha.png": lambda p: base.convert("RGBA").save(p, "PNG"),
    }
    for name, make in made.items():
        p = tmp_path / name
        make(p)
        with open_document(p) as doc:
            img = doc.page_image(1)
            assert img.mode in ("L", "RGB", "RGBA", "CMYK", "P"), (name, img.mode)
            got = np.asarray(img.convert("RGB").convert("L"), dtype=np.int16)
            # 16-bit samples scaled, not clipped to white; CMYK and palette close enough.
            assert np.abs(got - grey).mean() < 4, name
    with open_document(tmp_path / "lzw.tif") as doc:
        info = doc.page_info(1)
        assert info.dpi == 300 and info.fmt == "TIFF/tiff_lzw" and info.width_mm is not None
        assert round(info.width_mm) == 140


def test_open_document_page_errors_are_plain(tmp_path: Path) -> None:
    p = lp.vector_pdf(tmp_path / "v.pdf")
    with open_document(p) as doc:
        assert doc.page_count == 1 and len(doc.page_sha256(1)) == 64
        with pytest.raises(DocumentRejected) as e:
            doc.page_image(1)
        assert e.value.reason == "not_scan"
        with pytest.raises(DocumentRejected) as e:
            doc.page_sha256(2)
        assert e.value.reason == "not_found"
    with pytest.raises(DocumentRejected) as e:
        open_document(tmp_path / "gone.pdf")
    assert e.value.reason == "unreadable"
    with pytest.raises(DocumentRejected) as e:
        open_document(pages.encrypted_pdf(tmp_path / "e.pdf"))
    assert e.value.reason == "encrypted"
    jpg = pages.write_page(tmp_path / "a.jpg")
    with pytest.raises(DocumentRejected) as e:
        open_document(jpg, "image/tiff")  # replaced by another kind of file since the scan
    assert e.value.reason == "corrupt"
