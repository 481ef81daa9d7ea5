"""A drift run's numbers: per-column results on all rows, the verdict, a timeline of
the drifted columns over the window, and the stratified sample the charts are drawn from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl

from flows.reference import ColumnSpec
from monitoring.columns import column_data
from monitoring.datadrift import compare as compare_columns
from monitoring.stats import ColumnData, ColumnDrift, column_drift

TIMELINE_SLICES = 12


@dataclass
class Verdict:
    drift: bool
    drifted_features: list[str]
    feature_share: float
    drift_share: float
    prediction_drift: bool

    def reason(self) -> str:
        parts = []
        if self.prediction_drift:
            parts.append("prediction drift")
        if self.drifted_features:
            cmp = ">=" if self.feature_share >= self.drift_share else "<"
            parts.append(
                f"{len(self.drifted_features)} drifted features "
                f"({self.feature_share:.0%} {cmp} {self.drift_share:.0%}): {', '.join(self.drifted_features)}"
            )
        if not self.drift:
            return "no drift" + (f" (below the dataset-drift share; {parts[-1]})" if parts else "")
        return "; ".join(parts)


@dataclass
class TimelineRow:
    start: datetime
    rows: int
    scores: dict[str, float | None] = field(default_factory=dict)
    drifted: dict[str, bool] = field(default_factory=dict)


def compare(
    reference: Mapping[str, ColumnData],
    current: pl.DataFrame,
    specs: Sequence[ColumnSpec],
    methods: Mapping[str, str] | None = None,
) -> list[ColumnDrift]:
    """One result per column present on both sides with data (``monitoring.datadrift.compare``,
    the implementation the public ``monitoring.drift`` uses)."""
    return compare_columns(reference, current, {s.name: s.kind for s in specs}, methods)


def verdict(results: Sequence[ColumnDrift], specs: Sequence[ColumnSpec], drift_share: float) -> Verdict:
    """Drift when at least ``drift_share`` of the features drift (Evidently's dataset-drift
    rule), or when the model's output drifts."""
    roles = {s.name: s.role for s in specs}
    features = [r for r in results if roles.get(r.column) == "feature"]
    drifted = [r.column for r in features if r.drifted]
    share = len(drifted) / len(features) if features else 0.0
    pred = any(r.drifted for r in results if roles.get(r.column) == "prediction")
    return Verdict(bool(drifted) and share >= drift_share or pred, drifted, share, drift_share, pred)


def timeline(
    reference: Mapping[str, ColumnData],
    current: pl.DataFrame,
    specs: Sequence[ColumnSpec],
    results: Sequence[ColumnDrift],
    slices: int = TIMELINE_SLICES,
) -> list[TimelineRow]:
    """Each drifted column's score on equal time slices of the window (same test and
    threshold as the whole window): shows from when a column drifts."""
    drifted = {r.column: r for r in results if r.drifted}
    if current.is_empty() or not drifted:
        return []
    kinds = {s.name: s.kind for s in specs}
    t0, t1 = current["event_time"].min(), current["event_time"].max()
    assert isinstance(t0, datetime) and isinstance(t1, datetime)
    step = max((t1 - t0) / slices, (t1 - t0) / 10**6) if t1 > t0 else None
    if step is None:
        return []
    idx = (
        current.select(
            ((pl.col("event_time") - pl.lit(t0)) / pl.lit(step)).cast(pl.Int32).clip(0, slices - 1)
        )
        .to_series()
        .to_numpy()
    )
    # one stable sort of the slice ids; each drifted column is then gathered in slice order
    # once (a single column at a time: a 1M-row window is never copied whole)
    order = np.argsort(idx, kind="stable")
    bounds = np.searchsorted(idx[order], np.arange(slices + 1))
    rows_per_slice = np.diff(bounds)
    out = [TimelineRow(t0 + step * i, int(rows_per_slice[i])) for i in range(slices)]
    for name, res in drifted.items():
        col = current[name]
        if kinds[name] == "num":
            values = col.cast(pl.Float64).to_numpy()[order]
            parts = [pl.Series(name, values[bounds[i] : bounds[i + 1]]) for i in range(slices)]
        else:
            ordered = col.gather(pl.Series(order))
            parts = [ordered.slice(int(bounds[i]), int(rows_per_slice[i])) for i in range(slices)]
        for row, part in zip(out, parts, strict=True):
            if row.rows == 0:
                continue
            cur = column_data(part, kinds[name], sort=False)
            if cur.n == 0:
                row.scores[name] = None
                continue
            r = column_drift(name, reference[name], cur, res.method, res.threshold)  # type: ignore[arg-type]
            row.scores[name] = r.score
            row.drifted[name] = r.drifted
    return [row for row in out if row.rows]


def stratified_sample(df: pl.DataFrame, n: int, seed: int = 0) -> pl.DataFrame:
    """About ``n`` rows, the same fraction from every (time slice, predicted class)
    stratum, so the charts keep the window's shape over time and its prediction mix."""
    if df.height <= n:
        return df
    frac = n / df.height
    keys: list[Any] = []
    if "event_time" in df.columns:
        t0 = df["event_time"].min()
        t1 = df["event_time"].max()
        span = (t1 - t0) / TIMELINE_SLICES if t1 > t0 else None  # type: ignore[operator]
        if span:
            keys.append(((pl.col("event_time") - pl.lit(t0)) / pl.lit(span)).cast(pl.Int64).alias("_s"))
    if "prediction" in df.columns:
        keys.append(pl.col("prediction").alias("_p"))
    if not keys:
        return df.sample(n=n, seed=seed)
    # the strata keys and the chosen row numbers are small; only chosen rows are copied
    strata = df.select(keys).with_row_index("_i")
    names = [k.meta.output_name() for k in keys]
    rank = pl.int_range(pl.len()).shuffle(seed=seed).over(names)
    keep = strata.filter(rank < (pl.len().over(names) * frac).ceil())["_i"].sort()
    return df[keep]


def results_json(results: Sequence[ColumnDrift]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]
