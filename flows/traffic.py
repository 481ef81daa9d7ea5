"""Which models and versions had traffic in a window: the drift scan runs one report
for each. Read from the lake's events Delta table with the same filters as a drift run
(``flows.lake_reader``: successful inferences, synthetic traffic left out unless asked
for), the partition columns (date, hour) and ``event_time`` pushed down so only the
window's files are scanned."""

from __future__ import annotations

from pathlib import Path

import duckdb

from common import lake
from flows.window import Window


def models_with_traffic(
    where: lake.Lake | Path | str, window: Window, *, include_synthetic: bool = False
) -> list[tuple[str, str, int]]:
    """``(model, version, rows)`` with at least one row in ``[window.start, window.end)``,
    sorted by model then version."""
    where_sql = [
        "date BETWEEN CAST($d0 AS DATE) AND CAST($d1 AS DATE)",
        "(date > CAST($d0 AS DATE) OR hour >= $h0)",
        "(date < CAST($d1 AS DATE) OR hour <= $h1)",
        "event_time >= $start AND event_time < $end",
        "status = 'ok'",
    ]
    if not include_synthetic:
        where_sql.append("NOT coalesce(synthetic, false)")
    params: dict[str, object] = {
        "d0": window.start.date().isoformat(),
        "d1": window.end.date().isoformat(),
        "h0": window.start.hour,
        "h1": window.end.hour,
        "start": window.start,
        "end": window.end,
    }
    sql = (
        f"SELECT model_name, CAST(model_version AS VARCHAR), count(*) FROM {lake.EVENTS_TABLE} "
        f"WHERE {' AND '.join(where_sql)} GROUP BY 1, 2 ORDER BY 1, 2"
    )
    con = duckdb.connect()
    try:
        if not lake.register_duckdb(con, where, lake.EVENTS_TABLE):
            return []  # no table yet: no traffic
        con.execute("SET TimeZone = 'UTC'")
        rows = con.sql(sql, params=params).fetchall()
    finally:
        con.close()
    return [(str(m), str(v), int(n)) for m, v, n in rows]
