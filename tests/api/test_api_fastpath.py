"""The numpy fast path gives scikit-learn's answers, and anything else falls back."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline

from api.fastpath import compile_linear
from api.model import ServedModel
from common import artifact
from common.artifact import FeatureSpec
from inferstream.train import build_pipeline

TOLERANCE = 1e-12  # absolute, on each probability


def _rows_with_unknowns(rows: list[dict], rng: np.random.Generator) -> list[dict]:
    out = []
    for i, row in enumerate(rows):
        r = dict(row)
        if i % 3 == 0:
            r["size_band"] = "never-seen"  # handle_unknown="ignore"
        r["mean_radius"] = float(r["mean_radius"] * rng.uniform(0.5, 2.0))
        out.append(r)
    return out


def _compare(estimator, columns: list[str], rows: list[dict]) -> None:
    fast = compile_linear(estimator)
    assert fast is not None
    frame = pd.DataFrame([[r[c] for c in columns] for r in rows], columns=columns)
    expected = estimator.predict_proba(frame)
    labels = estimator.predict(frame)
    got = np.array([fast(r) for r in rows])
    assert got.shape == expected.shape
    worst = float(np.abs(got - expected).max())
    assert worst <= TOLERANCE, worst
    assert (estimator.classes_[got.argmax(axis=1)] == labels).all()


def test_binary_pipeline_matches_sklearn_on_every_row(trained_model):
    meta, estimator = artifact.load(
        trained_model.data_dir / "models", trained_model.name, trained_model.version
    )
    columns = [f.name for f in meta.features]
    rows = trained_model.rows + _rows_with_unknowns(trained_model.rows, np.random.default_rng(0))
    assert len(rows) > 1000
    _compare(estimator, columns, rows)
    served = ServedModel(meta, estimator)
    assert served.fast
    slow = ServedModel(meta, estimator, fast=False)
    for r in rows[:50]:
        a, b = served.predict(r), slow.predict(r)
        assert a.prediction == b.prediction
        assert a.scores is not None and b.scores is not None
        assert max(abs(a.scores[k] - b.scores[k]) for k in a.scores) <= TOLERANCE


def test_multiclass_pipeline_matches_sklearn():
    iris = load_iris(as_frame=True).frame
    iris.columns = ["sl", "sw", "pl", "pw", "target"]
    iris["band"] = np.where(iris["sl"] > 5.8, "long", "short")
    iris["wide"] = iris["sw"] > 3.0
    features = [FeatureSpec(c, "number") for c in ("sl", "sw", "pl", "pw")]
    features += [FeatureSpec("band", "category", ("long", "short")), FeatureSpec("wide", "boolean")]
    columns = [f.name for f in features]
    pipe = build_pipeline(features).fit(iris[columns], iris["target"])
    rows = pl.from_pandas(iris[columns]).to_dicts()
    rows += [{**r, "band": "unknown"} for r in rows]
    _compare(pipe, columns, rows)


def test_other_estimators_fall_back_to_sklearn(trained_model):
    meta, estimator = artifact.load(
        trained_model.data_dir / "models", trained_model.name, trained_model.version
    )
    forest = Pipeline([("pre", estimator.steps[0][1]), ("clf", RandomForestClassifier(n_estimators=5))])
    columns = [f.name for f in meta.features]
    frame = pd.DataFrame([[r[c] for c in columns] for r in trained_model.rows], columns=columns)
    forest.fit(frame, [i % 2 for i in range(len(frame))])
    assert compile_linear(forest) is None
    served = ServedModel(meta, forest)
    assert not served.fast
    out = served.predict(trained_model.rows[0])
    expected = forest.predict_proba(frame.iloc[:1])[0]
    assert out.scores == pytest.approx(
        {str(c): p for c, p in zip(forest.classes_, expected, strict=True)}, abs=0
    )
