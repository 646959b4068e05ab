"""Issue 18 on the real object store: the outputs bucket is versioned without object lock, the
pages bucket (the original scans) keeps its COMPLIANCE lock and the workers' key can delete
nothing there."""

from __future__ import annotations

import hashlib
import os

import pytest

from sohoa.objectstore import ObjectStore, StoreError, page_key

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
