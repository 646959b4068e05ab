"""docs/runbook.md as HTML, each heading with the anchor the alerts' runbook_url names.

An alert links to ``<monitoring.runbook_base_url>#<alertname in lower case>``; the anchor of a
heading is its text in lower case with everything but a-z and 0-9 dropped (the rule
tests/monitoring/test_alerts.py holds the runbook's headings to), so "## SohoaSiteStalled" is
``#sohoasitestalled``. Raw HTML in the Markdown is not passed through.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

RUNBOOK = Path(__file__).resolve().parents[1] / "docs" / "runbook.md"


def anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9]", "", title.lower())


@lru_cache(maxsize=4)
def _render(path: Path, mtime_ns: int) -> tuple[str, str, list[tuple[str, str]]]:
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(path.read_text(encoding="utf-8"))
    title, toc = "", []
    for i, tok in enumerate(tokens):
        if tok.type != "heading_open":
            continue
        text = tokens[i + 1].content
        if tok.tag == "h1" and not title:
            title = text
        tok.attrSet("id", anchor(text))
        if tok.tag == "h2":
            toc.append((anchor(text), text))
    return title, md.renderer.render(tokens, md.options, {}), toc


def render(path: Path = RUNBOOK) -> tuple[str, str, list[tuple[str, str]]]:
    """(title, HTML body, [(anchor, heading)] of the second-level headings)."""
    return _render(path, path.stat().st_mtime_ns)
