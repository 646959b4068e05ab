"""Where tests keep what a person should be able to look at afterwards (PNG renderings of
reports, screenshots): ``tests/artefacts/<name>/``, or ``$SOHOA_TEST_ARTEFACTS/<name>/``.
Written on every run, never committed (.gitignore)."""

from __future__ import annotations

import os
from pathlib import Path


def artefact_dir(name: str) -> Path:
    tests = Path(__file__).resolve().parents[1]
    root = Path(os.environ.get("SOHOA_TEST_ARTEFACTS") or tests / "artefacts")
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    return path
