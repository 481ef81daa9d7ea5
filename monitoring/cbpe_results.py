"""What CBPE returns (``monitoring.cbpe``): per metric and slice the estimate, its band,
thresholds, alert and realized value, and the whole result with its JSON form."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

import numpy as np

from monitoring.cbpe_metrics import Problem

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


def finite(v: float | None) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _metric_json(e: MetricEstimate) -> dict[str, Any]:
    return {
        "value": finite(e.value),
        "sampling_error": finite(e.sampling_error),
        "lower": finite(e.lower),
        "upper": finite(e.upper),
        "lower_threshold": finite(e.lower_threshold),
        "upper_threshold": finite(e.upper_threshold),
        "alert": e.alert,
        "realized": finite(e.realized),
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
                if finite(s.metrics[m].realized) is not None and finite(s.metrics[m].value) is not None
            ]
            out[m] = float(np.mean(errs)) if errs else None
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "problem": self.problem,
            "metrics": list(self.metrics),
            "classes": list(self.classes),
            "thresholds": {m: [finite(lo), finite(hi)] for m, (lo, hi) in self.thresholds.items()},
            "calibrated": self.calibrated,
            "alerts": [{"slice": k, "metric": m} for k, m in self.alerts],
            "mae": self.mae,
            "slices": [s.to_json() for s in self.slices],
            "reference_slices": [s.to_json() for s in self.reference_slices],
        }
