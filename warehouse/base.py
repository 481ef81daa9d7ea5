"""The one interface both warehouse backends implement.

A :class:`Warehouse` creates the tables (``warehouse.tables``) and views
(``warehouse.views``) in its schema, replaces
rows by key (``upsert``: delete the keys present in the frame, insert the frame, in one
transaction), and answers SQL queries. ``transaction()`` groups several upserts so a
load and its watermark commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import polars as pl

from warehouse import tables, views


class Warehouse(Protocol):
    schema: str

    def ensure_tables(self) -> None: ...

    def transaction(self) -> AbstractContextManager[None]: ...

    def upsert(self, table: str, df: pl.DataFrame) -> int: ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def frame(self, sql: str, params: Sequence[Any] = ()) -> pl.DataFrame: ...

    def close(self) -> None: ...


def schema_sql(schema: str, has_table: Callable[[str, str], bool]) -> Iterator[str]:
    """Every statement that brings ``schema`` up to date: schemas, tables (new columns
    added in place), views, comments. ``has_table(schema, name)`` answers from the
    catalogue; it lets the loader's bookkeeping move out of the analyst schema where an
    older release left it."""
    yield f"CREATE SCHEMA IF NOT EXISTS {schema}"
    yield f"CREATE SCHEMA IF NOT EXISTS {tables.internal_schema(schema)}"
    for t in tables.ALL:
        yield from t.ddl(schema)
        if t.internal and has_table(schema, t.name):
            cols = ", ".join(t.column_names)
            yield f"INSERT INTO {t.qualified(schema)} ({cols}) SELECT {cols} FROM {schema}.{t.name}"
            yield f"DROP TABLE {schema}.{t.name}"
    for v in views.ALL:
        yield from v.ddl(schema)


HAS_TABLE_SQL = (
    "SELECT count(*) FROM information_schema.tables "
    "WHERE table_schema = %s AND table_name = %s AND table_type = 'BASE TABLE'"
)


def conform(table: tables.Table, df: pl.DataFrame) -> pl.DataFrame:
    """``df``'s columns in the table's order; a column it lacks (one a newer release
    added) is null. A missing key column is a bug and raises."""
    missing = [c for c in table.column_names if c not in df.columns]
    if lost := set(missing) & set(table.key):
        raise ValueError(f"{table.name}: rows lack key columns {sorted(lost)}")
    return df.with_columns(pl.lit(None).alias(c) for c in missing).select(table.column_names)


def iter_rows(df: pl.DataFrame, columns: Sequence[str]) -> Iterator[tuple[Any, ...]]:
    yield from df.select(list(columns)).iter_rows()
