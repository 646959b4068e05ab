"""What the assembly worker's decoded file states cost, this tree beside another commit's:
bytes a decoded page holds (tracemalloc over 2,000 decoded states of 50 pages, the shape of
``bench_latency``'s files) and the microseconds to decode one, and the idle check's test of
an open file of 50 pages (is it due to close?).

    python -m bench.bench_state_cache                  # against 5d4a62b
    python -m bench.bench_state_cache --against REV --files 2000 --pages 50

The other commit runs from a ``git archive`` of it in a temp dir, in a child process, in turn
with this tree's; medians of ``--rounds`` rounds each.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from bench.common import emit

ROOT = Path(__file__).resolve().parent.parent


def measure(files: int, pages: int) -> dict[str, float]:
    """This process's tree: run in the child for each side."""
    from sohoa.events import PageScanned
    from streams import state_codec
    from streams.assembly import FileState

    raws = []
    for f in range(files):
        st = FileState(site_id="s-001", file_code=f"HS-{f:05d}")
        for k in range(pages):
            st.apply(PageScanned.make(
                site_id="s-001", fonds="UBND", file_code=st.file_code,
                document=f"{k + 1:04d}.tif", number=k + 1,
                uri=f"file:///scan/s-001/{f * pages + k}.tif", sha256=f"{f * pages + k:064x}",
                size_bytes=100_000, media_type="image/tiff"), 0.0)
        raws.append(state_codec.encode_state(st))
    gc.collect()
    tracemalloc.start()
    states = [state_codec.decode_state(r) for r in raws]
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n = sum(len(s.pages) for s in states)
    del states
    t = time.perf_counter()
    for r in raws:
        state_codec.decode_state(r)
    decode_s = time.perf_counter() - t
    due = getattr(state_codec, "is_due", None)
    t = time.perf_counter()
    for r in raws:
        if due is not None:
            due(r, 1e9, 3600.0, 60.0)
        else:
            state_codec.decode_state(r).due(1e9, 3600.0, 60.0)
    due_s = time.perf_counter() - t
    return {"bytes_a_page": held / n, "decode_us_a_page": decode_s / n * 1e6,
            "idle_test_us_a_file": due_s / len(raws) * 1e6}


def _side(src: Path, files: int, pages: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run([sys.executable, "-c",
                          "import json, sys; from bench.bench_state_cache import measure; "
                          f"print(json.dumps(measure({files}, {pages})))"],
                         cwd=src, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(against: str, files: int, pages: int, rounds: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="sohoa-bench-state-") as tmp:
        other = Path(tmp)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", against],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(other)], input=archive, check=True)
        # the other tree has no copy of this bench: give it this file
        (other / "bench" / "bench_state_cache.py").write_bytes(Path(__file__).read_bytes())
        sides: dict[str, list[dict[str, float]]] = {"this tree": [], against: []}
        for i in range(rounds):
            for name, src in (("this tree", ROOT), (against, other)):
                sides[name].append(_side(src, files, pages))
                print(f"round {i + 1} {name}: {sides[name][-1]}", file=sys.stderr)
    med = {name: {k: round(statistics.median(r[k] for r in rs), 2) for k in rs[0]}
           for name, rs in sides.items()}
    return {"name": "state_cache", "files": files, "pages_per_file": pages,
            "against": against, "rounds": rounds, "medians": med}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", default="5d4a62b", help="the commit to compare with")
    ap.add_argument("--files", type=int, default=2000, help="decoded file states")
    ap.add_argument("--pages", type=int, default=50, help="pages in each file")
    ap.add_argument("--rounds", type=int, default=3, help="alternated rounds of both sides")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args(argv)
    return emit(run(args.against, args.files, args.pages, args.rounds), args.json)


if __name__ == "__main__":
    main()
