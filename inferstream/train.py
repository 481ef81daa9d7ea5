"""Training: fit a scikit-learn pipeline from a feature schema and save a versioned
artifact (model, feature schema, training reference)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from common import artifact
from common.artifact import FeatureSpec, ModelMetadata


def _with_categories(df: pl.DataFrame, features: list[FeatureSpec]) -> list[FeatureSpec]:
    out = []
    for f in features:
        if f.type == "category":
            cats = sorted(str(v) for v in df[f.name].drop_nulls().unique().to_list())
            out.append(FeatureSpec(f.name, f.type, tuple(cats)))
        else:
            out.append(f)
    return out


def build_pipeline(features: list[FeatureSpec]) -> Pipeline:
    numeric = [f.name for f in features if f.type in ("number", "integer", "boolean")]
    categorical = [f.name for f in features if f.type == "category"]
    pre = ColumnTransformer(
        [
            ("num", StandardScaler(), numeric),
            ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical),
        ]
    )
    return Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=1000))])


def train_classifier(
    df: pl.DataFrame,
    *,
    features: list[FeatureSpec],
    target: str,
    name: str,
    models_dir: Path,
    version: str | None = None,
    training_data: str = "",
    seed: int = 0,
) -> Path:
    """Fit, evaluate on a held-out 20 %, save; returns the artifact directory."""
    features = _with_categories(df, features)
    cols = [f.name for f in features]
    X = df.select(cols).to_pandas()
    y = df[target].to_numpy()
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.2, random_state=seed, stratify=y)
    pipe = build_pipeline(features).fit(X_tr, y_tr)
    proba_te = pipe.predict_proba(X_te)
    metrics = {"accuracy": float(accuracy_score(y_te, pipe.predict(X_te)))}
    if proba_te.shape[1] == 2:
        metrics["roc_auc"] = float(roc_auc_score(y_te, proba_te[:, 1]))
    pipe.fit(X, y)  # the served model sees all reference rows
    proba = pipe.predict_proba(X)
    classes = [c.item() if isinstance(c, np.generic) else c for c in pipe.classes_]
    reference = df.select([*cols, target]).with_columns(
        pl.Series("prediction", pipe.classes_[proba.argmax(axis=1)]),
        pl.Series("score", proba[:, -1]),
    )
    meta = ModelMetadata(
        name=name,
        version=version or artifact.next_version(models_dir, name),
        target=target,
        task="classification",
        features=features,
        classes=classes,
        metrics=metrics,
        training_data=training_data,
    )
    return artifact.save(models_dir, meta, pipe, reference)
