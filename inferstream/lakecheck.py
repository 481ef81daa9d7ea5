"""Counting what landed: compares a set of event ids with a lake table's rows (DuckDB
over the table's current snapshot)."""

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


def landing(where: lake.Lake | Path | str, event_ids: list[str], table: str = lake.EVENTS_TABLE) -> Landing:
    """How many of ``event_ids`` are in ``table`` (the feedback table keys its rows by the
    prediction's event id too)."""
    con = duckdb.connect()
    try:
        if not lake.register_duckdb(con, where, table):
            return Landing(len(set(event_ids)), 0, 0)
        con.register("expected", pa.table({"event_id": sorted(set(event_ids))}))
        rows, distinct = con.execute(
            f"SELECT count(*), count(DISTINCT l.event_id) FROM {table} l "
            "JOIN expected e ON l.event_id = e.event_id"
        ).fetchone()  # type: ignore[misc]
    finally:
        con.close()
    return Landing(len(set(event_ids)), int(rows), int(distinct))


def lake_files(where: lake.Lake | Path | str) -> tuple[int, int]:
    """(live data files of the events table's snapshot, their bytes)."""
    size = lake.table_size(where, lake.EVENTS_TABLE)
    return (0, 0) if size is None else (size.files, size.bytes)
