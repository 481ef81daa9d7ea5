"""Estimated quality in the drift flow: a window whose inputs do not drift but whose
model is much less sure in its last slices alerts ("Quality drop estimated") before any
label; once labels land, a re-run shows realized quality and the estimation error, in
the report, the index and the warehouse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import duckdb
import orjson
import polars as pl

from flows.drift import QUALITY_STATE_NAME, drift_flow

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
