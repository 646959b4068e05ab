"""Throw-away stacks (tests, benchmarks) leave nothing behind: a cluster the postgres user could
not keep in the state dir lives under FALLBACK_ROOT and must go with it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from infra.postgres import FALLBACK_ROOT, discard_cluster

root_only = pytest.mark.skipif(os.geteuid() != 0,
                               reason="the fallback cluster only exists when run as root")


def _record(state: Path, root: Path) -> None:
    (state / "pg").mkdir(parents=True)
    (state / "pg" / "datadir").write_text(f"{root}\n")


@root_only
def test_discard_removes_the_fallback_cluster_and_nothing_else(tmp_path) -> None:
    cluster = Path(tempfile.mkdtemp(prefix="pg-test-", dir=FALLBACK_ROOT))
    (cluster / "data").mkdir()
    _record(tmp_path / "a", cluster)
    discard_cluster(tmp_path / "a")
    assert not cluster.exists()

    # A record that points anywhere else (a cluster inside some state dir) is left alone.
    elsewhere = tmp_path / "kept"
    (elsewhere / "data").mkdir(parents=True)
    _record(tmp_path / "b", elsewhere)
    discard_cluster(tmp_path / "b")
    assert (elsewhere / "data").is_dir()
    discard_cluster(tmp_path / "never-started")  # no record: nothing to do


def _leftovers() -> set[Path]:
    return (set(FALLBACK_ROOT.glob("pg-*"))
            | set(Path(tempfile.gettempdir()).glob("sohoa-bench-consumer-*")))


@root_only
@pytest.mark.integration
def test_the_consumer_benchmark_leaves_no_cluster_behind() -> None:
    """A run of `python -m bench.bench_consumer` leaves no cluster (0.3–2 GB each) in
    FALLBACK_ROOT: left there, runs would fill the disk."""
    import psycopg

    from bench.bench_consumer import postgres

    before = _leftovers()
    with postgres(None) as new_db:
        with psycopg.connect(new_db("leak"), autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert _leftovers() - before  # the cluster and state dir exist while it runs
    assert _leftovers() == before
