"""Which models and versions had traffic in a window: the drift scan runs one report
for each. Read from the lake with the same filters as a drift run (successful
inferences, synthetic traffic left out unless asked for), pruned by hive keys."""

from __future__ import annotations

from pathlib import Path

import duckdb

from common import lake
from flows.window import Window


def models_with_traffic(
    lake_dir: Path, window: Window, *, include_synthetic: bool = False
) -> list[tuple[str, str, int]]:
    """``(model, version, rows)`` with at least one row in ``[window.start, window.end)``,
    sorted by model then version."""
    if not lake.has_files(lake_dir):
        return []
    where = [
        "date BETWEEN CAST($d0 AS DATE) AND CAST($d1 AS DATE)",
        "(date > CAST($d0 AS DATE) OR hour >= $h0)",
        "(date < CAST($d1 AS DATE) OR hour <= $h1)",
        "event_time >= $start AND event_time < $end",
        "status = 'ok'",
    ]
    if not include_synthetic:
        where.append("NOT coalesce(synthetic, false)")
    params: dict[str, object] = {
        "d0": window.start.date().isoformat(),
        "d1": window.end.date().isoformat(),
        "h0": window.start.hour,
        "h1": window.end.hour,
        "start": window.start,
        "end": window.end,
    }
    sql = (
        f"SELECT model_name, CAST(model_version AS VARCHAR), count(*) FROM {lake.duckdb_source(lake_dir)} "
        f"WHERE {' AND '.join(where)} GROUP BY 1, 2 ORDER BY 1, 2"
    )
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        rows = con.sql(sql, params=params).fetchall()
    finally:
        con.close()
    return [(str(m), str(v), int(n)) for m, v, n in rows]
