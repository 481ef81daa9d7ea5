"""How CBPE cuts data into slices (``monitoring.cbpe``), as NannyML's chunkers do: by
size, by calendar period or into a number of equal time slices."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl

from monitoring.errors import SchemaError

# -- chunks ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    key: str
    rows: np.ndarray  # row positions in the frame
    start: date | None  # a datetime, or a date for a Date timestamp column
    end: date | None


def size_chunks(n: int, size: int, times: pl.Series | None) -> list[Chunk]:
    """NannyML's SizeBasedChunker with ``incomplete='keep'``: rows in order, the remainder
    a last, smaller chunk."""
    if size < 1:
        raise SchemaError(f"chunk_size: expected a positive row count, got {size}")
    out = []
    for lo in range(0, n, size):
        idx = np.arange(lo, min(lo + size, n))
        t0 = times[int(idx[0])] if times is not None else None
        t1 = times[int(idx[-1])] if times is not None else None
        out.append(Chunk(f"[{lo}:{idx[-1]}]", idx, t0, t1))
    return out


def time_chunks(times: pl.Series, slices: int | None, period: str | None) -> list[Chunk]:
    """Equal time spans over the data's range (``slices``) or calendar periods (``period``,
    a polars duration such as ``1h`` or ``1d``)."""
    if times.null_count():
        raise SchemaError(f"timestamp: column {times.name!r} has {times.null_count()} missing values")
    if period is not None:
        keys = times.dt.truncate(period)
        frame = pl.DataFrame({"k": keys}).with_row_index("i")
        groups = [(k, g["i"].to_numpy()) for (k,), g in frame.group_by("k", maintain_order=True)]
        return [Chunk(str(k), rows, k, k) for k, rows in sorted(groups, key=lambda kg: kg[0])]
    assert slices is not None
    t0, t1 = times.min(), times.max()
    if not isinstance(t0, date) or not isinstance(t1, date):  # a datetime is a date too
        raise SchemaError(f"timestamp: column {times.name!r} holds {times.dtype}, not datetimes or dates")
    if t1 <= t0:
        return [Chunk(str(t0), np.arange(times.len()), t0, t1)]
    step = (t1 - t0) / slices
    ids = ((times - t0) / step).cast(pl.Int32).clip(0, slices - 1).to_numpy()
    out = []
    for i in range(slices):
        rows = np.flatnonzero(ids == i)
        if rows.size:
            start = t0 + step * i
            out.append(Chunk(start.isoformat(), rows, start, start + step))
    return out
