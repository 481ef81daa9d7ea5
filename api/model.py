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

_TYPES: dict[str, Any] = {
    "number": float,
    "integer": StrictInt,
    "boolean": StrictBool,
    "category": StrictStr,
}


def features_model(meta: ModelMetadata) -> type[BaseModel]:
    """A strict pydantic model of exactly the model's features: missing, extra or
    mistyped → 422. Strict mode: "1.5" is not a number and true is not a number; NaN,
    Infinity (and 1e999, which parses to inf) are refused."""
    fields: dict[str, Any] = {f.name: (_TYPES[f.type], _field_for(f)) for f in meta.features}
    return create_model(  # type: ignore[call-overload,no-any-return]
        f"Features_{meta.name.replace('-', '_')}_v{meta.version}",
        __config__=ConfigDict(extra="forbid", strict=True),
        **fields,
    )


def _describe(f: FeatureSpec) -> str:
    if f.type == "category" and f.categories:
        return f"category; seen in training: {', '.join(f.categories)}"
    return f.type


def _field_for(f: FeatureSpec) -> Any:
    if f.type == "number":
        return Field(allow_inf_nan=False, description=_describe(f))
    if f.type == "category":
        return Field(min_length=1, max_length=256, description=_describe(f))
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
        if self._fast is not None:
            proba = self._fast(features)
            best = int(proba.argmax())
            scores = {k: float(p) for k, p in zip(self._class_keys, proba, strict=True)}
            return Inference(self.classes[best], scores, (time.perf_counter() - start) * 1000.0)
        frame = pd.DataFrame([[features[c] for c in self.columns]], columns=self.columns)
        if self.classes:
            proba = self.estimator.predict_proba(frame)[0]
            best = int(proba.argmax())
            prediction = self.classes[best]
            scores = {k: float(p) for k, p in zip(self._class_keys, proba, strict=True)}
        else:
            value = self.estimator.predict(frame)[0]
            prediction, scores = float(value), None
        return Inference(prediction, scores, (time.perf_counter() - start) * 1000.0)
