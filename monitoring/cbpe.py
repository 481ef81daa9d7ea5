"""Confidence-based performance estimation (CBPE): a classifier's quality per slice
before any label exists, as NannyML (0.13) computes it, and checked once labels land.

The method (NannyML's CBPE, reimplemented here from its documented design and source):

1. **Calibration on the reference** (rows with labels). Per class (one-vs-rest for
   multiclass) an isotonic regression maps the model's score to a probability of that
   class, but only when it helps: NannyML's ``needs_calibration`` compares the expected
   calibration error before and after, on 10 stratified 90/10 splits (seed 42). Scores
   already separating perfectly (ROC AUC > 0.999) stay as they are. Multiclass
   calibrated scores are renormalised to sum to one per row.
2. **Expected confusion matrix per slice.** With calibrated probability ``p`` of the
   positive class, a row predicted positive is a true positive with probability ``p``
   and a false positive with ``1 - p``; summing gives expected TP/FP/TN/FN and from them
   accuracy, precision, recall and F1. ROC AUC: the rows sorted by the model's score,
   expected true/false positive rates from the cumulative calibrated probabilities.
   Multiclass metrics are macro averages over classes.
3. **Sampling error** per slice from the reference's spread (``std / sqrt(n * share)``);
   the band is the estimate +- 3 sampling errors, clipped to [0, 1].
4. **Alert thresholds** from the reference cut into chunks like the current data: the
   mean of the realized metric over those chunks +- 3 standard deviations, clipped to
   [0, 1]. A slice alerts when its estimate leaves them.

When a slice has labels, its realized metrics sit beside the estimates, computed from
the labelled rows only, and :attr:`PerformanceResult.mae` gives the mean absolute
estimation error per metric over those slices.

Regression (NannyML's DLE) is not implemented: ``estimate_performance`` is for binary
and multiclass classifiers. scikit-learn is imported only when fitting (calibration,
realized metrics): estimating with stored calibrators needs numpy alone.

The estimator is here; its parts are beside it: ``monitoring.cbpe_calibration`` (1),
``monitoring.cbpe_metrics`` (2, 3, the thresholds of 4 and the realized metrics),
``monitoring.cbpe_chunks`` (the slices) and ``monitoring.cbpe_results`` (what it returns).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import polars as pl

from monitoring.cbpe_calibration import Calibrator, fit_calibrator
from monitoring.cbpe_chunks import Chunk, size_chunks, time_chunks
from monitoring.cbpe_metrics import (
    METRICS,
    SAMPLING_ERROR_RANGE,
    Problem,
    alert_thresholds,
    auroc_components,
    binary_components,
    binary_sampling_error,
    class_components,
    estimate_binary,
    multiclass_sampling_error,
    realized_metrics,
)
from monitoring.cbpe_results import MetricEstimate, PerformanceResult, SliceEstimate, finite
from monitoring.columns import as_polars, label_text, require
from monitoring.errors import MonitoringError, NotFittedError, SchemaError

# the public names, as they were when all of CBPE was this one module
__all__ = [
    "CBPE",
    "METRICS",
    "Calibrator",
    "MetricEstimate",
    "PerformanceResult",
    "SliceEstimate",
    "estimate_performance",
]

# -- the estimator ---------------------------------------------------------------------------


class CBPE:
    """Fit on a labelled reference, then estimate slices of unlabelled data.

    ``scores`` is the column with the positive class's probability (binary) or a mapping
    class → column (multiclass). ``prediction`` holds the predicted class and ``target``
    the true one (needed in the reference; used in the current data where present).
    ``calibration`` (from :meth:`calibration_json`) reuses calibrators fitted earlier,
    e.g. stored with a model version, instead of fitting them again."""

    def __init__(
        self,
        *,
        target: str = "target",
        prediction: str = "prediction",
        scores: str | Mapping[str, str] = "score",
        positive: Any = None,
        metrics: Sequence[str] = METRICS,
    ) -> None:
        unknown = [m for m in metrics if m not in METRICS]
        if unknown:
            raise SchemaError(f"metrics: unknown {unknown}; expected some of {', '.join(METRICS)}")
        self.target, self.prediction, self.scores = target, prediction, scores
        self.positive = None if positive is None else str(label_text(pl.Series([positive]))[0])
        self.metrics = tuple(metrics)
        self.problem: Problem = "multiclass" if isinstance(scores, Mapping) else "binary"
        self.classes: tuple[str, ...] = ()
        self.calibrators: dict[str, Calibrator] = {}
        self._components: dict[str, Any] = {}
        self._reference: pl.DataFrame | None = None

    # ---- fitting
    def _score_columns(self) -> dict[str, str]:
        if isinstance(self.scores, Mapping):
            return {str(k): v for k, v in self.scores.items()}
        assert self.positive is not None
        return {self.positive: self.scores}

    def fit(self, reference: Any, *, calibration: Mapping[str, Any] | None = None) -> CBPE:
        ref = as_polars(reference, "reference")
        need = [self.target, self.prediction]
        need += list(self.scores.values()) if isinstance(self.scores, Mapping) else [self.scores]
        require(ref, need, "reference")
        ref = ref.filter(pl.all_horizontal(pl.col(c).is_not_null() for c in need))
        if ref.height < 2:
            raise MonitoringError("reference: needs labelled rows with a target, prediction and scores")
        y = label_text(ref[self.target])
        self.classes = self._fit_classes(ref, y)
        cols = self._score_columns()
        y_bin = {c: (y == c).to_numpy().astype(np.int64) for c in cols}
        self.calibrators = self._fit_calibrators(ref, cols, y_bin, calibration)
        self._components = self._fit_components(ref, cols, y, y_bin)
        self._reference = ref
        return self

    def _fit_classes(self, ref: pl.DataFrame, y: pl.Series) -> tuple[str, ...]:
        """The classes, the positive one last (binary; ``self.positive`` is set when unset)."""
        if self.problem == "binary":
            classes = sorted(set(y.unique().to_list()) | set(label_text(ref[self.prediction]).unique()))
            if len(classes) > 2:
                raise SchemaError(
                    f"scores: {len(classes)} classes in {self.target!r}; pass scores as a mapping "
                    "class -> probability column for a multiclass model"
                )
            if self.positive is None:
                self.positive = classes[-1]  # as training saves ``score``: the last class's probability
            return tuple(c for c in classes if c != self.positive) + (self.positive,)
        classes_ = tuple(sorted(self._score_columns()))
        seen = set(y.unique().to_list())
        if not seen <= set(classes_):
            raise SchemaError(
                f"scores: the reference target has classes {sorted(seen - set(classes_))} "
                "with no probability column"
            )
        return classes_

    @staticmethod
    def _fit_calibrators(
        ref: pl.DataFrame,
        cols: Mapping[str, str],
        y_bin: Mapping[str, np.ndarray],
        calibration: Mapping[str, Any] | None,
    ) -> dict[str, Calibrator]:
        """Stored calibrators (``calibration``) when given, else fitted on the reference."""
        if calibration is not None:
            stored = calibration.get("calibrators", {})
            missing = [c for c in cols if c not in stored]
            if missing:
                raise SchemaError(f"calibration: no calibrator for classes {missing}")
            return {c: Calibrator.from_json(stored[c]) for c in cols}
        return {c: fit_calibrator(y_bin[c], ref[col].cast(pl.Float64).to_numpy()) for c, col in cols.items()}

    def _fit_components(
        self, ref: pl.DataFrame, cols: Mapping[str, str], y: pl.Series, y_bin: Mapping[str, np.ndarray]
    ) -> dict[str, Any]:
        """The reference's sampling-error components per metric."""
        pred = label_text(ref[self.prediction])
        if self.problem == "binary":
            c = self.positive
            assert c is not None
            return binary_components(
                y_bin[c], (pred == c).to_numpy().astype(np.int64), ref[cols[c]].cast(pl.Float64).to_numpy()
            )
        comps: dict[str, Any] = {m: [] for m in ("roc_auc", "f1", "precision", "recall")}
        for c, col in cols.items():
            yb, pb = y_bin[c], (pred == c).to_numpy().astype(np.int64)
            comps["roc_auc"].append(auroc_components(yb, ref[col].cast(pl.Float64).to_numpy()))
            for m in ("f1", "precision", "recall"):
                comps[m].append(class_components(m, yb, pb, f1_correction=False))
        comps["accuracy"] = float(np.std((y == pred).to_numpy()))
        return comps

    def calibration_json(self) -> dict[str, Any]:
        """What a model artifact stores: the problem, classes and per-class calibrators."""
        if not self.calibrators:
            raise NotFittedError("CBPE: call fit(reference) first")
        return {
            "method": "cbpe",
            "problem": self.problem,
            "classes": list(self.classes),
            "positive": self.positive,
            "calibrators": {c: cal.to_json() for c, cal in self.calibrators.items()},
        }

    # ---- estimating
    def _prepare(self, df: pl.DataFrame) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
        """Raw and calibrated probability per class, and the predicted class, as arrays."""
        cols = self._score_columns()
        raw = {c: df[col].cast(pl.Float64).to_numpy() for c, col in cols.items()}
        cal = {c: self.calibrators[c].calibrate(raw[c]) for c in cols}
        if self.problem == "multiclass":
            stack = np.column_stack([cal[c] for c in self.classes])
            den = stack.sum(axis=1)[:, None]
            stack = np.divide(stack, den, out=np.full_like(stack, 1 / len(self.classes)), where=den != 0)
            cal = {c: stack[:, i] for i, c in enumerate(self.classes)}
        return raw, cal, label_text(df[self.prediction]).to_numpy()

    def _estimate_rows(
        self, raw: dict[str, np.ndarray], cal: dict[str, np.ndarray], pred: np.ndarray
    ) -> dict[str, tuple[float, float]]:
        n = len(pred)
        out = {}
        for m in self.metrics:
            if self.problem == "binary":
                c = self.positive
                assert c is not None
                value = estimate_binary(m, (pred == c).astype(np.int64), cal[c], raw[c])
                err = binary_sampling_error(m, self._components[m], n)
            else:
                if m == "accuracy":
                    stack = np.column_stack([cal[c] * (pred == c) for c in self.classes])
                    value = float(np.mean(np.max(stack, axis=1)))
                else:
                    value = float(
                        np.mean(
                            [
                                estimate_binary(m, (pred == c).astype(np.int64), cal[c], raw[c])
                                for c in self.classes
                            ]
                        )
                    )
                err = multiclass_sampling_error(m, self._components[m], n)
            out[m] = (value, err)
        return out

    def _slices(
        self,
        df: pl.DataFrame,
        chunks: list[Chunk],
        period: Literal["reference", "analysis"],
        thresholds: Mapping[str, tuple[float | None, float | None]],
    ) -> list[SliceEstimate]:
        cols = list(self._score_columns().values())
        ok = df.select(pl.all_horizontal([pl.col(c).is_not_null() for c in [*cols, self.prediction]]))
        usable = ok.to_series().to_numpy()
        raw, cal, pred = self._prepare(df)
        has_y = self.target in df.columns
        y = label_text(df[self.target]).to_numpy() if has_y else None
        out = []
        for ch in chunks:
            rows = ch.rows[usable[ch.rows]]
            if rows.size == 0:
                continue
            r = {c: v[rows] for c, v in raw.items()}
            k = {c: v[rows] for c, v in cal.items()}
            est = self._estimate_rows(r, k, pred[rows])
            realized: dict[str, float] = {}
            labelled = 0
            if y is not None:
                yr = y[rows]
                mask = np.array([v is not None for v in yr], dtype=bool)
                labelled = int(mask.sum())
                realized = realized_metrics(
                    self.metrics,
                    self.problem,
                    self.classes,
                    self.positive,
                    yr[mask].astype(str),
                    pred[rows][mask].astype(str),
                    {c: v[mask] for c, v in r.items()},
                )
            metrics = {}
            for m, (value, err) in est.items():
                lo_t, hi_t = thresholds.get(m, (None, None))
                alert = not math.isnan(value) and (
                    (lo_t is not None and value < lo_t) or (hi_t is not None and value > hi_t)
                )
                metrics[m] = MetricEstimate(
                    m,
                    value,
                    err,
                    max(0.0, value - SAMPLING_ERROR_RANGE * err),
                    min(1.0, value + SAMPLING_ERROR_RANGE * err),
                    lo_t,
                    hi_t,
                    bool(alert),
                    finite(realized.get(m)),
                )
            out.append(SliceEstimate(ch.key, int(rows.size), labelled, ch.start, ch.end, period, metrics))
        return out

    def estimate(
        self,
        current: Any,
        *,
        chunk_size: int | None = None,
        chunk_period: str | None = None,
        slices: int | None = None,
        timestamp: str | None = None,
        reference_chunk_size: int | None = None,
    ) -> PerformanceResult:
        """Estimates per slice of ``current``: ``chunk_size`` rows each (in frame order),
        or by ``timestamp``, calendar periods (``chunk_period``: ``"1h"``, ``"1d"``) or
        ``slices`` equal time spans. The reference is cut into chunks of
        ``reference_chunk_size`` rows (default: ``chunk_size``, else the current slices'
        mean size) for the thresholds."""
        if self._reference is None:
            raise NotFittedError("CBPE: call fit(reference) first")
        cur = as_polars(current, "current")
        need = [self.prediction, *self._score_columns().values()]
        if timestamp is not None:
            need.append(timestamp)
        require(cur, need, "current")
        if (chunk_size is None) == (chunk_period is None and slices is None):
            raise SchemaError("estimate: pass exactly one of chunk_size, chunk_period or slices")
        times = cur[timestamp] if timestamp is not None else None
        if chunk_size is not None:
            chunks = size_chunks(cur.height, chunk_size, times)
        else:
            if times is None:
                raise SchemaError("timestamp: chunk_period and slices need the name of a timestamp column")
            chunks = time_chunks(times, slices, chunk_period)
        ref_size = reference_chunk_size or chunk_size
        if ref_size is None:
            ref_size = max(1, round(cur.height / max(len(chunks), 1)))
        ref = self._reference
        ref_chunks = size_chunks(ref.height, min(ref_size, ref.height), None)
        no_thresholds: dict[str, tuple[float | None, float | None]] = {}
        ref_slices = self._slices(ref, ref_chunks, "reference", no_thresholds)
        thresholds = {m: alert_thresholds([s.metrics[m].realized for s in ref_slices]) for m in self.metrics}
        ref_slices = self._slices(ref, ref_chunks, "reference", thresholds)
        return PerformanceResult(
            self.problem,
            self.metrics,
            self.classes,
            self._slices(cur, chunks, "analysis", thresholds),
            ref_slices,
            thresholds,
            {c: bool(cal.x) for c, cal in self.calibrators.items()},
        )


def estimate_performance(
    reference: Any,
    current: Any,
    *,
    target: str = "target",
    prediction: str = "prediction",
    scores: str | Mapping[str, str] = "score",
    positive: Any = None,
    metrics: Sequence[str] = METRICS,
    chunk_size: int | None = None,
    chunk_period: str | None = None,
    slices: int | None = None,
    timestamp: str | None = None,
    reference_chunk_size: int | None = None,
    calibration: Mapping[str, Any] | None = None,
) -> PerformanceResult:
    """Fit CBPE on ``reference`` (labelled) and estimate ``current`` per slice; see
    :class:`CBPE` and :meth:`CBPE.estimate` for the arguments. Frames are pandas or polars."""
    est = CBPE(target=target, prediction=prediction, scores=scores, positive=positive, metrics=metrics)
    est.fit(reference, calibration=calibration)
    return est.estimate(
        current,
        chunk_size=chunk_size,
        chunk_period=chunk_period,
        slices=slices,
        timestamp=timestamp,
        reference_chunk_size=reference_chunk_size,
    )
