"""Set-based SQL: a whole batch of rows as one relation in one statement.

The rows travel as one JSON parameter (msgspec encodes it, Postgres' ``json_to_recordset``
parses it, both in C), so a batch of any size costs one statement per table and the
statement text never changes: SQLAlchemy compiles it once. (Typed array parameters were
tried first: psycopg quotes array elements in Python, which cost more than the inserts.)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection
from sqlalchemy.sql.selectable import TableValuedAlias
from sqlalchemy.types import TypeEngine

_ENCODER = msgspec.json.Encoder()


class Row(msgspec.Struct, gc=False):
    """Base of every row a repository writes or reads: positional, and light (no GC)."""


def relation(
    name: str, rows: Sequence[Row], types: Mapping[str, TypeEngine[Any]]
) -> TableValuedAlias:
    """``rows`` as a relation ``name(field, ...)``; ``types`` gives each field's SQL type."""
    fields = type(rows[0]).__struct_fields__
    data = sa.bindparam(f"{name}_json", _ENCODER.encode(rows).decode(), type_=sa.Text)
    columns = [sa.column(field, types[field]) for field in fields]
    return (sa.func.json_to_recordset(sa.cast(data, pg.JSON)).table_valued(*columns)
            .render_derived(name=name, with_types=True))


def rows_of(table: sa.Table, rows: Sequence[Row]) -> TableValuedAlias:
    """``rows`` as a relation typed like ``table``'s columns of the same names."""
    return relation(f"new_{table.name}", rows, {c.name: c.type for c in table.columns})


def insert_rows(table: sa.Table, rows: Sequence[Row]) -> pg.Insert:
    """``INSERT INTO table SELECT ... FROM <rows>``; add an ON CONFLICT clause to taste."""
    source = rows_of(table, rows)
    fields = list(type(rows[0]).__struct_fields__)
    return pg_insert(table).from_select(fields, sa.select(*(source.c[f] for f in fields)))


def stream(conn: Connection, query: sa.Select[Any]) -> Iterator[Any]:
    """Rows through a server-side cursor, so a large table never sits in memory at once."""
    yield from conn.execution_options(yield_per=5000).execute(query)


def largest(conn: Connection, column: sa.ColumnElement[int]) -> int:
    """The largest value of an id column, 0 for an empty table."""
    return int(conn.scalar(sa.select(sa.func.max(column))) or 0)


def columns(table: sa.Table, row: type[Row]) -> list[sa.Column[Any]]:
    """``table``'s columns named like ``row``'s fields, in that order."""
    return [table.c[field] for field in row.__struct_fields__]
