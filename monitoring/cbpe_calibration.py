"""CBPE's calibration (``monitoring.cbpe``, step 1): per class an isotonic regression from
the model's score to a probability, kept only when it lowers the expected calibration
error, as NannyML decides it; stored as breakpoints so estimating needs numpy alone."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from monitoring.errors import MonitoringError

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
