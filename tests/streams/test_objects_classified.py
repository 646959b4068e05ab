"""Issue 18 on the real object store: a file whose OCR outputs were stored and which a late
manifest then makes classified keeps no version of them in the outputs bucket, while the
pages bucket (the original scans, object-locked) is left exactly as it was and the workers'
key can delete nothing there.

The file goes the way the workers take it, without Kafka: its events folded by the assembly's
own FileState (the late manifest gives the `reclassified` revision), each FileAssembled
handled by the OCR worker's FileProcessor (real Tesseract, pages read from the store with the
workers' key, outputs stored with it); every check of the buckets is the admin key's own
listing of versions."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from sohoa.config import Settings
from sohoa.events import FileAssembled, OcrCompleted
from sohoa.objectstore import ObjectStore, StoreError, page_key
from streams.app_ocr import FileProcessor
from streams.outputs import store_outputs
from tests.support.pages import PageSpec, text_lines, write_page
from tests.support.streams_helpers import assembled_from_store, manifest

PAGES, OUTPUTS = "sohoa-pages", "sohoa-outputs"
SITE = "xa-obj"


def _versions(admin: ObjectStore, bucket: str, prefix: str) -> list[tuple[str, str, bool]]:
    """(key, version id, is a delete marker) of everything under ``prefix``, as the admin
    sees it: the independent look."""
    r = admin._call("list_object_versions", Bucket=bucket, Prefix=prefix)
    assert not r.get("IsTruncated")
    return sorted([(v["Key"], v["VersionId"], False) for v in r.get("Versions", [])]
                  + [(m["Key"], m["VersionId"], True) for m in r.get("DeleteMarkers", [])])


def _denied(call) -> str:
    with pytest.raises(StoreError) as e:
        call()
    return e.value.code


@pytest.mark.ocr
def test_a_late_classified_manifest_leaves_no_ocr_output_in_the_store(
        objects, tmp_path: Path) -> None:
    admin = ObjectStore(objects.store("admin"), retries=0)
    workers_cfg = objects.store("workers")
    workers = ObjectStore(workers_cfg, retries=0)
    file_code = f"HS-MAT-{os.urandom(3).hex()}"
    prefix = f"{SITE}/UBND/{file_code}/"

    # The site's scan, stored in the pages bucket with the site's key.
    page = write_page(tmp_path / "hot" / "001.png",
                      PageSpec(size_mm=(90.0, 40.0), text=text_lines(2, 5), noise=0.001,
                               seed=int.from_bytes(os.urandom(4), "big")))
    data = page.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    ObjectStore(objects.store(f"site:{SITE}"), retries=0).put(PAGES, page_key(SITE, sha),
                                                              data, sha)
    pages_before = _versions(admin, PAGES, page_key(SITE, sha))
    assert len(pages_before) == 1

    state, public = assembled_from_store(SITE, file_code, sha, len(data), PAGES)
    assert public is not None and public.classification == "public"

    settings = Settings(store=workers_cfg,
                        ocr={"output_dir": tmp_path / "ocr", "backoff_s": 0.2},
                        streams={"data_dir": tmp_path / "faust", "qc_enabled": False})
    published: list[Any] = []
    dead: list[str] = []

    async def publish(ev: Any) -> None:
        published.append(ev)

    async def dead_letter(_fa: FileAssembled, reason: str) -> None:
        dead.append(reason)

    proc = FileProcessor(settings, publish_event=publish)
    proc.clean_scratch()
    try:
        # 1. The public file is OCR'd, its PDF and text stored by the worker itself; a package
        #    of it and a delete marker (an output replaced) lie there too.
        asyncio.run(proc.handle(public, dead_letter))
        assert [type(e) for e in published if isinstance(e, OcrCompleted)] == [OcrCompleted]
        folder = tmp_path / "ocr" / SITE / "UBND" / file_code
        assert (folder / "r1.pdf").is_file() and (folder / "r1.txt").is_file()
        stored = _versions(admin, OUTPUTS, prefix)
        assert sorted(k.rsplit(".", 1)[1] for k, _v, _m in stored) == ["pdf", "txt"]
        package = tmp_path / "goi.zip"
        package.write_bytes(b"PK" + os.urandom(500))
        [uri] = store_outputs(workers_cfg, SITE, "UBND", file_code, 1, [package])
        workers._call("delete_object", Bucket=OUTPUTS, Key=uri.split("/", 3)[3])
        assert sum(m for _k, _v, m in _versions(admin, OUTPUTS, prefix)) == 1

        # 2. The manifest comes late and makes the file classified: reassembled, handled.
        _changed, secret = state.apply(manifest(SITE, file_code, None,
                                                classification="secret"), 2000.0)
        assert secret is not None and secret.trigger == "reclassified"
        asyncio.run(proc.handle(secret, dead_letter))
    finally:
        proc.close()

    assert dead == []
    assert not [p for p in folder.iterdir() if p.suffix in (".pdf", ".txt", ".json")]
    # No version and no delete marker of any of its outputs is left in the outputs bucket.
    assert _versions(admin, OUTPUTS, prefix) == []
    # The pages bucket is untouched: the same single version, its bytes intact.
    assert _versions(admin, PAGES, page_key(SITE, sha)) == pages_before
    got = admin._call("get_object", Bucket=PAGES, Key=page_key(SITE, sha))["Body"].read()
    assert got == data


def test_workers_may_delete_outputs_but_never_pages(objects) -> None:
    """The outputs bucket is versioned without object lock; the pages bucket keeps its
    COMPLIANCE lock, and the workers' key may neither delete a page's version nor hide it
    behind a delete marker."""
    admin = ObjectStore(objects.store("admin"), retries=0)
    workers = ObjectStore(objects.store("workers"), retries=0)
    lock = admin._call("get_object_lock_configuration", Bucket=PAGES)["ObjectLockConfiguration"]
    assert lock["Rule"]["DefaultRetention"]["Mode"] == "COMPLIANCE"
    assert _denied(lambda: admin._call("get_object_lock_configuration", Bucket=OUTPUTS)) in (
        "ObjectLockConfigurationNotFoundError", "404")
    assert admin._call("get_bucket_versioning", Bucket=OUTPUTS)["Status"] == "Enabled"

    data = os.urandom(2000)
    sha = hashlib.sha256(data).hexdigest()
    key = page_key(SITE, sha)
    ObjectStore(objects.store(f"site:{SITE}"), retries=0).put(PAGES, key, data, sha)
    [(_k, version, _m)] = _versions(admin, PAGES, key)
    assert _denied(lambda: workers._call("delete_object", Bucket=PAGES, Key=key,
                                         VersionId=version)) == "AccessDenied"
    assert _denied(lambda: workers._call("delete_object", Bucket=PAGES,
                                         Key=key)) == "AccessDenied"
    r = workers._call("delete_objects", Bucket=PAGES, Delete={"Objects": [
        {"Key": key, "VersionId": version}, {"Key": key}]})
    assert not r.get("Deleted") and {e["Code"] for e in r["Errors"]} == {"AccessDenied"}
    assert _versions(admin, PAGES, key) == [(key, version, False)]

    out = f"{SITE}/_/HS-DEL-{os.urandom(3).hex()}/r1/{sha}.txt"
    workers.put(OUTPUTS, out, data, sha)
    [(_k, out_version, _m)] = _versions(admin, OUTPUTS, out)
    workers._call("delete_object", Bucket=OUTPUTS, Key=out, VersionId=out_version)
    assert _versions(admin, OUTPUTS, out) == []


def test_an_older_locked_outputs_bucket_loses_its_default_retention(objects) -> None:
    """A stack made before has its outputs bucket locked: `ensure_buckets` removes the
    default retention, so what is stored from then on can be deleted; what was stored
    before stays locked until its retention ends (COMPLIANCE: nobody can shorten it)."""
    admin = ObjectStore(objects.store("admin"), retries=0)
    bucket = f"sohoa-old-outputs-{os.urandom(3).hex()}"
    admin.ensure_locked_bucket(bucket, 1)
    old = b"stored while locked"
    admin._call("put_object", Bucket=bucket, Key="a/old.txt", Body=old)
    assert admin.ensure_versioned_bucket(bucket) is True
    assert admin.ensure_versioned_bucket(bucket) is False  # once is enough
    admin._call("put_object", Bucket=bucket, Key="a/new.txt", Body=b"stored after")
    with pytest.raises(StoreError, match="1 versions under a/ not deleted") as e:
        admin.delete_versions(bucket, "a/")
    assert e.value.code == "AccessDenied" and not e.value.transient
    assert [k for k, _v, _m in _versions(admin, bucket, "a/")] == ["a/old.txt"]
