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
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

import numpy as np
import polars as pl

from monitoring.columns import as_polars, require
from monitoring.errors import MonitoringError, NotFittedError, SchemaError

METRICS: tuple[str, ...] = ("roc_auc", "accuracy", "f1", "precision", "recall")
SAMPLING_ERROR_RANGE = 3  # NannyML's band: estimate +- 3 sampling errors
STD_MULTIPLIER = 3  # NannyML's StandardDeviationThreshold default
Problem = Literal["binary", "multiclass"]


# -- calibration -------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibrator:
    """Isotonic calibration as breakpoints (sklearn's ``X_thresholds_``/``y_thresholds_``,
    linear between, clipped outside); no breakpoints means the identity."""

    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()

    def calibrate(self, scores: np.ndarray) -> np.ndarray:
        if not self.x:
            return np.asarray(scores, dtype=np.float64)
        return np.interp(np.asarray(scores, dtype=np.float64), self.x, self.y)

    def to_json(self) -> dict[str, list[float]]:
        return {"x": list(self.x), "y": list(self.y)}

    @classmethod
    def from_json(cls, d: Mapping[str, Sequence[float]]) -> Calibrator:
        return cls(tuple(float(v) for v in d.get("x", ())), tuple(float(v) for v in d.get("y", ())))


def _isotonic() -> Any:  # an sklearn IsotonicRegression (sklearn is untyped)
    from sklearn.isotonic import IsotonicRegression

    return IsotonicRegression(out_of_bounds="clip", increasing=True)


def _ece(y_true: np.ndarray, proba: np.ndarray, bin_count: int) -> float:
    n = len(proba)
    if n <= 2 * bin_count:
        bin_count = n // 2
        if bin_count < 2:
            raise MonitoringError(f"reference: {n} rows cannot be split into 2 calibration bins")
    width = n // bin_count
    edges = np.asarray(range(0, n + 1, width))
    edges[-1] = n
    order = proba.argsort()  # NannyML's (unstable) sort, so tied scores bin alike
    proba, y_true = proba[order], y_true[order]
    terms = [
        (r - lo) / n * abs(np.mean(proba[lo:r]) - np.mean(y_true[lo:r]))
        for lo, r in zip(edges[:-1], edges[1:], strict=True)
    ]
    return float(np.sum(terms))


def needs_calibration(y_true: np.ndarray, scores: np.ndarray, bin_count: int = 10, splits: int = 10) -> bool:
    """NannyML's test: does isotonic calibration lower the expected calibration error on
    held-out 10 % splits? ``y_true`` is 0/1."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedShuffleSplit

    if len(np.unique(y_true)) == 1:
        return False
    if roc_auc_score(y_true, scores) > 0.999:
        return False
    sss = StratifiedShuffleSplit(n_splits=splits, test_size=0.1, random_state=42)
    ys, raw, cal = [], [], []
    for train, test in sss.split(scores, y_true):
        iso = _isotonic().fit(scores[train], y_true[train])
        ys.append(y_true[test])
        raw.append(scores[test])
        cal.append(iso.predict(scores[test]))
    y, r, c = np.concatenate(ys), np.concatenate(raw), np.concatenate(cal)
    return _ece(y, r, bin_count) > _ece(y, c, bin_count)


def fit_calibrator(y_true: np.ndarray, scores: np.ndarray) -> Calibrator:
    """Isotonic breakpoints when :func:`needs_calibration`, else the identity."""
    y_true = np.asarray(y_true, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if not needs_calibration(y_true, scores):
        return Calibrator()
    iso = _isotonic().fit(scores, y_true)
    return Calibrator(tuple(map(float, iso.X_thresholds_)), tuple(map(float, iso.y_thresholds_)))


# -- estimates from calibrated probabilities ------------------------------------------------


def _ratio(num: float, den: float) -> float:
    return num / den if den != 0 else 0.0


def estimate_binary(metric: str, y_pred: np.ndarray, p: np.ndarray, scores: np.ndarray) -> float:
    """One metric's expected value; ``y_pred`` 0/1, ``p`` calibrated, ``scores`` raw."""
    if metric == "roc_auc":
        return _estimate_roc_auc(p, scores)
    pos = y_pred == 1
    tp = float(np.sum(np.where(pos, p, 0.0)))
    fp = float(np.sum(np.where(pos, 1 - p, 0.0)))
    fn = float(np.sum(np.where(~pos, p, 0.0)))
    tn = float(np.sum(np.where(~pos, 1 - p, 0.0)))
    if metric == "accuracy":
        return (tp + tn) / len(y_pred)
    if metric == "precision":
        return _ratio(tp, tp + fp)
    if metric == "recall":
        return _ratio(tp, tp + fn)
    if metric == "f1":
        return _ratio(tp, tp + 0.5 * (fp + fn))
    raise SchemaError(f"metrics: unknown metric {metric!r}; expected some of {', '.join(METRICS)}")


def _estimate_roc_auc(p: np.ndarray, scores: np.ndarray) -> float:
    order = np.argsort(scores)[::-1]
    p = p[order]
    with np.errstate(divide="ignore", invalid="ignore"):
        tps = np.cumsum(p)
        fps = 1 + np.arange(len(p)) - tps
        tps = np.round(np.concatenate(([0], tps)), 5)  # NannyML rounds before normalising
        fps = np.round(np.concatenate(([0], fps)), 5)
        tpr, fpr = tps / tps[-1], fps / fps[-1]
        return float(np.trapezoid(tpr, fpr))


# -- sampling error components (from the labelled reference) --------------------------------


def _auroc_components(y_true: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """The Mann-Whitney per-positive spread (NannyML's ``auroc_sampling_error_components``)
    as (variance, share of positives)."""
    y, s = np.asarray(y_true), np.asarray(scores, dtype=np.float64)
    if np.mean(y) > 0.5:
        y, s = np.abs(y - 1), 1 - s
    order = np.argsort(s)
    y = y[order]
    positive_ranks = y * np.arange(len(s))
    idx = np.unique(positive_ranks)[1:]
    ser = idx - np.arange(len(idx))
    n_pos = float(np.sum(y))
    n_neg = len(y) - n_pos
    return float(np.var(ser / n_neg)), n_pos / len(y)


def _class_components(
    metric: str, y_true: np.ndarray, y_pred: np.ndarray, *, f1_correction: bool = True
) -> tuple[float, float]:
    """(variance of the per-row contributions, share of rows that contribute). NannyML
    rescales binary F1's contributions by its denominator, not multiclass ones."""
    right, pos = y_true == y_pred, y_pred == 1
    tp = np.ones(int(np.sum(right & pos)))
    fp = np.zeros(int(np.sum(~right & pos)))
    fn = np.zeros(int(np.sum(~right & ~pos)))
    if metric == "precision":
        obs, share = np.concatenate([tp, fp]), float(np.sum(y_pred)) / len(y_pred)
    elif metric == "recall":
        obs, share = np.concatenate([tp, fn]), float(np.sum(y_true)) / len(y_pred)
    else:  # f1
        obs = np.concatenate([tp, fn, fp])
        if obs.size == 0:
            return math.nan, 0.0
        share = obs.size / len(y_pred)
        if f1_correction:
            obs = obs * (obs.size / ((fn.size + fp.size) * 0.5 + tp.size))
    return float(np.var(obs)), share


def _binary_components(y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = {"roc_auc": _auroc_components(y_true, scores)}
    for m in ("f1", "precision", "recall"):
        out[m] = _class_components(m, y_true, y_pred)
    out["accuracy"] = float(np.std(y_true == y_pred))
    return out


def _binary_sampling_error(metric: str, comp: Any, n: int) -> float:
    if metric == "accuracy":
        return float(comp / np.sqrt(n))
    var, share = comp
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.sqrt(var) / np.sqrt(n * share))


def _multiclass_sampling_error(metric: str, comp: Any, n: int) -> float:
    if metric == "accuracy":
        return float(comp / np.sqrt(n))
    with np.errstate(divide="ignore", invalid="ignore"):
        variances = [v / (n * share) for v, share in comp]
        std = float(np.sqrt(np.sum(variances)) / len(variances))
    # NannyML: the sum of class variances underestimated the AUROC error by 20 % in its experiments
    return std * 1.2 if metric == "roc_auc" else std


# -- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricEstimate:
    """One metric on one slice: the estimate, its band (estimate +- 3 sampling errors,
    within [0, 1]), the reference thresholds, the alert, and the realized value once the
    slice has labels (``None`` before)."""

    metric: str
    value: float
    sampling_error: float
    lower: float
    upper: float
    lower_threshold: float | None
    upper_threshold: float | None
    alert: bool
    realized: float | None = None


@dataclass(frozen=True)
class SliceEstimate:
    key: str
    rows: int
    labelled: int
    start: date | None  # a datetime, or a date for a Date timestamp column
    end: date | None
    period: Literal["reference", "analysis"]
    metrics: dict[str, MetricEstimate]

    @property
    def alerts(self) -> list[str]:
        return [m for m, e in self.metrics.items() if e.alert]

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "rows": self.rows,
            "labelled": self.labelled,
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
            "period": self.period,
            "metrics": {m: _metric_json(e) for m, e in self.metrics.items()},
        }


def _num(v: float | None) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _metric_json(e: MetricEstimate) -> dict[str, Any]:
    return {
        "value": _num(e.value),
        "sampling_error": _num(e.sampling_error),
        "lower": _num(e.lower),
        "upper": _num(e.upper),
        "lower_threshold": _num(e.lower_threshold),
        "upper_threshold": _num(e.upper_threshold),
        "alert": e.alert,
        "realized": _num(e.realized),
    }


@dataclass(frozen=True)
class PerformanceResult:
    """Estimates per slice of the current data (``slices``) and of the reference
    (``reference_slices``: where the thresholds come from; they should not alert)."""

    problem: Problem
    metrics: tuple[str, ...]
    classes: tuple[str, ...]
    slices: list[SliceEstimate]
    reference_slices: list[SliceEstimate]
    thresholds: dict[str, tuple[float | None, float | None]]
    calibrated: dict[str, bool] = field(default_factory=dict)

    @property
    def alerts(self) -> list[tuple[str, str]]:
        """(slice key, metric) for every estimate outside its thresholds."""
        return [(s.key, m) for s in self.slices for m in s.alerts]

    @property
    def mae(self) -> dict[str, float | None]:
        """Mean absolute error of the estimate per metric, over slices with a realized value."""
        out: dict[str, float | None] = {}
        for m in self.metrics:
            errs = [
                abs(s.metrics[m].value - s.metrics[m].realized)  # type: ignore[operator]
                for s in self.slices
                if _num(s.metrics[m].realized) is not None and _num(s.metrics[m].value) is not None
            ]
            out[m] = float(np.mean(errs)) if errs else None
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "problem": self.problem,
            "metrics": list(self.metrics),
            "classes": list(self.classes),
            "thresholds": {m: [_num(lo), _num(hi)] for m, (lo, hi) in self.thresholds.items()},
            "calibrated": self.calibrated,
            "alerts": [{"slice": k, "metric": m} for k, m in self.alerts],
            "mae": self.mae,
            "slices": [s.to_json() for s in self.slices],
            "reference_slices": [s.to_json() for s in self.reference_slices],
        }


# -- chunks ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Chunk:
    key: str
    rows: np.ndarray  # row positions in the frame
    start: date | None  # a datetime, or a date for a Date timestamp column
    end: date | None


def _size_chunks(n: int, size: int, times: pl.Series | None) -> list[_Chunk]:
    """NannyML's SizeBasedChunker with ``incomplete='keep'``: rows in order, the remainder
    a last, smaller chunk."""
    if size < 1:
        raise SchemaError(f"chunk_size: expected a positive row count, got {size}")
    out = []
    for lo in range(0, n, size):
        idx = np.arange(lo, min(lo + size, n))
        t0 = times[int(idx[0])] if times is not None else None
        t1 = times[int(idx[-1])] if times is not None else None
        out.append(_Chunk(f"[{lo}:{idx[-1]}]", idx, t0, t1))
    return out


def _time_chunks(times: pl.Series, slices: int | None, period: str | None) -> list[_Chunk]:
    """Equal time spans over the data's range (``slices``) or calendar periods (``period``,
    a polars duration such as ``1h`` or ``1d``)."""
    if times.null_count():
        raise SchemaError(f"timestamp: column {times.name!r} has {times.null_count()} missing values")
    if period is not None:
        keys = times.dt.truncate(period)
        frame = pl.DataFrame({"k": keys}).with_row_index("i")
        groups = [(k, g["i"].to_numpy()) for (k,), g in frame.group_by("k", maintain_order=True)]
        return [_Chunk(str(k), rows, k, k) for k, rows in sorted(groups, key=lambda kg: kg[0])]
    assert slices is not None
    t0, t1 = times.min(), times.max()
    if not isinstance(t0, date) or not isinstance(t1, date):  # a datetime is a date too
        raise SchemaError(f"timestamp: column {times.name!r} holds {times.dtype}, not datetimes or dates")
    if t1 <= t0:
        return [_Chunk(str(t0), np.arange(times.len()), t0, t1)]
    step = (t1 - t0) / slices
    ids = ((times - t0) / step).cast(pl.Int32).clip(0, slices - 1).to_numpy()
    out = []
    for i in range(slices):
        rows = np.flatnonzero(ids == i)
        if rows.size:
            start = t0 + step * i
            out.append(_Chunk(start.isoformat(), rows, start, start + step))
    return out


# -- the estimator ---------------------------------------------------------------------------


def _label_text(s: pl.Series) -> pl.Series:
    """Class labels as text, ``1``, ``1.0`` and ``"1"`` being one class."""
    if s.dtype == pl.Boolean:
        return s.cast(pl.String).str.to_lowercase()
    as_num = s.cast(pl.Float64, strict=False)
    if s.dtype.is_numeric() or (as_num.null_count() == s.null_count() and s.len() > s.null_count()):
        integral = as_num.drop_nulls()
        if integral.len() == 0 or bool((integral == integral.round(0)).all()):
            return as_num.cast(pl.Int64).cast(pl.String)
        return as_num.cast(pl.String)
    return s.cast(pl.String)


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
        self.positive = None if positive is None else str(_label_text(pl.Series([positive]))[0])
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
        y = _label_text(ref[self.target])
        if self.problem == "binary":
            classes = sorted(set(y.unique().to_list()) | set(_label_text(ref[self.prediction]).unique()))
            if len(classes) > 2:
                raise SchemaError(
                    f"scores: {len(classes)} classes in {self.target!r}; pass scores as a mapping "
                    "class -> probability column for a multiclass model"
                )
            if self.positive is None:
                self.positive = classes[-1]  # as training saves ``score``: the last class's probability
            self.classes = tuple(c for c in classes if c != self.positive) + (self.positive,)
        else:
            self.classes = tuple(sorted(self._score_columns()))
            seen = set(y.unique().to_list())
            if not seen <= set(self.classes):
                raise SchemaError(
                    f"scores: the reference target has classes {sorted(seen - set(self.classes))} "
                    "with no probability column"
                )
        cols = self._score_columns()
        y_bin = {c: (y == c).to_numpy().astype(np.int64) for c in cols}
        if calibration is not None:
            stored = calibration.get("calibrators", {})
            missing = [c for c in cols if c not in stored]
            if missing:
                raise SchemaError(f"calibration: no calibrator for classes {missing}")
            self.calibrators = {c: Calibrator.from_json(stored[c]) for c in cols}
        else:
            self.calibrators = {
                c: fit_calibrator(y_bin[c], ref[col].cast(pl.Float64).to_numpy()) for c, col in cols.items()
            }
        pred = _label_text(ref[self.prediction])
        if self.problem == "binary":
            c = self.positive
            assert c is not None
            self._components = _binary_components(
                y_bin[c], (pred == c).to_numpy().astype(np.int64), ref[cols[c]].cast(pl.Float64).to_numpy()
            )
        else:
            comps: dict[str, Any] = {m: [] for m in ("roc_auc", "f1", "precision", "recall")}
            for c, col in cols.items():
                yb, pb = y_bin[c], (pred == c).to_numpy().astype(np.int64)
                comps["roc_auc"].append(_auroc_components(yb, ref[col].cast(pl.Float64).to_numpy()))
                for m in ("f1", "precision", "recall"):
                    comps[m].append(_class_components(m, yb, pb, f1_correction=False))
            comps["accuracy"] = float(np.std((y == pred).to_numpy()))
            self._components = comps
        self._reference = ref
        return self

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
        return raw, cal, _label_text(df[self.prediction]).to_numpy()

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
                err = _binary_sampling_error(m, self._components[m], n)
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
                err = _multiclass_sampling_error(m, self._components[m], n)
            out[m] = (value, err)
        return out

    def _realized(self, y: np.ndarray, pred: np.ndarray, raw: dict[str, np.ndarray]) -> dict[str, float]:
        """Realized metrics on labelled rows (NaN where undefined: one class only)."""
        from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

        out: dict[str, float] = {}
        if len(y) == 0:
            return out
        one_class = len(np.unique(y)) <= 1
        one_pred = len(np.unique(pred)) <= 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zero division on tiny slices: NaN/0 is the answer
            for m in self.metrics:
                if m == "accuracy":
                    out[m] = float(accuracy_score(y, pred))
                elif self.problem == "binary":
                    c = self.positive
                    yb, pb = (y == c).astype(int), (pred == c).astype(int)
                    if m == "roc_auc":
                        out[m] = math.nan if one_class else float(roc_auc_score(yb, raw[c]))  # type: ignore[index]
                    elif one_class or one_pred:
                        out[m] = math.nan
                    else:
                        fn = {"f1": f1_score, "precision": precision_score, "recall": recall_score}[m]
                        out[m] = float(fn(yb, pb))
                else:
                    labels = list(self.classes)
                    if m == "roc_auc":
                        if set(np.unique(y)) != set(labels):
                            out[m] = math.nan
                            continue
                        proba = np.column_stack([raw[c] for c in labels])
                        out[m] = float(
                            roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=labels)
                        )
                    elif one_class or one_pred:
                        out[m] = math.nan
                    else:
                        fn = {"f1": f1_score, "precision": precision_score, "recall": recall_score}[m]
                        out[m] = float(fn(y, pred, average="macro", labels=labels))
        return out

    def _slices(
        self,
        df: pl.DataFrame,
        chunks: list[_Chunk],
        period: Literal["reference", "analysis"],
        thresholds: Mapping[str, tuple[float | None, float | None]],
    ) -> list[SliceEstimate]:
        cols = list(self._score_columns().values())
        ok = df.select(pl.all_horizontal([pl.col(c).is_not_null() for c in [*cols, self.prediction]]))
        usable = ok.to_series().to_numpy()
        raw, cal, pred = self._prepare(df)
        has_y = self.target in df.columns
        y = _label_text(df[self.target]).to_numpy() if has_y else None
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
                realized = self._realized(
                    yr[mask].astype(str), pred[rows][mask].astype(str), {c: v[mask] for c, v in r.items()}
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
                    _num(realized.get(m)),
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
            chunks = _size_chunks(cur.height, chunk_size, times)
        else:
            if times is None:
                raise SchemaError("timestamp: chunk_period and slices need the name of a timestamp column")
            chunks = _time_chunks(times, slices, chunk_period)
        ref_size = reference_chunk_size or chunk_size
        if ref_size is None:
            ref_size = max(1, round(cur.height / max(len(chunks), 1)))
        ref = self._reference
        ref_chunks = _size_chunks(ref.height, min(ref_size, ref.height), None)
        no_thresholds: dict[str, tuple[float | None, float | None]] = {}
        ref_slices = self._slices(ref, ref_chunks, "reference", no_thresholds)
        thresholds = {m: _thresholds([s.metrics[m].realized for s in ref_slices]) for m in self.metrics}
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


def _thresholds(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean +- 3 std of the reference chunks' realized values, within [0, 1] (NannyML's
    StandardDeviationThreshold with the metric's value limits)."""
    v = np.array([np.nan if x is None else x for x in values], dtype=np.float64)
    if np.all(np.isnan(v)):
        return None, None
    mean, std = float(np.nanmean(v)), float(np.nanstd(v))
    return max(0.0, mean - STD_MULTIPLIER * std), min(1.0, mean + STD_MULTIPLIER * std)


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
