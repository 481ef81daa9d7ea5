"""PostgreSQL warehouse: rows travel by COPY (psycopg 3) into a temporary staging table,
then replace their keys in the target, all in one transaction."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import polars as pl
import psycopg

from common.errors import DependencyUnavailable
from warehouse import tables
from warehouse.base import HAS_TABLE_SQL, conform, iter_rows, schema_sql


class PostgresWarehouse:
    def __init__(self, dsn: str, schema: str = "bi") -> None:
        self.schema = schema
        try:
            self._con = psycopg.connect(dsn, autocommit=True)
            self._con.execute("SET TIME ZONE 'UTC'")  # day boundaries in UTC, as in DuckDB
        except psycopg.OperationalError as exc:
            raise DependencyUnavailable(
                f"cannot connect to PostgreSQL ({exc}); fix INFERSTREAM_POSTGRES_DSN or start the server"
            ) from exc
        self._tx: psycopg.Transaction | None = None

    def ensure_tables(self) -> None:
        def has_table(schema: str, name: str) -> bool:
            return bool(self.query(HAS_TABLE_SQL, (schema, name))[0][0])

        with self._con.transaction():
            for sql in schema_sql(self.schema, has_table):
                self._con.execute(sql)  # our own DDL

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._con.transaction():
            yield

    def upsert(self, table: str, df: pl.DataFrame) -> int:
        if df.is_empty():
            return 0
        t = tables.BY_NAME[table]
        cols = ", ".join(t.column_names)
        stage = f"_stage_{t.name}"
        target = t.qualified(self.schema)
        cond = " AND ".join(f"t.{k} = s.{k}" for k in t.key)
        with self._con.transaction():
            self._con.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {target}) ON COMMIT DELETE ROWS"
            )
            with self._con.cursor().copy(f"COPY {stage} ({cols}) FROM STDIN") as copy:
                for row in iter_rows(conform(t, df), t.column_names):
                    copy.write_row(row)
            self._con.execute(f"DELETE FROM {target} t USING {stage} s WHERE {cond}")
            self._con.execute(f"INSERT INTO {target} ({cols}) SELECT {cols} FROM {stage}")
        return df.height

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._con.execute(sql, list(params) or None).fetchall()

    def frame(self, sql: str, params: Sequence[Any] = ()) -> pl.DataFrame:
        cur = self._con.execute(sql, list(params) or None)
        names = [d.name for d in cur.description or []]
        return pl.DataFrame(cur.fetchall(), schema=names, orient="row")

    def close(self) -> None:
        self._con.close()
