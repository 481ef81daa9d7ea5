"""Sliding windows of recent events per model version, compared with the model's
reference by the batch drift flow's own per-column tests (``monitoring``).

A :class:`Reference` holds, per column (the features, ``prediction`` and, for
classifiers, ``score``: the last class's probability), its kind and the reference
statistics ``monitoring.columns.column_data`` makes of the artifact's
``reference.parquet``. A :class:`Window` keeps the last ``size`` events of one model
version as rows of column values (O(1) an event); :meth:`Window.evaluate` turns them
into a frame and calls ``monitoring.datadrift.compare``: the same test, threshold and
verdict the hourly report gives for the same rows. Values are normalised as the flow
normalises them (numbers as floats, categories and booleans as lower-case text).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from common import artifact
from monitoring.columns import column_data
from monitoring.datadrift import compare
from monitoring.stats import ColumnData, ColumnDrift

NUMERIC_TYPES = {"number", "integer"}


@dataclass(frozen=True)
class Reference:
    model_name: str
    model_version: str
    kinds: dict[str, str]  # column -> "num" | "cat", in a fixed order
    stats: dict[str, ColumnData]
    score_label: str | None  # the class whose probability is the ``score`` column

    @classmethod
    def from_frame(
        cls,
        model_name: str,
        model_version: str,
        frame: pl.DataFrame,
        kinds: Mapping[str, str],
        score_label: str | None,
    ) -> Reference:
        kinds = {c: k for c, k in kinds.items() if c in frame.columns}
        stats = {c: column_data(_normalised(frame[c], k), k) for c, k in kinds.items()}
        return cls(model_name, model_version, dict(kinds), stats, score_label)

    @classmethod
    def from_artifact(cls, models_dir: Path, model_name: str, model_version: str) -> Reference:
        """The reference saved with the model artifact (ConfigError/FileNotFoundError if
        the artifact or its reference rows are missing)."""
        path = artifact.resolve_dir(models_dir, model_name, model_version)
        meta = artifact.read_metadata(path)
        kinds = {f.name: ("num" if f.type in NUMERIC_TYPES else "cat") for f in meta.features}
        kinds["prediction"] = "cat" if meta.task == "classification" else "num"
        label = str(meta.classes[-1]) if meta.task == "classification" and meta.classes else None
        if label is not None:
            kinds["score"] = "num"
        ref = path / "reference.parquet"
        if not ref.is_file():
            raise FileNotFoundError(f"{ref} is missing: retrain the model to monitor it")
        have = pl.read_parquet_schema(ref)
        frame = pl.read_parquet(ref, columns=[c for c in kinds if c in have])
        return cls.from_frame(model_name, model_version, frame, kinds, label)


def _normalised(series: pl.Series, kind: str) -> pl.Series:
    if kind == "num":
        return series.cast(pl.Float64, strict=False)
    if series.dtype == pl.Boolean:
        return series.cast(pl.String).str.to_lowercase()
    return series.cast(pl.String)


def _num(v: Any) -> float:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, bool):
        return float(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _cat(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


class Window:
    """The last ``size`` events of one model version, as rows of raw values in the
    reference's column order (converted only when evaluated: O(1) and cheap an event).
    ``added`` counts events since the last evaluation."""

    def __init__(self, reference: Reference, size: int) -> None:
        self.reference = reference
        self.rows: deque[tuple[Any, ...]] = deque(maxlen=size)
        self.added = 0
        self._features = [c for c in reference.kinds if c not in ("prediction", "score")]
        # the frame's columns: features, then prediction and score where the reference has them
        self._columns = [*self._features, "prediction", "score"]

    def add(self, event: Mapping[str, Any]) -> None:
        features = event["features"]
        scores = event.get("scores")
        score = scores.get(self.reference.score_label) if scores else None
        self.rows.append((*map(features.get, self._features), event.get("prediction"), score))
        self.added += 1

    def __len__(self) -> int:
        return len(self.rows)

    def frame(self) -> pl.DataFrame:
        cols = list(zip(*self.rows, strict=True)) if self.rows else [() for _ in self._columns]
        data = {}
        for name, values in zip(self._columns, cols, strict=True):
            kind = self.reference.kinds.get(name)
            if kind == "num":
                data[name] = pl.Series(name, [_num(v) for v in values], dtype=pl.Float64)
            elif kind == "cat":
                data[name] = pl.Series(name, [_cat(v) for v in values], dtype=pl.String)
        return pl.DataFrame(data)

    def evaluate(self) -> list[ColumnDrift]:
        """Every column's verdict on the window's rows (``monitoring.datadrift.compare``)."""
        self.added = 0
        return compare(self.reference.stats, self.frame(), self.reference.kinds)
