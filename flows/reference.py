"""The reference a drift run compares against, and its per-column statistics.

The reference is either the training reference saved with the model artifact
(``reference.parquet``) or a past window of the lake. Its statistics (sorted values,
category counts) are computed once per process and artifact version: the hourly run
compares a new window against the same reference every time.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from common import artifact
from monitoring.columns import column_data
from monitoring.stats import ColumnData

NUMERIC_TYPES = {"number", "integer"}


@dataclass(frozen=True)
class ColumnSpec:
    """A column a drift run compares, and whether it is numeric or categorical."""

    name: str
    kind: str  # "num" | "cat"
    role: str = "feature"  # "feature" | "prediction"


def column_specs(meta: artifact.ModelMetadata, columns: Sequence[str] | None = None) -> list[ColumnSpec]:
    """Features (all, or those named) plus the prediction and, for classifiers, its score."""
    known = {f.name: f for f in meta.features}
    names = list(columns) if columns else list(known)
    unknown = [c for c in names if c not in known]
    if unknown:
        raise ValueError(f"columns: {unknown} are not features of {meta.name} v{meta.version}")
    specs = [ColumnSpec(n, "num" if known[n].type in NUMERIC_TYPES else "cat") for n in names]
    specs.append(ColumnSpec("prediction", "cat" if meta.task == "classification" else "num", "prediction"))
    if meta.task == "classification" and meta.classes:
        specs.append(ColumnSpec("score", "num", "prediction"))
    return specs


def score_label(meta: artifact.ModelMetadata) -> str | None:
    """The class whose probability is the ``score`` (the last class, as training saves it)."""
    return str(meta.classes[-1]) if meta.task == "classification" and meta.classes else None


def class_labels(meta: artifact.ModelMetadata) -> list[str]:
    """A multiclass model's classes as the lake's score keys (text); empty otherwise.
    CBPE needs every class's probability for such a model, not one class's."""
    if meta.task == "classification" and len(meta.classes) > 2:
        return [str(c) for c in meta.classes]
    return []


def normalise(df: pl.DataFrame, specs: Sequence[ColumnSpec]) -> pl.DataFrame:
    """Same dtypes on both sides: numbers as Float64, categories (and booleans and the
    predicted class) as text, so a reference ``1`` and a lake ``"1"`` are one category."""
    exprs = []
    for s in specs:
        if s.name not in df.columns:
            exprs.append(pl.lit(None, dtype=pl.Float64 if s.kind == "num" else pl.String).alias(s.name))
        elif s.kind == "num":
            exprs.append(pl.col(s.name).cast(pl.Float64, strict=False))
        elif df.schema[s.name] == pl.Boolean:
            exprs.append(pl.col(s.name).cast(pl.String).str.to_lowercase())
        else:
            exprs.append(pl.col(s.name).cast(pl.String))
    return df.with_columns(exprs)


def read_artifact_reference(artifact_dir: Path, specs: Sequence[ColumnSpec]) -> pl.DataFrame:
    path = artifact_dir / "reference.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: retrain the model, or use a past window as reference")
    have = pl.read_parquet_schema(path)
    return normalise(pl.read_parquet(path, columns=[s.name for s in specs if s.name in have]), specs)


@functools.lru_cache(maxsize=8)
def _cached_stats(path: str, mtime_ns: int, specs: tuple[ColumnSpec, ...]) -> dict[str, ColumnData]:
    df = read_artifact_reference(Path(path), specs)
    return {s.name: column_data(df[s.name], s.kind) for s in specs}


def artifact_reference_stats(artifact_dir: Path, specs: Sequence[ColumnSpec]) -> dict[str, ColumnData]:
    """Per-column statistics of the artifact's reference, cached per artifact file."""
    f = artifact_dir / "reference.parquet"
    mtime = f.stat().st_mtime_ns if f.exists() else 0
    return _cached_stats(str(artifact_dir), mtime, tuple(specs))


def frame_stats(df: pl.DataFrame, specs: Sequence[ColumnSpec], *, sort: bool = True) -> dict[str, ColumnData]:
    return {s.name: column_data(df[s.name], s.kind, sort=sort) for s in specs}
