"""Estimated quality in the drift flow: a window whose inputs do not drift but whose
model is much less sure in its last slices alerts ("Quality drop estimated") before any
label; once labels land, a re-run shows realized quality and the estimation error, in
the report, the index and the warehouse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import duckdb
import joblib
import numpy as np
import orjson
import polars as pl
import pytest

from common import artifact
from common.artifact import FeatureSpec
from flows import artifacts
from flows.drift import QUALITY_STATE_NAME, drift_flow
from inferstream.train import train_classifier
from monitoring import estimate_performance

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
WINDOW = {"start": T0.isoformat(), "end": (T0 + timedelta(hours=1)).isoformat()}


def _unsure_tail(rows: pl.DataFrame, share: float) -> pl.DataFrame:
    """The last ``share`` of rows keep their predicted class but with a score near 0.5."""
    tail = pl.int_range(pl.len()) >= int(rows.height * (1 - share))
    unsure = pl.when(pl.col("score") >= 0.5).then(0.7).otherwise(0.3)
    return rows.with_columns(pl.when(tail).then(unsure).otherwise(pl.col("score")).alias("score"))


def _summary(data_dir, model) -> dict:
    runs = sorted((data_dir / "reports" / model).glob("*/summary.json"))
    return orjson.loads(runs[-1].read_bytes())


def test_quality_drop_alerts_without_input_drift_then_realized_lands(
    prefect_harness, model_lake, write_lake, feedback_writer
):
    m = model_lake
    rows = _unsure_tail(m.predict(m.reference), share=1 / 12)  # the last of 12 slices
    ids = write_lake(m.data_dir / "lake", m.name, m.version, rows, m.features)
    state = drift_flow(model_name=m.name, data_dir=str(m.data_dir), return_state=True, **WINDOW)
    summary = _summary(m.data_dir, m.name)
    assert summary["verdict"]["drift"] is False, summary["verdict"]
    assert not summary["verdict"]["drifted_features"]
    # a finding like drift (flows.outcome): Completed, under its own name and outcome
    assert state.is_completed() and state.name == QUALITY_STATE_NAME, state
    assert summary["outcome"] == "quality_drop"
    perf = summary["performance"]
    assert perf["available"] and perf["alert"] and "accuracy" in perf["alert_metrics"]
    alerted = [s for s in perf["slices"] if s["metrics"]["accuracy"]["alert"]]
    assert [s["start"] for s in alerted] == [perf["slices"][-1]["start"]]
    assert all(s["labelled"] == 0 and s["metrics"]["accuracy"]["realized"] is None for s in perf["slices"])
    assert "estimated quality drop" in summary["verdict"]["reason"]
    index = (m.data_dir / "reports" / "index.html").read_text()
    assert "QUALITY DROP" in index
    report = (sorted((m.data_dir / "reports" / m.name).glob("*/report.html"))[-1]).read_text()
    assert "inferstream-performance" in report and "data-metric='accuracy'" in report

    # labels land (the model was right on every row): a re-run of the window shows them
    truth = rows.select(pl.col("prediction").cast(pl.String).alias("label"))
    truth = truth.with_columns(pl.Series("event_id", ids))
    feedback_writer(m.data_dir / "lake", truth)  # the lake's feedback Delta table
    drift_flow(model_name=m.name, data_dir=str(m.data_dir), return_state=True, **WINDOW)
    perf = _summary(m.data_dir, m.name)["performance"]
    assert sum(s["labelled"] for s in perf["slices"]) == rows.height
    assert all(s["metrics"]["accuracy"]["realized"] == 1.0 for s in perf["slices"])
    assert perf["mae"]["accuracy"] > 0  # the unsure tail was estimated worse than it was
    con = duckdb.connect(str(m.data_dir / "warehouse.duckdb"), read_only=True)
    got = con.execute(
        "SELECT count(*), count(realized), bool_or(alert) FROM bi.model_quality_estimates "
        "WHERE metric = 'accuracy'"
    ).fetchone()
    con.close()
    assert got == (len(perf["slices"]), len(perf["slices"]), True)  # the re-run replaced its rows


def _artifact_rows(model: str, version: str) -> list[dict]:
    from prefect.artifacts import Artifact

    art = Artifact.get(artifacts.key(model, version, "quality"))
    assert art is not None, "no quality artifact"
    return orjson.loads(art.data) if isinstance(art.data, str) else art.data


def test_quality_artifact_tables_estimate_then_realized(
    prefect_harness, model_lake, write_lake, feedback_writer
):
    m = model_lake
    rows = _unsure_tail(m.predict(m.reference), share=1 / 12)
    ids = write_lake(m.data_dir / "lake", m.name, m.version, rows, m.features)
    drift_flow(model_name=m.name, data_dir=str(m.data_dir), return_state=True, **WINDOW)
    perf = _summary(m.data_dir, m.name)["performance"]
    table = _artifact_rows(m.name, m.version)
    assert len(table) == len(perf["slices"]) == 12
    for row, s in zip(table, perf["slices"], strict=True):
        assert row["slice"] == f"{s['start']} – {s['end']}"
        assert (row["rows"], row["labelled"]) == (s["rows"], 0)
        assert row["accuracy estimated"] == round(s["metrics"]["accuracy"]["value"], 4)
        assert row["accuracy realized"] is None
    # the run's alerts (ROC AUC, accuracy) in the last slice only; F1/precision/recall apart
    assert table[-1]["alerts"] == "roc_auc, accuracy"
    assert all(r["alerts"] == "none" for r in table[:-1])
    others = {"none", "f1", "precision", "recall"}
    assert all(set(r["others outside thresholds"].split(", ")) <= others for r in table)

    truth = rows.select(pl.col("prediction").cast(pl.String).alias("label")).with_columns(
        pl.Series("event_id", ids)
    )
    feedback_writer(m.data_dir / "lake", truth)
    drift_flow(model_name=m.name, data_dir=str(m.data_dir), return_state=True, **WINDOW)
    table = _artifact_rows(m.name, m.version)  # the same key: the latest run's table
    assert [r["labelled"] for r in table] == [s["rows"] for s in perf["slices"]]
    assert all(r["accuracy realized"] == 1.0 for r in table)


def _three_class_model(models_dir):
    """A logistic regression on three well separated classes, trained as the service
    trains (out-of-fold scores per class and CBPE's calibrators in the artifact)."""
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=1200,
        n_features=5,
        n_informative=4,
        n_redundant=0,
        n_classes=3,
        n_clusters_per_class=1,
        class_sep=1.5,
        random_state=3,
    )
    df = pl.DataFrame({f"x{i}": x[:, i] for i in range(5)}).with_columns(pl.Series("target", y))
    features = [FeatureSpec(f"x{i}", "number") for i in range(5)]
    art = train_classifier(df, features=features, target="target", name="three-class", models_dir=models_dir)
    return art, df, [f.name for f in features]


def test_multiclass_model_is_estimated_from_every_class_score(prefect_harness, write_lake, tmp_path):
    art, df, features = _three_class_model(tmp_path / "models")
    est = joblib.load(art / "model.joblib")
    proba = est.predict_proba(df.select(features).to_pandas())
    classes = [str(c) for c in est.classes_]
    best = proba.argmax(axis=1)
    # the last twelfth: same predicted class, but the model is unsure (0.4 against 0.3, 0.3)
    tail = np.arange(len(proba)) >= len(proba) * 11 // 12
    unsure = np.full_like(proba, 0.3)
    unsure[np.arange(len(proba)), best] = 0.4
    proba = np.where(tail[:, None], unsure, proba)
    rows = df.select(features).with_columns(
        pl.Series("prediction", [classes[i] for i in best]),
        pl.Series("score", proba[:, -1]),
        *[pl.Series(f"score:{c}", proba[:, i]) for i, c in enumerate(classes)],
    )
    write_lake(tmp_path / "lake", "three-class", art.name, rows, features)
    state = drift_flow(model_name="three-class", data_dir=str(tmp_path), return_state=True, **WINDOW)
    assert state.is_completed(), state
    perf = _summary(tmp_path, "three-class")["performance"]
    assert perf["available"], perf
    assert (perf["problem"], perf["classes"]) == ("multiclass", classes)

    # the same estimate as the library's on every class's score, row times as written
    step = timedelta(minutes=59) / rows.height
    times = pl.Series("event_time", [T0 + step * i for i in range(rows.height)]).dt.cast_time_unit("us")
    ref = pl.read_parquet(art / "reference.parquet")
    calibration = artifact.read_calibration(art)
    ref = ref.select(
        pl.col("target").cast(pl.String).alias("label"),
        pl.col("cbpe_prediction").cast(pl.String).alias("prediction"),
        *[pl.col(f"cbpe_score_{c}").alias(f"score:{c}") for c in classes],
    )
    expected = estimate_performance(
        ref,
        rows.with_columns(times),
        target="label",
        prediction="prediction",
        scores={c: f"score:{c}" for c in classes},
        calibration=calibration,
        slices=12,
        timestamp="event_time",
    )
    assert len(perf["slices"]) == len(expected.slices) == 12
    for got, want in zip(perf["slices"], expected.slices, strict=True):
        assert got["rows"] == want.rows
        for metric in ("roc_auc", "accuracy"):
            assert got["metrics"][metric]["value"] == pytest.approx(want.metrics[metric].value, abs=1e-9)
    # unsure in the last slice only: its estimated accuracy falls near 0.4 and alerts
    acc = [s["metrics"]["accuracy"]["value"] for s in perf["slices"]]
    assert acc[-1] < 0.5 < min(acc[:-1])
    assert perf["slices"][-1]["metrics"]["accuracy"]["alert"] and "accuracy" in perf["alert_metrics"]
    table = _artifact_rows("three-class", art.name)
    assert table[-1]["accuracy estimated"] == round(acc[-1], 4) and "accuracy" in table[-1]["alerts"]
