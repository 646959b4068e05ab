"""Column declarations: a row type is a NamedTuple whose fields carry their PostgreSQL type, so
its name, position, Python type, SQL type and COPY oid are declared in one place and every
other form (DDL, column lists, oids, positions) is derived from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_type_hints

from consumers.apply.copy_wire import oid_of


@dataclass(frozen=True)
class Pg:
    """A column's PostgreSQL type; ``c``: an identifier, compared in byte order (COLLATE "C")."""

    type: str
    not_null: bool = False
    c: bool = False

    def sql(self) -> str:
        collate = ' COLLATE "C"' if self.c else ""
        return f"{self.type}{collate}{' NOT NULL' if self.not_null else ''}"


def declared(row_type: type) -> tuple[tuple[str, Pg], ...]:
    """(name, Pg) of each field of a NamedTuple declared with ``Annotated[..., Pg(...)]``."""
    hints = get_type_hints(row_type, include_extras=True)
    out = []
    for name in row_type._fields:  # type: ignore[attr-defined]
        meta: tuple[Any, ...] = getattr(hints[name], "__metadata__", ())
        pg = next((m for m in meta if isinstance(m, Pg)), None)
        if pg is None:
            raise TypeError(f"{row_type.__name__}.{name} declares no Pg type")
        out.append((name, pg))
    return tuple(out)


def column_ddl(row_type: type) -> str:
    """The column list of a CREATE TABLE for ``row_type``."""
    return ", ".join(f"{name} {pg.sql()}" for name, pg in declared(row_type))


def oids(row_type: type) -> list[int]:
    return [oid_of(pg.type) for _, pg in declared(row_type)]


def copy_into(table: str, columns: tuple[str, ...]) -> str:
    return f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
