"""A numpy fast path for the pipeline ``inferstream.train`` builds.

scikit-learn's single-row ``predict_proba`` on that pipeline costs ~300 us to ~3 ms
here, nearly all of it input validation and DataFrame handling; the arithmetic is a
few microseconds. ``compile_linear`` reads the fitted parameters of exactly this shape

    Pipeline([ColumnTransformer([StandardScaler on numbers,
                                 OneHotEncoder(handle_unknown="ignore") on categories]),
              LogisticRegression])

and returns a function that does the same arithmetic on one row of features. For any
other shape (another estimator, options it does not model) it returns None and the
caller keeps using scikit-learn. tests/api/test_api_fastpath.py checks the outputs
against scikit-learn's: the same label and probabilities within 1e-12.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import expit, softmax

FastProba = Callable[[dict[str, Any]], np.ndarray]
NumSlot = tuple[str, float, float, int]  # feature, mean, scale, output slot
CatSlots = tuple[str, dict[Any, int]]  # feature, {category: output slot}


@dataclass
class _Layout:
    """Where each feature lands in the transformed row."""

    nums: list[NumSlot] = field(default_factory=list)
    cats: list[CatSlots] = field(default_factory=list)
    width: int = 0


def compile_linear(estimator: Any) -> FastProba | None:
    """A one-row ``predict_proba`` equivalent to ``estimator``'s, or None if the
    estimator is not the supported shape."""
    parts = _pipeline_parts(estimator)
    if parts is None:
        return None
    pre, clf = parts
    layout = _layout(pre)
    if layout is None or layout.width != clf.coef_.shape[1]:
        return None
    return _predictor(layout, clf)


def _pipeline_parts(estimator: Any) -> tuple[Any, Any] | None:
    """(the ColumnTransformer, the LogisticRegression) of a supported pipeline."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    if not isinstance(estimator, Pipeline) or len(estimator.steps) != 2:
        return None
    pre, clf = estimator.steps[0][1], estimator.steps[1][1]
    if type(pre) is not ColumnTransformer or type(clf) is not LogisticRegression:
        return None
    if getattr(clf, "multi_class", "auto") not in ("auto", "multinomial", "deprecated"):
        return None
    return pre, clf


def _layout(pre: Any) -> _Layout | None:
    """The output slots of the transformer's columns, or None for a step it does not model."""
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    layout = _Layout()
    for name, step, cols in pre.transformers_:
        if name == "remainder":
            if step != "drop":
                return None
            continue
        if not isinstance(cols, list) or not all(isinstance(c, str) for c in cols):
            return None
        if type(step) is StandardScaler:
            _add_scaled(layout, step, cols)
        elif type(step) is OneHotEncoder and _plain_one_hot(step):
            _add_one_hot(layout, step, cols)
        else:
            return None
    return layout


def _add_scaled(layout: _Layout, step: Any, cols: list[str]) -> None:
    mean = step.mean_ if step.with_mean else np.zeros(len(cols))
    scale = step.scale_ if step.with_std else np.ones(len(cols))
    for i, c in enumerate(cols):
        layout.nums.append((c, float(mean[i]), float(scale[i]), layout.width + i))
    layout.width += len(cols)


def _plain_one_hot(step: Any) -> bool:
    """handle_unknown="ignore", no dropped column, no infrequent categories, dense."""
    return not (
        step.handle_unknown != "ignore"
        or step.drop_idx_ is not None
        or getattr(step, "_infrequent_enabled", False)
        or getattr(step, "sparse_output", False)
    )


def _add_one_hot(layout: _Layout, step: Any, cols: list[str]) -> None:
    for c, categories in zip(cols, step.categories_, strict=True):
        layout.cats.append((c, {v: layout.width + j for j, v in enumerate(categories.tolist())}))
        layout.width += len(categories)


def _predictor(layout: _Layout, clf: Any) -> FastProba:
    nums, cats, width = layout.nums, layout.cats, layout.width
    num_idx = np.array([slot for *_, slot in nums], dtype=np.intp)
    num_names = [c for c, *_ in nums]
    means = np.array([m for _, m, _, _ in nums])
    scales = np.array([s for _, _, s, _ in nums])
    coef_t = np.ascontiguousarray(clf.coef_.T)
    intercept = clf.intercept_.copy()
    binary = len(clf.classes_) <= 2

    def predict_proba(features: dict[str, Any]) -> np.ndarray:
        x = np.zeros(width)
        # the same operations, in the same order, as StandardScaler.transform
        v = np.array([features[c] for c in num_names], dtype=np.float64)
        v -= means
        v /= scales
        x[num_idx] = v
        for c, index in cats:
            j = index.get(features[c])
            if j is not None:  # handle_unknown="ignore": an unseen category is all zeros
                x[j] = 1.0
        scores = x @ coef_t + intercept
        if binary:
            p = expit(scores[0])
            return np.array([1.0 - p, p])
        proba: np.ndarray = softmax(scores)  # scipy is untyped: softmax returns Any to mypy
        return proba

    return predict_proba
