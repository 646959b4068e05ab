"""Confined page reads (`streams/sources.py`): a worker reads only regular files under the
roots of the event's own site, size-capped and time-limited, and a refusal tells nothing about
the file. Real files, links, FIFOs and devices; the last test runs the real OCR app."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import threading
import time
from pathlib import Path

import pytest

from sohoa.config import Settings, SourcesConfig
from sohoa.events import PageChecked, PageScanned
from streams.sources import REFUSED, PageSources, SourceError, SourceRefused, _within
from tests.support import pages
from tests.support.pages import PageSpec

SITE = "xa-nguon"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "hot"
    page = pages.write_page(root / "UBND" / "HS-1" / "001.png", PageSpec())
    outside = pages.write_page(tmp_path / "elsewhere" / "secret.png", PageSpec(seed=4))
    return {"root": root, "page": page, "outside": outside, "tmp": tmp_path}


def policy(root: Path, **kw) -> PageSources:
    return PageSources({SITE: [str(root)]}, [], kw.get("max_bytes", 1 << 30),
                       kw.get("timeout", 30.0))


def refused(src: PageSources, uri: str, digest: str = "0" * 64, site: str = SITE) -> str:
    with pytest.raises(SourceRefused) as info:
        src.read_verified(site, uri, digest)
    assert str(info.value) == REFUSED  # the published reason: the same for every refusal
    return info.value.detail


def test_a_page_under_the_sites_root_is_read_and_verified(tree) -> None:
    src = policy(tree["root"])
    page = tree["page"]
    assert src.read_verified(SITE, page.as_uri(), sha(page)) == page.read_bytes()
    with src.open_verified(SITE, page.as_uri(), sha(page)) as vf:
        assert vf.size == page.stat().st_size
        assert vf.file.read() == page.read_bytes()
        assert Path(vf.path).read_bytes() == page.read_bytes()  # the path names the open file


def test_a_valid_page_outside_the_roots_is_refused_like_a_missing_one(tree) -> None:
    src = policy(tree["root"])
    out = tree["outside"]
    refused(src, out.as_uri(), sha(out))
    refused(src, (out.parent / "no-such.png").as_uri())
    refused(src, "file:///etc/passwd")
    # Another site's roots are outside this site's.
    other = PageSources({SITE: [str(tree["root"])], "xa-khac": [str(out.parent)]}, [],
                        1 << 30, 30.0)
    refused(other, out.as_uri(), sha(out))
    assert other.read_verified("xa-khac", out.as_uri(), sha(out)) == out.read_bytes()


@pytest.mark.parametrize("tail", [
    "UBND/%2e%2e/%2e%2e/../elsewhere/secret.png",
    "UBND/%2E%2E/%2E%2E/%2E%2E/elsewhere/secret.png",
    "UBND/./HS-1/001.png",
    "UBND//HS-1/001.png",
    "UBND/HS-1/001.png%00.txt",
])
def test_traversal_and_odd_components_are_refused_without_touching_the_disk(tree, tail) -> None:
    uri = f"file://{tree['root'].as_posix()}/{tail}"
    refused(policy(tree["root"]), uri)


def test_other_schemes_hosts_and_queries_are_refused(tree) -> None:
    src = policy(tree["root"])
    p = tree["page"]
    for uri in (f"http://127.0.0.1{p.as_posix()}", f"s3://bucket{p.as_posix()}",
                f"file://example.org{p.as_posix()}", f"{p.as_uri()}?x=1", p.as_posix(),
                f"{p.as_uri()}#frag"):
        refused(src, uri, sha(p))


def test_links_are_resolved_and_refused_when_they_leave_the_root(tree) -> None:
    root, out, page = tree["root"], tree["outside"], tree["page"]
    (root / "UBND" / "link.png").symlink_to(out)
    (root / "UBND" / "dir-link").symlink_to(out.parent, target_is_directory=True)
    (root / "UBND" / "zero.png").symlink_to("/dev/zero")
    (root / "UBND" / "loop.png").symlink_to(root / "UBND" / "loop.png")
    src = policy(root)
    for name in ("link.png", "dir-link/secret.png", "dir-link/nothing.png", "zero.png",
                 "loop.png"):
        refused(src, f"{(root / 'UBND').as_uri()}/{name}", sha(out))
    (root / "UBND" / "inner.png").symlink_to(page)  # leads to the site's own page
    inner = (root / "UBND" / "inner.png").as_uri()
    assert src.read_verified(SITE, inner, sha(page)) == page.read_bytes()


def test_a_link_swapped_in_after_the_check_is_not_followed(tree) -> None:
    """The open walks the resolved path without following links: a component replaced by a
    link between the resolution and the open is refused."""
    from streams.sources import _open_confined

    root, out = tree["root"], tree["outside"]
    real_root = os.path.realpath(root)
    os.rename(root / "UBND" / "HS-1", root / "UBND" / "HS-1.old")
    (root / "UBND" / "HS-1").symlink_to(out.parent, target_is_directory=True)
    (out.parent / "001.png").write_bytes(out.read_bytes())
    with pytest.raises(SourceRefused):
        _open_confined(real_root, ["UBND", "HS-1", "001.png"], 1 << 30)


def test_a_root_that_is_itself_a_link_is_followed(tree) -> None:
    alias = tree["tmp"] / "alias"
    alias.symlink_to(tree["root"], target_is_directory=True)
    page = tree["page"]
    via_alias = PageSources({SITE: [str(alias)]}, [], 1 << 30, 30.0)
    assert via_alias.read_verified(SITE, page.as_uri(), sha(page)) == page.read_bytes()
    real = (alias / "UBND" / "HS-1" / "001.png").as_uri()
    assert policy(tree["root"]).read_verified(SITE, real, sha(page)) == page.read_bytes()


def test_fifo_device_and_oversize_are_refused_and_nothing_hangs(tree) -> None:
    root = tree["root"]
    fifo = root / "UBND" / "fifo.png"
    os.mkfifo(fifo)
    big = root / "UBND" / "big.tif"
    big.write_bytes(os.urandom(300_000))
    cases = [fifo.as_uri(), big.as_uri(), "file:///dev/zero"]
    if os.geteuid() == 0:  # a device node inside the root itself
        dev = root / "UBND" / "zero.tif"
        os.mknod(dev, stat.S_IFCHR | 0o600, os.makedev(1, 5))
        cases.append(dev.as_uri())
    src = policy(root, max_bytes=200_000)
    details: list[str] = []
    worker = threading.Thread(target=lambda: details.extend(
        refused(src, uri, sha(big)) for uri in cases), daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "a read hung"
    assert len(details) == len(cases)
    # The reasons for the centre's log differ; what is published does not.
    assert "regular" in details[0] and "over sources.max_bytes" in details[1]
    with pytest.raises(SourceRefused), src.open_verified(SITE, big.as_uri(), sha(big)):
        pass


def test_inside_the_root_the_plain_reasons_carry_no_hash(tree) -> None:
    src = policy(tree["root"])
    page = tree["page"]
    with pytest.raises(SourceError) as info:
        src.read_verified(SITE, page.as_uri(), "0" * 64)
    assert str(info.value) == "sha256 mismatch: file changed since it was scanned"
    assert sha(page)[:6] not in str(info.value)
    with pytest.raises(SourceError, match=r"^unreadable: No such file"):
        src.read_verified(SITE, (page.parent / "002.png").as_uri(), "0" * 64)


def test_a_read_that_never_answers_times_out() -> None:
    never = threading.Event()
    closed: list[int] = []
    started = time.monotonic()
    with pytest.raises(SourceError, match="timed out"):
        _within(0.5, lambda: never.wait(30) and 7, closed.append)
    assert time.monotonic() - started < 20
    never.set()  # the helper finishes late: its result is handed to the cleanup, not lost
    deadline = time.monotonic() + 10
    while not closed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert closed == [7]


def test_policy_from_settings_and_default_roots(tmp_path: Path) -> None:
    s = Settings(watcher={"site_id": "demo", "roots": [tmp_path / "demo"]},
                 sources={"sites": {"xa-a": {"roots": [tmp_path / "a"]}},
                          "default_roots": [str(tmp_path / "share" / "{site_id}")]})
    src = PageSources.from_settings(s)
    assert src.roots_for("demo") == [str(tmp_path / "demo")]
    assert src.roots_for("xa-a") == [str(tmp_path / "a")]
    assert src.roots_for("xa-b") == [str(tmp_path / "share" / "xa-b")]
    s.sources.watcher_roots = False
    assert PageSources.from_settings(s).roots_for("demo") == [str(tmp_path / "share" / "demo")]
    assert PageSources({}, [], 1, 1.0).roots_for("any") == []  # nothing configured: nothing
    with pytest.raises(ValueError, match="extra"):
        SourcesConfig.model_validate({"sites": {"xa-a": {"roots": ["/x"], "root": "/y"}}})
    with pytest.raises(ValueError, match="not a site id"):
        SourcesConfig.model_validate({"sites": {"../x": {"roots": ["/x"]}}})


# --- the real OCR app on the real stack -------------------------------------------------------

@pytest.mark.integration
def test_the_ocr_app_refuses_pages_outside_the_sites_roots(stack, tmp_path: Path) -> None:
    from tests.support.procs import SohoaProcess, wait_for
    from tests.support.streams_helpers import (
        closed,
        manifest,
        page_event,
        read_all,
        send,
        streams_env,
    )

    root = tmp_path / "hot"
    env = streams_env(stack, tmp_path, SOHOA_QC__WORKERS="1",
                      SOHOA_SOURCES__DEFAULT_ROOTS="[]",
                      SOHOA_SOURCES__WATCHER_ROOTS="false",
                      SOHOA_SOURCES__MAX_BYTES="2000000",
                      SOHOA_SOURCES__SITES=json.dumps({SITE: {"roots": [str(root)]}}))
    inside = pages.write_page(root / "UBND" / "HS-IN" / "001.png",
                              PageSpec(text=pages.text_lines(6, 1)))
    outside = pages.write_page(tmp_path / "elsewhere" / "001.png",
                               PageSpec(text=pages.text_lines(6, 5)))
    (root / "UBND" / "HS-LINK").mkdir(parents=True)
    (root / "UBND" / "HS-LINK" / "001.png").symlink_to(outside)
    os.mkfifo(root / "UBND" / "fifo.png")
    (root / "UBND" / "big.tif").write_bytes(os.urandom(2_500_000))

    def crafted(code: str, uri: str, digest: str) -> PageScanned:
        return PageScanned.make(site_id=SITE, fonds="UBND", file_code=code, document="001.png",
                                number=1, uri=uri, sha256=digest, size_bytes=1000,
                                media_type="image/png", path=f"UBND/{code}/001.png")

    trav = f"{root.as_uri()}/UBND/%2e%2e/%2e%2e/elsewhere/001.png"
    cases = {
        "HS-OUT": page_event(SITE, "HS-OUT", 1, outside),
        "HS-NONE": crafted("HS-NONE", (tmp_path / "elsewhere" / "002.png").as_uri(), sha(outside)),
        "HS-TRAV": crafted("HS-TRAV", trav, sha(outside)),
        "HS-LINK": crafted("HS-LINK", (root / "UBND" / "HS-LINK" / "001.png").as_uri(),
                           sha(outside)),
        "HS-FIFO": crafted("HS-FIFO", (root / "UBND" / "fifo.png").as_uri(), "1" * 64),
        "HS-ZERO": crafted("HS-ZERO", "file:///dev/zero", "2" * 64),
        "HS-BIG": crafted("HS-BIG", (root / "UBND" / "big.tif").as_uri(),
                          sha(root / "UBND" / "big.tif")),
    }
    events: list = [manifest(SITE, "HS-IN", 1), page_event(SITE, "HS-IN", 1, inside),
                    closed(SITE, "HS-IN")]
    for code, ev in cases.items():
        events += [manifest(SITE, code, 1), ev, closed(SITE, code)]
    want = {"HS-IN", *cases}
    proc = SohoaProcess(["streams", "--role", "all"], env, tmp_path / "streams.log")
    try:
        send(stack, env["SOHOA_TOPICS__SITE_EVENTS"], events)

        def checked() -> dict[str, PageChecked] | None:
            got = {e.file_code: e for e in read_all(stack, env["SOHOA_TOPICS__FILE_EVENTS"])
                   if isinstance(e, PageChecked)}
            return got if set(got) >= want else None

        got = wait_for(checked, 300, "a page check of every file", (proc,), interval=2.0)
        assert proc.alive()
    finally:
        proc.stop()
    assert got["HS-IN"].passed, got["HS-IN"].checks
    for code in cases:
        decode = next(c for c in got[code].checks if c.check == "decode")
        assert not got[code].passed and decode.value == REFUSED, (code, decode)
        text = json.dumps([c.model_dump(mode="json") for c in got[code].checks])
        assert not re.search(r"[0-9a-f]{8}", text.replace(REFUSED, "")), text  # no hash part
