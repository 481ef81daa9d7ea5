"""One DuckDB query over the lake's tables, each a view named after its table
(``inference_events``, ``inference_feedback``): what ``inferstream lake sql`` runs."""

from __future__ import annotations

from pathlib import Path

import duckdb

from common import lake


def connect(where: lake.Lake | Path | str) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection (UTC) with every existing lake table registered."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for table in lake.TABLES:
        lake.register_duckdb(con, where, table)
    return con


def query(where: lake.Lake | Path | str, sql: str) -> str:
    con = connect(where)
    try:
        return str(con.sql(sql))
    finally:
        con.close()
