"""DuckDB warehouse: one file, replaced whole by each writer so readers never block it.

DuckDB lets one process write a file, and any process holding the file open (an
analyst's ``duckdb warehouse.duckdb``, a BI tool) keeps others from opening it for
writing. So a writer never opens the file itself: it copies it to a private work file
beside it, writes there, checkpoints, and renames the work file over the original
(``os.replace``, atomic on POSIX) when it closes. A reader that had the file open keeps
reading its snapshot (the old inode) until it reconnects; new connections see the new
file. Writers (the BI load, the drift flow's results) take turns through an exclusive
``flock`` on ``<file>.lock``; a second writer waits instead of failing.

Consequences to know: each write session copies the whole file (PostgreSQL is the
choice once that is too slow, or for many concurrent readers), and anything a reader
writes into the file is lost at the next load (open it read-only: ``duckdb -readonly``).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from warehouse import tables
from warehouse.base import HAS_TABLE_SQL, conform, schema_sql

log = logging.getLogger(__name__)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DuckDBWarehouse:
    def __init__(self, path: Path, schema: str = "bi") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.schema = schema
        self._lock = open(path.with_name(path.name + ".lock"), "a+")  # held until close()
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("warehouse %s: waiting for another writer to finish", path)
            fcntl.flock(self._lock, fcntl.LOCK_EX)
        try:
            self._work = self._prepare_work_file()
            self._con = duckdb.connect(str(self._work))
        except BaseException:
            self._release()
            raise
        self._con.execute("SET TimeZone = 'UTC'")
        self._in_tx = False
        self._closed = False

    def _prepare_work_file(self) -> Path:
        """A private copy of the warehouse (or nothing, for a new one). Called under the
        lock, so any earlier work file is a crashed writer's leftover."""
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp*"):
            stale.unlink()
        work = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        if self.path.exists():
            shutil.copyfile(self.path, work)
            wal = self.path.with_name(self.path.name + ".wal")
            if wal.exists():  # committed changes a crashed writer left in the log
                shutil.copyfile(wal, work.with_name(work.name + ".wal"))
        return work

    def ensure_tables(self) -> None:
        def has_table(schema: str, name: str) -> bool:
            return bool(self.query(HAS_TABLE_SQL, (schema, name))[0][0])

        for sql in schema_sql(self.schema, has_table):
            self._con.execute(sql)

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
        target = t.qualified(self.schema)
        staged = conform(t, df)  # noqa: F841 - read by name in the SQL below
        cond = " AND ".join(f"t.{k} = s.{k}" for k in t.key)
        with self.transaction():
            self._con.execute(f"DELETE FROM {target} t USING staged s WHERE {cond}")
            cols = ", ".join(t.column_names)
            self._con.execute(f"INSERT INTO {target} ({cols}) SELECT {cols} FROM staged")
        return df.height

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._con.execute(sql.replace("%s", "?"), list(params)).fetchall()

    def frame(self, sql: str, params: Sequence[Any] = ()) -> pl.DataFrame:
        df: pl.DataFrame = self._con.sql(sql.replace("%s", "?"), params=list(params) or None).pl()
        return df

    def close(self) -> None:
        """Checkpoint the work file and swap it in for the warehouse file. Safe twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._con.execute("CHECKPOINT")
            self._con.close()
            _fsync(self._work)
            os.replace(self._work, self.path)
            # its log was merged into the work file: replayed onto the new file it would corrupt it
            self.path.with_name(self.path.name + ".wal").unlink(missing_ok=True)
            _fsync(self.path.parent)
        finally:
            self._release()

    def _release(self) -> None:
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()
