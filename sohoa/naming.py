"""Names of fonds, files and documents: one normal form, one order, one page-number rule.

Used by the site agent, the assembly worker, reconcile and the consumer's migration alike, so
a name means the same thing everywhere:

- every name is compared in Unicode NFC: a folder copied from a Mac (NFD) and one typed on
  Windows (NFC) name the same file;
- a file's documents are ordered naturally ("2.tif" before "10.tif"), case and accents aside;
- a document claims the number its name ends with: its place among the file's documents
  ("HS-01.003.pdf" -> 3), which for a page image is its page number ("003.tif" -> 3).
"""

from __future__ import annotations

import re
import unicodedata

# Characters a fonds, file code or document name may not hold: "/" separates them in keys and
# paths, and control characters would hide in logs and reports.
FORBIDDEN_RE = r"[/\x00-\x1f\x7f]"
_FORBIDDEN = re.compile(FORBIDDEN_RE)
_TRAILING_DIGITS = re.compile(r"(\d+)$")
_CHUNKS = re.compile(r"(\d+)")
MAX_NUMBER = 100_000


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def is_nfc(text: str) -> bool:
    return unicodedata.is_normalized("NFC", text)


def has_forbidden(text: str) -> bool:
    return _FORBIDDEN.search(text) is not None


def stem(name: str) -> str:
    """The name without its last extension ("QD-15.pdf" -> "QD-15"; ".tif" stays ".tif")."""
    head, dot, _ext = name.rpartition(".")
    return head if dot and head else name


def claimed_number(name: str) -> int | None:
    """The page number a document's name ends with, or None (no digits, or out of range)."""
    m = _TRAILING_DIGITS.search(stem(name).strip())
    if not m:
        return None
    n = int(m.group(1))
    return n if n <= MAX_NUMBER else None


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key: digit runs compare as numbers, the rest case- and accent-insensitively, the
    exact name last so that distinct names never tie."""
    folded = unicodedata.normalize("NFD", nfc(name).casefold())
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    parts: list[tuple[int, int | str]] = []
    for i, chunk in enumerate(_CHUNKS.split(folded)):
        if not chunk:
            continue
        parts.append((0, int(chunk)) if i % 2 else (1, chunk))
    parts.append((2, name))
    return tuple(parts)


def fold(text: str) -> str:
    """A name compared without regard to case, diacritics or spacing: "Cty  SỐ Việt" and
    "cty so viet" fold alike (đ is a letter of its own in Unicode: it folds to d by hand)."""
    decomposed = unicodedata.normalize("NFD", nfc(text).casefold().replace("đ", "d"))
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(bare.split())
