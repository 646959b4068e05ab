"""Run every benchmark in bench/ and write one report: `bench/results/report.md` and `.json`.

    python -m bench                 # all benchmarks, default sizes
    python -m bench --only spine    # the ones whose module name contains 'spine'
    python -m bench --list

Benchmarks: agent, consumer, daily (the consumer's per-batch daily count beside the last
recount, e6836c5~1), deliver (packages per minute, package bytes per page), latency,
memory (resident memory of each long-running component
with a campaign behind it: 100,000 pages by default, `python -m bench.bench_memory --pages
1000000` for the issue's full campaign), ocr, qc (page QC of a 300-page PDF beside the same
pages as single files), restart (the assembly worker restarted, moved and taken over on its
RocksDB state, 200,000 pages by default), spine, streams, upload (drop to stored-and-acked
through the object store, beside a raw multipart PUT of the same bytes).

Each `bench/bench_*.py` is run as its own process (`python -m bench.<name> --json OUT`) so one
benchmark's memory or threads never colour another's figures; each writes its figures, raw
limits measured in the same run included, as JSON. The report adds the machine and versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PACKAGES = ("sohoa", "faust-streaming", "aiokafka", "kafka-python", "psycopg", "ocrmypdf",
            "watchdog", "prometheus-client", "pillow", "numpy")


def discover() -> list[str]:
    return sorted(p.stem for p in HERE.glob("bench_*.py"))


def machine() -> dict:
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    for tool, args in (("tesseract", ["--version"]), ("gs", ["--version"]),
                       ("java", ["-version"]), ("postgres", ["--version"])):
        exe = shutil.which(tool) or _pg_tool(tool)
        if exe:
            out = subprocess.run([exe, *args], capture_output=True, text=True)
            versions[tool] = (out.stdout or out.stderr).strip().splitlines()[0]
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_kb / 1024**2, 1),
            "os": platform.platform(), "python": platform.python_version(),
            "versions": versions}


def _pg_tool(name: str) -> str | None:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(found[-1]) if found else None


def run_one(name: str, timeout: float) -> dict:
    out = RESULTS / f"{name}.json"
    out.unlink(missing_ok=True)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", f"bench.{name}", "--json", str(out)],
                          capture_output=True, text=True, timeout=timeout)
    took = round(time.monotonic() - t0, 1)
    if proc.returncode != 0 or not out.exists():
        return {"name": name, "error": f"exit {proc.returncode}",
                "log": (proc.stderr or proc.stdout)[-3000:], "seconds": took}
    data = json.loads(out.read_text(encoding="utf-8"))
    data.setdefault("name", name)
    data["seconds"] = took
    return data


def render(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# sohoa — benchmark report",
        "",
        f"Run {report['started']} (UTC) with `python -m bench`.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}, "
        f"Python {m['python']}.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v) + ".",
        "",
        "Every figure stands beside the raw limit measured in the same run; absolute times on",
        "a 2-core machine are noisy, ratios less so.",
        "",
    ]
    for res in report["benchmarks"]:
        lines += [f"## {res['name']}", ""]
        if "error" in res:
            lines += [f"**Failed** ({res['error']}):", "", "```", res["log"], "```", ""]
            continue
        lines += ["| figure | value | unit | goal | met |", "|---|---|---|---|---|"]
        for f in res.get("figures", []):
            met = {None: "", True: "yes", False: "no"}[f.get("met")]
            lines.append(f"| {f['name']} | {f['value']} | {f.get('unit', '')} | "
                         f"{f.get('goal', '')} | {met} |")
        lines += ["", f"({res['seconds']} s)", ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", default=[], help="substring of module names")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per benchmark")
    args = ap.parse_args(argv)
    names = discover()
    if args.only:
        names = [n for n in names if any(s in n for s in args.only)]
    if args.list:
        print("\n".join(names))
        return 0
    RESULTS.mkdir(exist_ok=True)
    benchmarks: list[dict] = []
    report = {"started": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
              "benchmarks": benchmarks}
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {name} …", file=sys.stderr, flush=True)
        benchmarks.append(run_one(name, args.timeout))
    (RESULTS / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n",
                                         encoding="utf-8")
    (RESULTS / "report.md").write_text(render(report), encoding="utf-8")
    print(f"report: {RESULTS / 'report.md'}", file=sys.stderr)
    return 1 if any("error" in r for r in benchmarks) else 0


if __name__ == "__main__":
    sys.exit(main())
