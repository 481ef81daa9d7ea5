"""The streaming drift monitor's episodes of one model version that overlap a window,
from the lake's ``drift_episodes`` table (landed by the lake group from
``inference-alerts``; see ``consumers/episodes.py``), for the hourly report.

An episode is its opening alert and, once it closed, its closing alert (same
``episode_id``). It overlaps ``[start, end)`` when it opened before ``end`` and had not
closed before ``start``. Times are the monitor's (``alerted_at``), not event times.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from common import lake
from flows.window import Window

OPENED, CLOSED = "drift_episode_opened", "drift_episode_closed"


def read_episodes(
    where: lake.Lake | Path | str, model: str, version: str, window: Window
) -> list[dict[str, Any]] | None:
    """The overlapping episodes, oldest first: ``episode_id``, ``column``, ``method``,
    ``opened_at`` and ``closed_at`` (ISO text; ``closed_at`` None while open),
    ``score_at_open``, ``threshold``, ``opened_in_window`` and ``open_at_end`` (still
    open at the window's end).
    None when the lake has no episodes table (nothing was ever landed there: the lake
    group does not read the alerts topic, or no monitor ever alerted), which a report
    must not show as "no episodes"."""
    con = duckdb.connect()
    try:
        if not lake.register_duckdb(con, where, lake.EPISODES_TABLE):
            return None
        con.execute("SET TimeZone = 'UTC'")
        df = con.sql(
            f"""
            WITH a AS (
                SELECT * FROM {lake.EPISODES_TABLE}
                WHERE model = $model AND model_name = $model_name AND model_version = $version
                  AND date <= CAST($d1 AS DATE)
            ), o AS (
                SELECT episode_id, min(alerted_at) AS opened_at, any_value("column") AS col,
                       any_value(method) AS method, any_value(score) AS score, any_value(threshold) AS thr
                FROM a WHERE kind = '{OPENED}' GROUP BY episode_id
            ), c AS (
                SELECT episode_id, min(alerted_at) AS closed_at FROM a WHERE kind = '{CLOSED}'
                GROUP BY episode_id
            )
            SELECT o.episode_id, o.col, o.method, o.opened_at, c.closed_at, o.score, o.thr
            FROM o LEFT JOIN c USING (episode_id)
            WHERE o.opened_at < $end AND (c.closed_at IS NULL OR c.closed_at >= $start)
            ORDER BY o.opened_at, o.col
            """,
            params={
                "model": lake.safe_segment(model),
                "model_name": model,
                "version": version,
                "d1": window.end.date().isoformat(),
                "start": window.start,
                "end": window.end,
            },
        ).pl()
    finally:
        con.close()
    return [
        {
            "episode_id": eid,
            "column": col,
            "method": method,
            "opened_at": opened.isoformat(),
            "closed_at": closed.isoformat() if closed is not None else None,
            "score_at_open": score,
            "threshold": thr,
            "opened_in_window": opened >= window.start,
            "open_at_end": closed is None or closed >= window.end,
        }
        for eid, col, method, opened, closed, score, thr in df.iter_rows()
    ]
