"""Set-based SQL: a whole batch of rows as one relation in one statement, compiled once.

The rows travel as one JSON parameter, ``rows`` (msgspec encodes it, Postgres'
``json_to_recordset`` parses it, both in C), so a batch of any size costs one statement
per table. Each statement is built from the typed models with SQLAlchemy Core and compiled
to SQL text once per process (:class:`Statement`), then run on the connection's psycopg
driver as a prepared statement, in the caller's transaction and pipeline: building,
cache-keying and compiling the constructs again for every batch cost ~0.4 ms per
statement, ~7 ms per batch, most of the writer's time when batches are small.

Inserts come in two forms (:class:`Insert`): ``fresh`` is a plain INSERT, for rows of
entries just claimed (a duplicate raises), and ``kept`` adds ON CONFLICT DO NOTHING. The
plain form spares Postgres a speculative insertion per row (an index probe and a lock
before each insert): a third of its time on the hot tables.

Tried and dropped (1,000-order batches of orders, lines, payments and history lines,
Python + Postgres CPU per order): typed array parameters (psycopg quotes array elements
in Python, which cost more than the inserts); COPY (Postgres 30 µs against JSON's 41, but
psycopg's ``write_row`` took 22 µs against msgspec's 2.4, and COPY cannot join a pipeline:
a round trip per table); jsonb (54 µs in Postgres against json's 41: json is lexed twice,
to check it and to read it, and building jsonb still costs more).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cached_property
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.types import TypeEngine

from persistence.database import driver

ROWS = "rows"  # the bind parameter that carries a statement's rows as JSON
_ENCODER = msgspec.json.Encoder()
_DIALECT = PGDialect_psycopg()
_KEYS: dict[str, str] = {}  # field name -> its short JSON key, the same in every Row


def _short_key(field: str) -> str:
    """A short JSON key per field name (``a``, ``b``, ... ``ba``): Postgres lexes every key of
    every row, and the names were more than half of the bytes."""
    if field not in _KEYS:
        n, key = len(_KEYS), ""
        while True:
            n, digit = divmod(n, 26)
            key = chr(ord("a") + digit) + key
            if not n:
                break
        _KEYS[field] = key
    return _KEYS[field]


class Row(msgspec.Struct, gc=False, rename=_short_key):
    """Base of every row a repository writes or reads: positional, and light (no GC); in
    JSON each field has a short key (see :func:`relation`)."""


def encode(rows: Sequence[Row]) -> str:
    """Rows as the JSON array ``json_to_recordset`` reads (one object per row)."""
    return _ENCODER.encode(rows).decode()


def relation(name: str, row: type[Row], types: Mapping[str, TypeEngine[Any]]) -> sa.Subquery:
    """The ``rows`` parameter as a relation ``name(field, ...)`` of ``row``'s fields;
    ``types`` gives each field's SQL type."""
    data = sa.bindparam(ROWS, type_=sa.Text)
    fields = zip(row.__struct_fields__, row.__struct_encode_fields__, strict=True)
    columns = [sa.column(key, types[field]) for field, key in fields]
    keyed = (sa.func.json_to_recordset(sa.cast(data, pg.JSON)).table_valued(*columns)
             .render_derived(name=f"{name}_json", with_types=True))
    return sa.select(*(keyed.c[key].label(field) for field, key in zip(
        row.__struct_fields__, row.__struct_encode_fields__, strict=True))).subquery(name)


def rows_of(table: sa.Table, row: type[Row]) -> sa.Subquery:
    """The ``rows`` parameter as a relation typed like ``table``'s columns of the same names."""
    return relation(f"new_{table.name}", row, {c.name: c.type for c in table.columns})


def insert_rows(table: sa.Table, row: type[Row]) -> pg.Insert:
    """``INSERT INTO table SELECT ... FROM <rows>``; add an ON CONFLICT clause to taste."""
    source = rows_of(table, row)
    fields = list(row.__struct_fields__)
    return pg_insert(table).from_select(fields, sa.select(*(source.c[f] for f in fields)))


class Statement:
    """One statement over the ``rows`` parameter: built and compiled on first use, then run
    as a prepared statement on the psycopg driver (inside a pipeline, its result comes at
    the pipeline's end; outside, at once)."""

    def __init__(self, build: Callable[[], ClauseElement]) -> None:
        self._build = build

    @cached_property
    def _compiled(self) -> tuple[str, dict[str, Any]]:
        compiled = self._build().compile(dialect=_DIALECT)
        constants = {k: v for k, v in compiled.params.items() if k != ROWS}
        return str(compiled), constants

    def run(self, conn: Connection, rows: Sequence[Row]) -> Any:
        """Execute with ``rows`` (nothing for none); the psycopg cursor."""
        if not rows:
            return None
        sql, constants = self._compiled
        return driver(conn).execute(sql, {**constants, ROWS: encode(rows)}, prepare=True)


class Insert:
    """An insert of the ``rows`` parameter in its two forms (see the module doc)."""

    def __init__(self, build: Callable[[bool], ClauseElement]) -> None:
        """``build(kept)``: the statement, with ON CONFLICT DO NOTHING if ``kept``."""
        self.fresh = Statement(lambda: build(False))
        self.kept = Statement(lambda: build(True))

    @classmethod
    def of(cls, table: sa.Table, row: type[Row]) -> Insert:
        """Rows of type ``row`` into ``table``'s columns of the same names."""

        def build(kept: bool) -> ClauseElement:
            stmt = insert_rows(table, row)
            return stmt.on_conflict_do_nothing() if kept else stmt

        return cls(build)

    def run(self, conn: Connection, rows: Sequence[Row], *, fresh: bool) -> None:
        """Insert; ``fresh``: the rows cannot be there yet (a duplicate raises)."""
        (self.fresh if fresh else self.kept).run(conn, rows)


def stream(conn: Connection, query: sa.Select[Any]) -> Iterator[Any]:
    """Rows through a server-side cursor, so a large table never sits in memory at once."""
    yield from conn.execution_options(yield_per=5000).execute(query)


def largest(conn: Connection, column: sa.ColumnElement[int]) -> int:
    """The largest value of an id column, 0 for an empty table."""
    return int(conn.scalar(sa.select(sa.func.max(column))) or 0)


def columns(table: sa.Table, row: type[Row]) -> list[sa.Column[Any]]:
    """``table``'s columns named like ``row``'s fields, in that order."""
    return [table.c[field] for field in row.__struct_fields__]
