"""The served model: its feature schema as a strict request model, and inference."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, create_model

from api.fastpath import compile_linear
from common.artifact import FeatureSpec, ModelMetadata
from common.errors import NonFiniteOutput
from common.events import TEXT_PATTERN

_TYPES: dict[str, Any] = {
    "number": float,
    "integer": StrictInt,
    "boolean": StrictBool,
    "category": StrictStr,
}


def features_model(meta: ModelMetadata, max_abs: float = 1e12) -> type[BaseModel]:
    """A strict pydantic model of exactly the model's features: missing, extra or
    mistyped → 422. Strict mode: "1.5" is not a number and true is not a number; NaN,
    Infinity (and 1e999, which parses to inf) are refused, and so are numbers beyond
    ``max_abs``: finite but huge inputs overflow the model's arithmetic to NaN.
    Category strings follow the event contract's :data:`common.events.Text` rule."""
    fields: dict[str, Any] = {f.name: (_TYPES[f.type], _field_for(f, max_abs)) for f in meta.features}
    return create_model(
        f"Features_{meta.name.replace('-', '_')}_v{meta.version}",
        __config__=ConfigDict(extra="forbid", strict=True),
        **fields,
    )


def _describe(f: FeatureSpec) -> str:
    if f.type == "category" and f.categories:
        return f"category; seen in training: {', '.join(f.categories)}"
    return f.type


def _field_for(f: FeatureSpec, max_abs: float) -> Any:
    if f.type == "number":
        return Field(allow_inf_nan=False, ge=-max_abs, le=max_abs, description=_describe(f))
    if f.type == "integer":
        return Field(ge=-int(max_abs), le=int(max_abs), description=_describe(f))
    if f.type == "category":
        # the event contract's strings: no NUL or other C0 control (a sink cannot store NUL)
        return Field(min_length=1, max_length=256, pattern=TEXT_PATTERN, description=_describe(f))
    return Field(description=_describe(f))


@dataclass
class Inference:
    prediction: float | int | str | None
    scores: dict[str, float] | None
    latency_ms: float


class ServedModel:
    """A loaded artifact. ``predict`` takes features already validated by ``features_model``."""

    def __init__(self, meta: ModelMetadata, estimator: Any, *, fast: bool = True) -> None:
        """``fast``: use the numpy path of :mod:`api.fastpath` when the estimator has the
        supported shape (``self.fast`` says whether it is in use)."""
        self.meta = meta
        self.estimator = estimator
        self._fast = compile_linear(estimator) if fast else None
        self.columns = [f.name for f in meta.features]
        self.classes = [
            c.item() if isinstance(c, np.generic) else c for c in getattr(estimator, "classes_", [])
        ]
        self._class_keys = [str(c) for c in self.classes]

    @property
    def fast(self) -> bool:
        return self._fast is not None

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def version(self) -> str:
        return self.meta.version

    def predict(self, features: dict[str, Any]) -> Inference:
        start = time.perf_counter()
        scores: dict[str, float] | None
        if self._fast is not None:
            proba = self._fast(features)
            _check_finite(proba)
            best = int(proba.argmax())
            scores = {k: float(p) for k, p in zip(self._class_keys, proba, strict=True)}
            return Inference(self.classes[best], scores, (time.perf_counter() - start) * 1000.0)
        frame = pd.DataFrame([[features[c] for c in self.columns]], columns=self.columns)
        if self.classes:
            proba = self.estimator.predict_proba(frame)[0]
            _check_finite(proba)
            best = int(proba.argmax())
            prediction = self.classes[best]
            scores = {k: float(p) for k, p in zip(self._class_keys, proba, strict=True)}
        else:
            value = self.estimator.predict(frame)[0]
            _check_finite(np.asarray([value], dtype=np.float64))
            prediction, scores = float(value), None
        return Inference(prediction, scores, (time.perf_counter() - start) * 1000.0)


def _check_finite(values: np.ndarray) -> None:
    if not np.isfinite(values).all():
        raise NonFiniteOutput("the model's output is not finite: some feature values are out of its range")
