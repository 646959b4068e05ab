"""Hot-folder layout: which part of a document's path is the fonds, the file and the document.

The pattern (``watcher.layout``, default ``{fonds}/{file}/{page}``) is matched against the path
relative to a root, one placeholder-bearing segment per directory level; the last segment is
the document (a page image, or a multi-page PDF/TIFF). Names are NFC-normalised before matching
(:mod:`sohoa.naming`), so a file copied from a Mac (NFD) is the same file code as one typed on
Windows. A document's name may end in the number it claims, its place in the file ("003.tif",
"HS-01.004.pdf"); one that does not ("bia.jpg", "QD-15-UBND.pdf") is a document all the same,
ordered by its name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sohoa.naming import MAX_NUMBER, has_forbidden, nfc

_PLACEHOLDER = re.compile(r"\{(fonds|file|page)\}")
_TRAILING_DIGITS = re.compile(r"(\d+)$")


class LayoutError(ValueError):
    """The configured pattern itself is unusable (a configuration error)."""


@dataclass(frozen=True, slots=True)
class PageName:
    """Where a document sits: its file (fonds, code), its name, the number it claims."""

    fonds: str
    file_code: str
    document: str          # the document's file name, NFC, extension included
    number: int | None     # the page number its name ends with, if any
    file_dir: str          # root-relative path of the file folder, as spelled on disk


class NameMismatch(ValueError):
    """A path that does not fit the layout; ``reason`` is a metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


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
        """Parse a document path (root-relative parts as spelled on disk)."""
        parts = tuple(nfc(p) for p in rel_parts)
        if len(parts) < self.depth:
            raise NameMismatch("outside_file", f"page is not inside a file folder "
                                               f"(layout {self.pattern})")
        if len(parts) > self.depth:
            raise NameMismatch("bad_name", f"path is deeper than the layout {self.pattern}")
        values = self._match_dirs(parts[:-1])
        name = parts[-1]
        _check_name(name, "document name")
        stem = name.rsplit(".", 1)[0]
        m = self._regexes[-1].match(stem)
        if not m:
            raise NameMismatch("bad_name", f"page name {name!r} does not fit {self.pattern}")
        digits = _TRAILING_DIGITS.search(m.group("page").strip())
        number = int(digits.group(1)) if digits else None
        if number is not None and number > MAX_NUMBER:
            raise NameMismatch("bad_name", f"page number {number} is out of range")
        return PageName(
            fonds=values.get("fonds", ""), file_code=values["file"], document=name,
            number=number, file_dir="/".join(rel_parts[:-1]),
        )

    def parse_file_dir(self, dir_parts: tuple[str, ...]) -> tuple[str, str]:
        """(fonds, file_code) of a root-relative file folder."""
        parts = tuple(nfc(p) for p in dir_parts)
        if len(parts) != self.depth - 1:
            raise NameMismatch("outside_file", f"not a file folder of the layout {self.pattern}")
        values = self._match_dirs(parts)
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
        code = values.get("file", "")
        if not code or len(code) > 200:
            raise NameMismatch("bad_name", "empty or over-long file code")
        _check_name(code, "file code")
        if len(values.get("fonds", "")) > 200:
            raise NameMismatch("bad_name", "over-long fonds")
        _check_name(values.get("fonds", ""), "fonds")
        return values


def _check_name(name: str, what: str) -> None:
    """Names travel in JSON and in keys: no control characters, no undecodable bytes."""
    if has_forbidden(name):
        raise NameMismatch("bad_name", f"{what} {name!r} holds a control character")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise NameMismatch("bad_name", f"{what} {name!r} is not valid UTF-8") from None
    if len(name) > 255:
        raise NameMismatch("bad_name", f"{what} is longer than 255 characters")
