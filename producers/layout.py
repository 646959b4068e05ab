"""Hot-folder layout: which part of a page's path is the fonds, the file and the page.

The pattern (``watcher.layout``, default ``{fonds}/{file}/{page}``) is matched against the path
relative to a root, one placeholder-bearing segment per directory level. Names are NFC-normalised
before matching, so a file copied from a Mac (NFD) is the same file code as one typed on Windows.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_PLACEHOLDER = re.compile(r"\{(fonds|file|page)\}")
_TRAILING_DIGITS = re.compile(r"(\d+)$")


class LayoutError(ValueError):
    """The configured pattern itself is unusable (a configuration error)."""


@dataclass(frozen=True, slots=True)
class PageName:
    fonds: str
    file_code: str
    page_no: int
    file_dir: str  # root-relative NFC path of the file folder


class NameMismatch(ValueError):
    """A path that does not fit the layout; ``reason`` is a metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


class Layout:
    def __init__(self, pattern: str) -> None:
        segments = [s for s in pattern.strip("/").split("/") if s]
        if not segments or "{page}" not in segments[-1]:
            raise LayoutError(f"layout {pattern!r}: the last segment must contain {{page}}")
        names = [m.group(1) for s in segments for m in _PLACEHOLDER.finditer(s)]
        if "file" not in names:
            raise LayoutError(f"layout {pattern!r}: needs a {{file}} segment")
        if len(names) != len(set(names)):
            raise LayoutError(f"layout {pattern!r}: a placeholder appears twice")
        if any("{page}" in s for s in segments[:-1]):
            raise LayoutError(f"layout {pattern!r}: {{page}} must be in the last segment")
        self.pattern = pattern
        self.depth = len(segments)
        self._regexes = [self._compile(s) for s in segments]
        self._dir_cache: dict[tuple[str, ...], dict[str, str]] = {}
        # The file folder is the deepest directory segment that carries {file}.
        self.file_level = max(i for i, s in enumerate(segments) if "{file}" in s)
        if self.file_level != self.depth - 2:
            raise LayoutError(f"layout {pattern!r}: {{file}} must be the page's parent folder")

    @staticmethod
    def _compile(segment: str) -> re.Pattern[str]:
        out, pos = [], 0
        for m in _PLACEHOLDER.finditer(segment):
            out.append(re.escape(segment[pos:m.start()]))
            out.append(f"(?P<{m.group(1)}>.+?)" if m.group(1) != "page" else "(?P<page>.+)")
            pos = m.end()
        out.append(re.escape(segment[pos:]))
        return re.compile("^" + "".join(out) + "$")

    def file_dir_of(self, rel_dir_parts: tuple[str, ...]) -> bool:
        """Whether a root-relative directory is at the file-folder level."""
        return len(rel_dir_parts) == self.depth - 1

    def parse(self, rel_parts: tuple[str, ...]) -> PageName:
        """Parse a page path (root-relative parts, stem of the last part without extension)."""
        parts = tuple(nfc(p) for p in rel_parts)
        if len(parts) < self.depth:
            raise NameMismatch("outside_file", f"page is not inside a file folder "
                                               f"(layout {self.pattern})")
        if len(parts) > self.depth:
            raise NameMismatch("bad_name", f"path is deeper than the layout {self.pattern}")
        values = self._match_dirs(parts[:-1])
        stem = parts[-1].rsplit(".", 1)[0]
        m = self._regexes[-1].match(stem)
        if not m:
            raise NameMismatch("bad_name", f"page name {parts[-1]!r} does not fit {self.pattern}")
        values.update({k: v.strip() for k, v in m.groupdict().items()})
        digits = _TRAILING_DIGITS.search(values.get("page", ""))
        if not digits:
            raise NameMismatch("bad_name", "page name has no trailing page number")
        page_no = int(digits.group(1))
        if page_no > 100_000:
            raise NameMismatch("bad_name", f"page number {page_no} is out of range")
        file_code = values["file"]
        if not file_code or len(file_code) > 200:
            raise NameMismatch("bad_name", "empty or over-long file code")
        return PageName(
            fonds=values.get("fonds", ""), file_code=file_code, page_no=page_no,
            file_dir="/".join(parts[:-1]),
        )

    def parse_file_dir(self, dir_parts: tuple[str, ...]) -> tuple[str, str]:
        """(fonds, file_code) of a root-relative file folder."""
        parts = tuple(nfc(p) for p in dir_parts)
        if len(parts) != self.depth - 1:
            raise NameMismatch("outside_file", f"not a file folder of the layout {self.pattern}")
        values = self._match_dirs(parts)
        if not values.get("file"):
            raise NameMismatch("bad_name", "empty file code")
        return values.get("fonds", ""), values["file"]

    def _match_dirs(self, parts: tuple[str, ...]) -> dict[str, str]:
        # A file folder holds hundreds of pages: match its folders once, not once per page.
        hit = self._dir_cache.get(parts)
        if hit is not None:
            return dict(hit)
        values = self._match_dirs_uncached(parts)
        if len(self._dir_cache) >= 4096:
            self._dir_cache.clear()
        self._dir_cache[parts] = dict(values)
        return values

    def _match_dirs_uncached(self, parts: tuple[str, ...]) -> dict[str, str]:
        values: dict[str, str] = {}
        for part, rx in zip(parts, self._regexes[:-1], strict=True):
            m = rx.match(part)
            if not m:
                raise NameMismatch("bad_name", f"folder {part!r} does not fit {self.pattern}")
            values.update({k: v.strip() for k, v in m.groupdict().items()})
        return values
