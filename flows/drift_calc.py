"""A drift run's numbers: per-column results on all rows, the verdict, a timeline of
the drifted columns over the window, and the stratified sample the charts are drawn from."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

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
    idx = np.clip(_slice_ids(current["event_time"], t0, step), 0, slices - 1)
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


def _slice_ids(times: pl.Series, t0: datetime, step: timedelta) -> np.ndarray:
    """``floor((t - t0) / step)`` per row (-1 for a missing time), in numpy on the
    column's integer buffer (polars' datetime arithmetic held ~30 MB per 1M rows)."""
    unit = {"ns": 1, "us": 1_000, "ms": 1_000_000}[times.dtype.time_unit]  # type: ignore[attr-defined]
    ticks = times.to_physical()
    missing = ticks.is_null().to_numpy() if ticks.null_count() else None
    raw = ticks.fill_null(0).to_numpy() if missing is not None else ticks.to_numpy()  # zero-copy
    origin = int(pl.Series([t0], dtype=times.dtype).to_physical()[0])
    per = max(int(step / timedelta(microseconds=1)) * 1_000 // unit, 1)
    out = (raw - origin) // per
    if missing is not None:
        out[missing] = -1
    return out


def stratified_sample(df: pl.DataFrame, n: int, seed: int = 0) -> pl.DataFrame:
    """About ``n`` rows, the same fraction from every (time slice, predicted class)
    stratum, so the charts keep the window's shape over time and its prediction mix:
    ``ceil(fraction x stratum size)`` rows drawn at random from each stratum.

    Only one small integer per row (the stratum) and one sort order are held besides the
    frame, in numpy buffers that are returned to the system when done (a window-function
    version in polars held about 130 MB for a 1M-row window); only chosen rows are copied."""
    if df.height <= n:
        return df
    frac = n / df.height
    key = np.zeros(df.height, dtype=np.int64)
    if "event_time" in df.columns:
        t0 = df["event_time"].min()
        t1 = df["event_time"].max()
        span = (t1 - t0) / TIMELINE_SLICES if t1 > t0 else None  # type: ignore[operator]
        if span:
            key += _slice_ids(df["event_time"], t0, span) + 1  # type: ignore[arg-type]
    if "prediction" in df.columns:
        codes = df["prediction"].cast(pl.Categorical).to_physical().cast(pl.Int64).fill_null(-1)
        key *= int(codes.max() or 0) + 2  # type: ignore[arg-type]  # an Int64 column's max is an int
        key += codes.to_numpy() + 1
        del codes
    if not ("event_time" in df.columns or "prediction" in df.columns):
        return df.sample(n=n, seed=seed)
    priority = np.random.default_rng(seed).random(df.height, dtype=np.float32)
    order = np.lexsort((priority, key))  # by stratum, at random within one
    del priority
    sorted_key = key[order]
    del key
    starts = np.concatenate(([0], np.flatnonzero(sorted_key[1:] != sorted_key[:-1]) + 1))
    ends = np.append(starts[1:], df.height)
    del sorted_key
    keep = np.concatenate(
        [order[a : a + math.ceil((b - a) * frac)] for a, b in zip(starts, ends, strict=True)]
    )
    keep.sort()
    return df[pl.Series(keep)]


def release_freed_memory() -> None:
    """Give the memory of a dropped window back to the system (the drift flow calls this
    before Evidently is loaded for the charts).

    glibc raises its mmap threshold after large blocks are freed, so later column-sized
    buffers come from the heap; once anything is allocated above them (an import), freed
    blocks stay resident until ``malloc_trim`` returns their pages. Measured on the
    benchmark's 1M-row window: resident memory after dropping it 338 MB without, 177 MB
    with. Does nothing where the C library has no ``malloc_trim``."""
    gc.collect()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass
