"""The one interface both warehouse backends implement.

A :class:`Warehouse` creates the tables (``warehouse.tables``) in its schema, replaces
rows by key (``upsert``: delete the keys present in the frame, insert the frame, in one
transaction), and answers SQL queries. ``transaction()`` groups several upserts so a
load and its watermark commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import polars as pl

from common.errors import ConfigError
from warehouse.settings import WarehouseSettings


class Warehouse(Protocol):
    schema: str

    def ensure_tables(self) -> None: ...

    def transaction(self) -> AbstractContextManager[None]: ...

    def upsert(self, table: str, df: pl.DataFrame) -> int: ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def frame(self, sql: str, params: Sequence[Any] = ()) -> pl.DataFrame: ...

    def close(self) -> None: ...


def open_warehouse(settings: WarehouseSettings) -> Warehouse:
    """The configured backend, with its tables created."""
    wh: Warehouse
    if settings.warehouse_backend == "postgres":
        if not settings.postgres_dsn:
            raise ConfigError("INFERSTREAM_WAREHOUSE_BACKEND=postgres needs INFERSTREAM_POSTGRES_DSN")
        from warehouse.postgres_backend import PostgresWarehouse

        wh = PostgresWarehouse(settings.postgres_dsn, settings.warehouse_schema)
    else:
        from warehouse.duckdb_backend import DuckDBWarehouse

        wh = DuckDBWarehouse(settings.duckdb_path, settings.warehouse_schema)
    wh.ensure_tables()
    return wh


def iter_rows(df: pl.DataFrame, columns: Sequence[str]) -> Iterator[tuple[Any, ...]]:
    yield from df.select(list(columns)).iter_rows()
