"""DuckDB warehouse: one file, one connection (DuckDB allows one writer process)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from warehouse import tables


class DuckDBWarehouse:
    def __init__(self, path: Path, schema: str = "bi") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.schema = schema
        self._con = duckdb.connect(str(path))
        self._con.execute("SET TimeZone = 'UTC'")
        self._in_tx = False

    def ensure_tables(self) -> None:
        self._con.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
        for t in tables.ALL:
            self._con.execute(t.ddl(self.schema))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._in_tx:
            yield
            return
        self._con.execute("BEGIN TRANSACTION")
        self._in_tx = True
        try:
            yield
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        else:
            self._con.execute("COMMIT")
        finally:
            self._in_tx = False

    def upsert(self, table: str, df: pl.DataFrame) -> int:
        if df.is_empty():
            return 0
        t = tables.BY_NAME[table]
        staged = df.select(t.column_names)  # noqa: F841 - read by name in the SQL below
        cond = " AND ".join(f"t.{k} = s.{k}" for k in t.key)
        with self.transaction():
            self._con.execute(f"DELETE FROM {self.schema}.{t.name} t USING staged s WHERE {cond}")
            self._con.execute(
                f"INSERT INTO {self.schema}.{t.name} ({', '.join(t.column_names)}) "
                f"SELECT {', '.join(t.column_names)} FROM staged"
            )
        return df.height

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._con.execute(sql.replace("%s", "?"), list(params)).fetchall()

    def frame(self, sql: str, params: Sequence[Any] = ()) -> pl.DataFrame:
        return self._con.sql(sql.replace("%s", "?"), params=list(params) or None).pl()

    def close(self) -> None:
        self._con.close()
