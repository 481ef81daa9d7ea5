"""Counting what landed: compares a set of event ids with the lake's rows (DuckDB)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from common import lake


@dataclass(frozen=True)
class Landing:
    expected: int
    rows: int  # rows in the lake whose event id is expected
    distinct: int  # distinct expected ids found

    @property
    def missing(self) -> int:
        return self.expected - self.distinct

    @property
    def duplicates(self) -> int:
        return self.rows - self.distinct


def landing(lake_dir: Path, event_ids: list[str], table: str = lake.EVENTS_TABLE) -> Landing:
    """How many of ``event_ids`` are in ``table`` (the feedback table keys its rows by the
    prediction's event id too)."""
    if not lake.has_files(lake_dir, table):
        return Landing(len(set(event_ids)), 0, 0)
    con = duckdb.connect()
    try:
        con.register("expected", pa.table({"event_id": sorted(set(event_ids))}))
        rows, distinct = con.execute(
            f"SELECT count(*), count(DISTINCT l.event_id) FROM {lake.duckdb_source(lake_dir, table)} l "
            "JOIN expected e ON l.event_id = e.event_id"
        ).fetchone()  # type: ignore[misc]
    finally:
        con.close()
    return Landing(len(set(event_ids)), int(rows), int(distinct))


def lake_files(lake_dir: Path) -> tuple[int, int]:
    """(number of Parquet files, total bytes)."""
    root = lake.table_dir(lake_dir)
    files = list(root.rglob("*.parquet")) if root.exists() else []
    return len(files), sum(f.stat().st_size for f in files)
