"""CBPE's numbers (``monitoring.cbpe``, steps 2 and 3): metrics expected from calibrated
probabilities, and the sampling-error components taken from the labelled reference."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from monitoring.errors import SchemaError

METRICS: tuple[str, ...] = ("roc_auc", "accuracy", "f1", "precision", "recall")
SAMPLING_ERROR_RANGE = 3  # NannyML's band: estimate +- 3 sampling errors
STD_MULTIPLIER = 3  # NannyML's StandardDeviationThreshold default
Problem = Literal["binary", "multiclass"]


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


def auroc_components(y_true: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
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


def class_components(
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


def binary_components(y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = {"roc_auc": auroc_components(y_true, scores)}
    for m in ("f1", "precision", "recall"):
        out[m] = class_components(m, y_true, y_pred)
    out["accuracy"] = float(np.std(y_true == y_pred))
    return out


def binary_sampling_error(metric: str, comp: Any, n: int) -> float:
    if metric == "accuracy":
        return float(comp / np.sqrt(n))
    var, share = comp
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.sqrt(var) / np.sqrt(n * share))


def multiclass_sampling_error(metric: str, comp: Any, n: int) -> float:
    if metric == "accuracy":
        return float(comp / np.sqrt(n))
    with np.errstate(divide="ignore", invalid="ignore"):
        variances = [v / (n * share) for v, share in comp]
        std = float(np.sqrt(np.sum(variances)) / len(variances))
    # NannyML: the sum of class variances underestimated the AUROC error by 20 % in its experiments
    return std * 1.2 if metric == "roc_auc" else std


def alert_thresholds(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean +- 3 std of the reference chunks' realized values, within [0, 1] (NannyML's
    StandardDeviationThreshold with the metric's value limits)."""
    v = np.array([np.nan if x is None else x for x in values], dtype=np.float64)
    if np.all(np.isnan(v)):
        return None, None
    mean, std = float(np.nanmean(v)), float(np.nanstd(v))
    return max(0.0, mean - STD_MULTIPLIER * std), min(1.0, mean + STD_MULTIPLIER * std)


def realized_metrics(
    metrics: Sequence[str],
    problem: Problem,
    classes: Sequence[str],
    positive: str | None,
    y: np.ndarray,
    pred: np.ndarray,
    raw: dict[str, np.ndarray],
) -> dict[str, float]:
    """Realized metrics on labelled rows (NaN where undefined: one class only)."""
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

    out: dict[str, float] = {}
    if len(y) == 0:
        return out
    one_class = len(np.unique(y)) <= 1
    one_pred = len(np.unique(pred)) <= 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zero division on tiny slices: NaN/0 is the answer
        for m in metrics:
            if m == "accuracy":
                out[m] = float(accuracy_score(y, pred))
            elif problem == "binary":
                c = positive
                yb, pb = (y == c).astype(int), (pred == c).astype(int)
                if m == "roc_auc":
                    out[m] = math.nan if one_class else float(roc_auc_score(yb, raw[c]))  # type: ignore[index]
                elif one_class or one_pred:
                    out[m] = math.nan
                else:
                    fn = {"f1": f1_score, "precision": precision_score, "recall": recall_score}[m]
                    out[m] = float(fn(yb, pb))
            else:
                labels = list(classes)
                if m == "roc_auc":
                    if set(np.unique(y)) != set(labels):
                        out[m] = math.nan
                        continue
                    proba = np.column_stack([raw[c] for c in labels])
                    out[m] = float(roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=labels))
                elif one_class or one_pred:
                    out[m] = math.nan
                else:
                    fn = {"f1": f1_score, "precision": precision_score, "recall": recall_score}[m]
                    out[m] = float(fn(y, pred, average="macro", labels=labels))
    return out
