"""The E-ARK CSIP validator (eark-validator, PyPI) as an independent check of every package.

It pins lxml 5.1 while pyHanko needs 5.4 or later, so it lives in its own virtual environment
(``~/.cache/sohoa/eark-validator-<version>``, made with pip on first use and by `make
install`), and runs :mod:`deliver.csip_runner` there, which serves the CSIP vocabularies from
the copies in ``deliver/schemas/vocabularies`` (nothing is fetched at run time)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from deliver.xmlcheck import VOCABULARY_DIR

VERSION = "1.1.3"
SPEC = "V2.0.4"
RUNNER = Path(__file__).resolve().parent / "csip_runner.py"


def venv_dir() -> Path:
    return Path.home() / ".cache" / "sohoa" / f"eark-validator-{VERSION}"


def ensure() -> Path:
    """The validator's interpreter, its environment made when missing."""
    py = venv_dir() / "bin" / "python"
    if py.exists() and subprocess.run([str(py), "-c", "import eark_validator"],
                                      capture_output=True).returncode == 0:
        return py
    subprocess.run([sys.executable, "-m", "venv", str(venv_dir())], check=True)
    res = subprocess.run([str(py), "-m", "pip", "install", "-q", f"eark-validator=={VERSION}"],
                         capture_output=True, text=True, timeout=1800)
    if res.returncode != 0:
        raise RuntimeError(f"cài eark-validator {VERSION} thất bại: {res.stderr[-1500:]}")
    return py


def check(packages: list[Path]) -> dict[Path, list[str]]:
    """Each package's CSIP faults (errors only; warnings and infos are not faults)."""
    if not packages:
        return {}
    py = ensure()
    res = subprocess.run([str(py), str(RUNNER), str(VOCABULARY_DIR), SPEC,
                          *(str(p) for p in packages)], capture_output=True, text=True,
                         timeout=1800)
    if res.returncode != 0:
        raise RuntimeError(f"eark-validator failed (exit {res.returncode}): "
                           f"{res.stderr[-2000:]}")
    out: dict[Path, list[str]] = {}
    for line in res.stdout.splitlines():
        if not line.startswith("{"):
            continue
        item = json.loads(line)
        if "error" in item:
            out[Path(item["package"])] = [f"không kiểm tra được gói: {item['error']}"]
        else:
            out[Path(item["package"])] = faults(item["report"])
    return out


# Rules of eark-validator 1.1.3 that no METS-valid package can pass, with why.
KNOWN_DEFECTS = {
    # E-ARK SIP: every note of a CREATOR agent must carry a bare NOTETYPE="IDENTIFICATIONCODE";
    # CSIP16 wants the software agent's note to carry csip:NOTETYPE="SOFTWARE VERSION", and
    # METS' schema refuses an unqualified NOTETYPE (DILCIS E-ARK-CSIP issue 705, PR 718).
    "SIP14": "eark-validator 1.1.3 applies SIP14 to the CSIP software agent's note",
}


def faults(report: dict) -> list[str]:
    """The errors of one eark-validator report: structure, schema and schematron."""
    found = []
    structure = report.get("structure") or {}
    metadata = report.get("metadata") or {}
    messages = list(structure.get("messages") or [])
    for part in ("schema_results", "schematron_results"):
        messages += (metadata.get(part) or {}).get("messages") or []
    for m in messages:
        if str(m.get("severity", "")).lower() != "error" or m.get("rule_id") in KNOWN_DEFECTS:
            continue
        found.append(f"{m.get('rule_id', '?')}: {m.get('message', '')}".strip())
    if str(structure.get("status", "")).lower() == "notwellformed" and not found:
        found.append(f"cấu trúc gói: {structure.get('status')}")
    return found


if __name__ == "__main__":  # `make install`: the validator's environment made up front
    print(ensure())
