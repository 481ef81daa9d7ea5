"""Sliding windows of recent events per model version, compared with the model's
reference by the batch drift flow's own per-column tests (``monitoring``).

A :class:`Reference` holds, per column (the features, ``prediction`` and, for
classifiers, ``score``: the last class's probability), its kind and the reference
statistics ``monitoring.columns.column_data`` makes of the artifact's
``reference.parquet``. A :class:`Window` keeps the last ``size`` events of one model
version column by column in ring buffers: numbers as floats in a numpy array,
categories as integer codes (with their labels beside). A batch of events is converted
once a column (no Python call a value in the usual case) and written with two slice
assignments. :meth:`Window.evaluate` builds the frame of the window's rows, oldest
first, exactly as the former row-by-row window did, and calls
``monitoring.datadrift.compare``: the same test, threshold and verdict the hourly report
gives for the same rows. Values are normalised as the flow normalises them (numbers as
floats, categories and booleans as lower-case text; ``_num`` and ``_cat`` are the
rules, the vectorised paths give the same values).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter, methodcaller
from pathlib import Path
from typing import Any

import numpy as np
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
    except (TypeError, ValueError, OverflowError):
        return math.nan


def _cat(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


_NUM_FAST = frozenset({float, int, bool, type(None)})
_PLAIN_CAT = frozenset({str, type(None)})


def num_array(raw: Sequence[Any]) -> np.ndarray:
    """``[_num(v) for v in raw]`` as a float array; without a Python call a value when
    the values are numbers, booleans and nulls (numpy gives None as nan, booleans as
    0/1, integers correctly rounded, as ``float()`` does)."""
    if set(map(type, raw)) <= _NUM_FAST:
        try:
            return np.array(raw, dtype=np.float64)
        except OverflowError:  # an integer beyond a float's range: _num says nan
            pass
    return np.fromiter(map(_num, raw), np.float64, len(raw))


_BOOL_TEXT = {True: "true", False: "false"}


def cat_list(raw: Sequence[Any]) -> Sequence[Any]:
    """``[_cat(v) for v in raw]``; ``raw`` itself when it holds only text and nulls, and
    one C-level ``map`` when it holds only booleans (and nulls), integers or floats."""
    types = set(map(type, raw))
    if types <= _PLAIN_CAT:
        return raw
    if types <= {bool, type(None)}:
        return list(map(_BOOL_TEXT.get, raw))  # None -> None
    if types == {int} or types == {float}:
        return list(map(str, raw))
    return list(map(_cat, raw))


class _Categories:
    """One categorical column of a window: codes in a ring, ``labels[code]`` beside
    (code 0 is a missing value). Labels no longer in the window are dropped when they
    outnumber the window (:meth:`compact`), so a high-cardinality column stays bounded."""

    def __init__(self, size: int) -> None:
        self.ring = np.zeros(size, dtype=np.int32)
        self.labels: list[str | None] = [None]
        self.codes: dict[str | None, int] = {None: 0}

    def encode(self, values: Sequence[Any]) -> np.ndarray:
        got = list(map(self.codes.get, values))
        if None in got:  # values not seen before
            for i, code in enumerate(got):
                if code is None:
                    v = values[i]
                    code = self.codes.get(v)
                    if code is None:
                        code = self.codes[v] = len(self.labels)
                        self.labels.append(v)
                    got[i] = code
        return np.array(got, dtype=np.int32)

    def compact(self, n: int) -> None:
        if len(self.labels) <= 2 * self.ring.size + 64:
            return
        live = np.unique(self.ring[:n])
        live = live[live != 0]
        remap = np.zeros(len(self.labels), dtype=np.int32)
        remap[live] = np.arange(1, live.size + 1, dtype=np.int32)
        self.ring[:n] = remap[self.ring[:n]]
        self.labels = [None, *(self.labels[c] for c in live.tolist())]
        self.codes = {v: i for i, v in enumerate(self.labels)}


class Window:
    """The last ``size`` events of one model version, column by column in ring buffers
    (see the module doc). ``added`` counts events since the last evaluation."""

    def __init__(self, reference: Reference, size: int) -> None:
        if size < 1:
            raise ValueError("a window holds at least one event")
        self.reference = reference
        self.size = size
        self.added = 0
        self._n = 0  # events held
        self._pos = 0  # where the next event goes
        kinds = reference.kinds
        self._features = [c for c in kinds if c not in ("prediction", "score")]
        # the frame's columns: features, then prediction and score where the reference has them
        self._columns = [c for c in (*self._features, "prediction", "score") if c in kinds]
        self._num = {c: np.full(size, np.nan) for c in self._columns if kinds[c] == "num"}
        self._cat = {c: _Categories(size) for c in self._columns if kinds[c] == "cat"}

    def add(self, event: Mapping[str, Any]) -> None:
        """One decoded event (a dict as ``orjson`` gives it)."""
        self.extend([event["features"]], [event.get("prediction")], [event.get("scores")])

    def extend(
        self, features: Sequence[Mapping[str, Any]], predictions: Sequence[Any], scores: Sequence[Any]
    ) -> None:
        """A batch of events, as three parallel lists: each event's features (a dict),
        prediction and scores (a dict of class probabilities, or anything else: no score)."""
        k = len(features)
        if not k:
            return
        self.added += k
        if k > self.size:  # only the last ``size`` can stay
            features, predictions, scores = (
                features[-self.size :],
                predictions[-self.size :],
                scores[-self.size :],
            )
            k = self.size
        raw = self._feature_columns(features)
        if "prediction" in self.reference.kinds:
            raw["prediction"] = predictions
        if "score" in self.reference.kinds:
            label = self.reference.score_label
            if set(map(type, scores)) == {dict}:
                raw["score"] = list(map(methodcaller("get", label), scores))
            else:
                raw["score"] = [s.get(label) if type(s) is dict else None for s in scores]
        rings: list[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]] = []
        for c, values in raw.items():
            if c in self._num:
                rings.append((self._num[c], num_array(values)))
            else:
                cats = self._cat[c]
                rings.append((cats.ring, cats.encode(cat_list(values))))
        pos = self._pos
        first = min(k, self.size - pos)
        for ring, encoded in rings:
            ring[pos : pos + first] = encoded[:first]
            ring[: k - first] = encoded[first:]
        self._pos = (pos + k) % self.size
        self._n = min(self.size, self._n + k)

    def _feature_columns(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Sequence[Any]]:
        """Column by column; transposed in C when every event has every feature."""
        names = self._features
        if len(names) > 1:
            try:
                return dict(zip(names, zip(*map(itemgetter(*names), features), strict=True), strict=True))
            except KeyError:  # a feature missing from an event: None there, as .get gives
                pass
        return {c: [f.get(c) for f in features] for c in names}

    def __len__(self) -> int:
        return self._n

    def _oldest_first(self, ring: np.ndarray) -> np.ndarray:
        if self._n < self.size:
            return ring[: self._n]
        return np.concatenate((ring[self._pos :], ring[: self._pos]))

    def frame(self) -> pl.DataFrame:
        """The window's rows, oldest first, one column per reference column."""
        data = {}
        for name in self._columns:
            if name in self._num:
                data[name] = pl.Series(name, self._oldest_first(self._num[name]), dtype=pl.Float64)
            else:
                cats = self._cat[name]
                cats.compact(self._n)
                labels = pl.Series(name, cats.labels, dtype=pl.String)
                data[name] = labels.gather(self._oldest_first(cats.ring))
        return pl.DataFrame(data)

    def evaluate(self) -> list[ColumnDrift]:
        """Every column's verdict on the window's rows (``monitoring.datadrift.compare``)."""
        self.added = 0
        return compare(self.reference.stats, self.frame(), self.reference.kinds)
