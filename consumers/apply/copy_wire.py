"""Rows to PostgreSQL's COPY binary format without a connection, so the parse process can make
them and the writer only sends bytes.

The only module that touches psycopg internals: ``psycopg._copy_base.BinaryFormatter`` is
private, so pyproject.toml pins psycopg to the minor versions this is tested with, and
``tests/consumers/test_consumer_parsing.py::test_copy_binary_loads_the_same_rows_as_psycopg_write_row``
holds these bytes to what psycopg's public ``write_row`` loads.

Against the text format the server skips parsing timestamps, integers and arrays from text
and the parse process skips formatting them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from psycopg import postgres, pq
from psycopg._copy_base import BinaryFormatter  # private: see the module's docstring
from psycopg.adapt import AdaptersMap, Dumper, Transformer


class _JsonbTextDumper(Dumper):
    """A JSON document already in text (as received) to binary jsonb: version 1, then the text.
    The server parses it exactly as it would the text format's; psycopg's own jsonb dumper
    would serialise a ``str`` as a JSON string instead."""

    format = pq.Format.BINARY
    oid = postgres.types["jsonb"].oid

    def dump(self, obj: str) -> bytes:
        return b"\x01" + obj.encode()


class _JsonTextDumper(Dumper):
    """A JSON document already in text to binary json, which is the text itself (the server
    checks its syntax and stores it as it came)."""

    format = pq.Format.BINARY
    oid = postgres.types["json"].oid

    def dump(self, obj: str) -> bytes:
        return obj.encode()


_ADAPTERS = AdaptersMap(postgres.adapters)
_ADAPTERS.register_dumper(None, _JsonbTextDumper)  # by oid only: jsonb columns take text
_ADAPTERS.register_dumper(None, _JsonTextDumper)  # and json columns too


def oid_of(pg_type: str) -> int:
    """The oid of a type as spelled in our declarations ("int4", "text[]", "jsonb"…)."""
    if pg_type.endswith("[]"):
        return postgres.types[pg_type[:-2]].array_oid
    return postgres.types[pg_type].oid


class _Context:
    adapters = _ADAPTERS
    connection = None


def copy_binary(rows: Iterable[Sequence[object]], oids: list[int]) -> bytes:
    """``rows`` in COPY binary format, each value dumped as the type of its column's oid."""
    tx = Transformer(_Context())  # type: ignore[arg-type]
    tx.set_dumper_types(oids, pq.Format.BINARY)
    fmt = BinaryFormatter(tx)
    buf = bytearray()
    for row in rows:
        buf += fmt.write_row(row)
    buf += fmt.end()
    return bytes(buf)
