"""veraPDF, the PDF Association's reference PDF/A validator: fetched from Maven Central by
infra/verapdf/pom.xml (cached under ~/.cache/sohoa like the Kafka jars) and run on files.

The OCR tests and ``bench/bench_ocr.py`` judge every PDF/A the OCR stage writes with it, so
"PDF/A-2b" is an independent validator's verdict, not our own declaration.

    python -m infra.verapdf --ensure          # fetch the jars (the set-up does this)
    python -m infra.verapdf out/*.pdf         # validate as PDF/A-2b; exit 1 if any fails
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from infra.kafka import java_bin
from infra.maven import fetch_jars
from sohoa.config import StackConfig
from sohoa.errors import ExitCode

log = logging.getLogger(__name__)

POM_DIR = Path(__file__).resolve().parent / "verapdf"
MAIN_CLASS = "org.verapdf.apps.GreenfieldCliWrapper"


def libs_dir(stack: StackConfig) -> Path:
    return Path.home() / ".cache" / "sohoa" / f"verapdf-{stack.verapdf_version}" / "libs"


def _has_cli_jar(libs: Path) -> bool:
    return libs.is_dir() and any(libs.glob("cli-*.jar"))


def ensure_libs(stack: StackConfig | None = None) -> Path:
    """The veraPDF jars, resolved with Maven when missing."""
    stack = stack or StackConfig()
    libs = libs_dir(stack)
    if _has_cli_jar(libs):
        return libs
    fetch_jars("veraPDF", stack.verapdf_version, POM_DIR, libs,
               {"verapdf.libs.dir": str(libs), "verapdf.version": stack.verapdf_version},
               _has_cli_jar)
    return libs


@dataclass
class Verdict:
    """veraPDF's verdict on one file."""

    path: Path
    compliant: bool
    profile: str = ""
    # "clause-test: description" of each rule the file breaks.
    failed_rules: list[str] = field(default_factory=list)
    error: str = ""   # veraPDF could not judge the file (not a PDF, parser failure)

    def summary(self) -> str:
        if self.compliant:
            return f"{self.path}: PASS ({self.profile})"
        why = self.error or "; ".join(self.failed_rules) or "not compliant"
        return f"{self.path}: FAIL ({self.profile}): {why}"


def validate(paths: list[Path], flavour: str = "2b", stack: StackConfig | None = None,
             timeout_s: float = 600.0) -> list[Verdict]:
    """Validate ``paths`` against PDF/A ``flavour`` in one veraPDF run (one JVM start)."""
    if not paths:
        return []
    libs = ensure_libs(stack)
    cmd = [java_bin(), "-Xmx512m", "-cp", f"{libs}/*", MAIN_CLASS, "--format", "json",
           "--flavour", flavour, *(str(p) for p in paths)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    # veraPDF exits 1 when a file is not compliant; its report is what counts.
    try:
        report = json.loads(res.stdout)["report"]
    except (ValueError, KeyError, TypeError):
        raise RuntimeError(f"veraPDF gave no report (exit {res.returncode}): "
                           f"{(res.stderr or res.stdout)[-2000:]}") from None
    return parse_report(report, paths)


def parse_report(report: dict, paths: list[Path]) -> list[Verdict]:
    by_name: dict[str, Verdict] = {}
    for job in report.get("jobs", []):
        name = job.get("itemDetails", {}).get("name", "")
        results = job.get("validationResult") or []
        if not results:
            by_name[name] = Verdict(Path(name), False, error=str(
                job.get("taskException") or job.get("taskResult") or "no validation result"))
            continue
        res = results[0] if isinstance(results, list) else results
        failed = [f"{r.get('clause')}-{r.get('testNumber')}: {r.get('description', '')}"
                  for r in res.get("details", {}).get("ruleSummaries", [])
                  if r.get("ruleStatus", r.get("status", "")).lower() == "failed"]
        by_name[name] = Verdict(Path(name), bool(res.get("compliant")),
                                res.get("profileName", ""), failed)
    return [by_name.get(str(p)) or Verdict(p, False, error="not in veraPDF's report")
            for p in paths]


def main(argv: list[str] | None = None) -> ExitCode:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--ensure", action="store_true", help="fetch the jars if missing")
    ap.add_argument("--flavour", default="2b")
    ap.add_argument("files", nargs="*", type=Path)
    args = ap.parse_args(argv)
    if args.ensure:
        print(ensure_libs())
    verdicts = validate(args.files, args.flavour)
    for v in verdicts:
        print(v.summary())
    return ExitCode.OK if all(v.compliant for v in verdicts) else ExitCode.ERROR


if __name__ == "__main__":
    sys.exit(main())
