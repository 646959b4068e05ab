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


class FileNames:
    """Which names in a hot folder are page documents, manifests, closing markers or litter:
    one rule for the agent's detection and for reconcile's walk (``watcher`` settings)."""

    def __init__(self, extensions: list[str], ignore_names: list[str],
                 ignore_prefixes: list[str], ignore_suffixes: list[str],
                 manifest_name: str = "hoso.json", close_marker: str = "DONE") -> None:
        self.extensions = frozenset(normal_extension(e) for e in extensions)
        self._names = frozenset(n.casefold() for n in ignore_names)
        self._prefixes = tuple(ignore_prefixes)
        self._suffixes = tuple(s.casefold() for s in ignore_suffixes)
        self._manifest = manifest_name.casefold()
        self._marker = close_marker.casefold()

    @classmethod
    def of(cls, watcher: object) -> FileNames:
        w = watcher
        return cls(w.extensions, w.ignore_names, w.ignore_prefixes,  # type: ignore[attr-defined]
                   w.ignore_suffixes, w.manifest_name, w.close_marker)  # type: ignore[attr-defined]

    def litter(self, name: str) -> bool:
        """System files and temp names of write-then-rename: never looked at."""
        folded = name.casefold()
        return (folded in self._names or name.startswith(self._prefixes)
                or folded.endswith(self._suffixes))

    def kind(self, name: str) -> str:
        """page | manifest | marker | other (litter aside)."""
        folded = nfc(name).casefold()
        if folded == self._manifest:
            return "manifest"
        if folded == self._marker:
            return "marker"
        head, dot, ext = folded.rpartition(".")
        if dot and head and f".{ext}" in self.extensions:
            return "page"
        return "other"

    def is_document(self, name: str) -> bool:
        return not self.litter(name) and self.kind(name) == "page"


def normal_extension(ext: str) -> str:
    """".TIF", "tif" and ".tif" are one extension: ".tif"."""
    ext = ext.strip().casefold()
    return ext if ext.startswith(".") else f".{ext}"


def fold(text: str) -> str:
    """A name compared without regard to case, diacritics or spacing: "Cty  SỐ Việt" and
    "cty so viet" fold alike (đ is a letter of its own in Unicode: it folds to d by hand)."""
    decomposed = unicodedata.normalize("NFD", nfc(text).casefold().replace("đ", "d"))
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(bare.split())
