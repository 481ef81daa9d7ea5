"""Training: fit a scikit-learn pipeline from a feature schema and save a versioned
artifact (model, feature schema, training reference, and CBPE's calibrators fitted on
that reference, so the drift flow can estimate quality before labels arrive).

CBPE needs a reference scored by a model that did not see it: the reference also
carries out-of-fold predictions (``cbpe_prediction``, ``cbpe_score``; 5 folds), and the
calibrators and alert thresholds come from those, not from the served model's
in-sample scores, which are more confident than anything it will see in traffic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import cross_val_predict, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from common import artifact
from common.artifact import FeatureSpec, ModelMetadata
from monitoring.cbpe import CBPE

CBPE_PREDICTION = "cbpe_prediction"
CBPE_SCORE = "cbpe_score"


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
    oof = cross_val_predict(build_pipeline(features), X, y, cv=5, method="predict_proba")
    reference = reference.with_columns(
        pl.Series(CBPE_PREDICTION, pipe.classes_[oof.argmax(axis=1)]), pl.Series(CBPE_SCORE, oof[:, -1])
    )
    if len(classes) > 2:  # CBPE needs every class's probability
        reference = reference.with_columns(
            pl.Series(f"{CBPE_SCORE}_{c}", oof[:, i]) for i, c in enumerate(classes)
        )
    positive = classes[-1] if len(classes) == 2 else None
    calibration = CBPE(
        target=target, prediction=CBPE_PREDICTION, scores=score_columns(classes), positive=positive
    ).fit(reference)
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
    return artifact.save(models_dir, meta, pipe, reference, calibration.calibration_json())


def score_columns(classes: list[object]) -> str | dict[str, str]:
    """The reference's out-of-fold probability columns as CBPE takes them: the last
    class's for a binary model, one per class for a multiclass one."""
    if len(classes) > 2:
        return {str(c): f"{CBPE_SCORE}_{c}" for c in classes}
    return CBPE_SCORE
