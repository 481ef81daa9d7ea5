"""The window cut into equal time slices, for the report's volume and prediction-mix
chart. Slices follow the window (a 1 h window gives 5 min slices starting on the hour),
so the chart's bars line up with the times a reader expects."""

from __future__ import annotations

from typing import Any

import polars as pl

from flows.window import Window

SLICES = 12


def prediction_mix(current: pl.DataFrame, window: Window, slices: int = SLICES) -> list[dict[str, Any]]:
    """One entry per slice of ``window`` (empty slices included, with zero rows: a gap
    in traffic is information): ``start``, ``end``, ``rows`` and ``counts`` by predicted
    class."""
    step = (window.end - window.start) / slices
    out: list[dict[str, Any]] = [
        {
            "start": (window.start + step * i).isoformat(),
            "end": (window.start + step * (i + 1)).isoformat(),
            "rows": 0,
            "counts": {},
        }
        for i in range(slices)
    ]
    if current.is_empty() or "prediction" not in current.columns:
        return out
    idx = ((pl.col("event_time") - pl.lit(window.start)) / pl.lit(step)).cast(pl.Int64).clip(0, slices - 1)
    agg = (
        current.select(idx.alias("_s"), pl.col("prediction").cast(pl.String).fill_null("(none)"))
        .group_by("_s", "prediction")
        .len()
        .sort("_s", "prediction")
    )
    for s, pred, n in agg.iter_rows():
        out[s]["counts"][pred] = int(n)
        out[s]["rows"] += int(n)
    return out
