"""A drift run's estimated model quality: CBPE (``monitoring.cbpe``) per time slice of
the window, from the calibration stored with the model version, with the realized
quality beside it wherever labels (feedback) have landed.

The alert thresholds come from the artifact's reference cut into chunks of the
window's mean slice size, so an hourly window of a few hundred rows is judged against
the spread chunks of that size show, not against 5,000-row chunks.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from common import artifact
from flows.lake_reader import SCORE, class_score_column
from monitoring.cbpe import estimate_performance
from warehouse import tables

SLICES = 12  # as the drift timeline
# The run alerts on these only. F1, precision and recall are estimated and shown too, but
# on an hourly slice of a few dozen rows with few positives their reference spread is
# mostly noise (measured: a 47-row slice of unchanged data left recall's thresholds).
ALERT_METRICS = ("roc_auc", "accuracy")


def estimate_quality(
    art_dir: Path,
    meta: artifact.ModelMetadata,
    current: pl.DataFrame,
    feedback: pl.DataFrame,
    slices: int = SLICES,
) -> dict[str, Any]:
    """The summary's ``performance`` entry: ``available`` False with a ``reason``, or
    the estimates (``monitoring.cbpe.PerformanceResult.to_json``) plus ``alert`` and
    ``alert_metrics`` (those of ``ALERT_METRICS`` whose estimate left the reference
    thresholds in some slice)."""
    calibration = artifact.read_calibration(art_dir)
    if meta.task != "classification":
        return {"available": False, "reason": "regression models: performance estimation (DLE) is not built"}
    if calibration is None:
        return {"available": False, "reason": f"v{meta.version} has no calibration.json: retrain to add it"}
    problem = calibration.get("problem")
    classes = [str(c) for c in calibration.get("classes", [])]
    if problem == "binary":
        # the reference's out-of-fold score column -> the window's column with the same scores
        score_cols = {"cbpe_score": SCORE}
        scores: str | dict[str, str] = SCORE
    elif problem == "multiclass":
        # every class's probability: the lake's scores.<class> read as "score:<class>"
        score_cols = {f"cbpe_score_{c}": class_score_column(c) for c in classes}
        scores = {c: class_score_column(c) for c in classes}
    else:
        return {"available": False, "reason": f"calibration.json: unknown problem {problem!r}"}
    if current.is_empty() or not set(score_cols.values()) <= set(current.columns):
        return {"available": False, "reason": "no current rows with a score"}
    ref_path = art_dir / "reference.parquet"
    have = pl.read_parquet_schema(ref_path) if ref_path.is_file() else {}
    # the out-of-fold predictions training saves (see inferstream.train)
    if not {meta.target, "cbpe_prediction", *score_cols} <= set(have):
        return {"available": False, "reason": "the artifact's reference has no out-of-fold scores: retrain"}
    ref = pl.read_parquet(ref_path, columns=[meta.target, "cbpe_prediction", *score_cols]).rename(
        {meta.target: "label", "cbpe_prediction": "prediction", **score_cols}
    )
    cur = current.select("event_id", "event_time", "prediction", *score_cols.values()).with_columns(
        pl.col("event_id").cast(pl.String)
    )
    if not feedback.is_empty():
        cur = cur.join(feedback.select("event_id", "label"), on="event_id", how="left")
    result = estimate_performance(
        ref,
        cur.drop_nulls([*score_cols.values(), "prediction"]),
        target="label",
        prediction="prediction",
        scores=scores,
        positive=calibration.get("positive"),
        calibration=calibration,
        slices=slices,
        timestamp="event_time",
    )
    doc = result.to_json()
    metrics = sorted({m for _, m in result.alerts if m in ALERT_METRICS})
    return {"available": True, **doc, "alert": bool(metrics), "alert_metrics": metrics}


def reason(perf: dict[str, Any] | None) -> str | None:
    """One line for the verdict when an estimate alerts, else None."""
    if not perf or not perf.get("alert"):
        return None
    n = sum(1 for s in perf["slices"] if any(s["metrics"][m]["alert"] for m in perf["alert_metrics"]))
    return (
        f"estimated quality drop ({', '.join(perf['alert_metrics'])}) in {n} of "
        f"{len(perf['slices'])} slices, before labels"
    )


def log_line(perf: dict[str, Any] | None) -> str:
    """The Prefect log's summary: the last slice's estimates, alerts and estimation error."""
    if not perf or not perf.get("available"):
        return f"not estimated ({(perf or {}).get('reason', 'no entry')})"
    last = perf["slices"][-1]
    est = ", ".join(f"{m} {e['value']:.4f}" for m, e in last["metrics"].items() if e["value"] is not None)
    mae = ", ".join(f"{m} {v:.4f}" for m, v in (perf.get("mae") or {}).items() if v is not None)
    alerts = ", ".join(perf["alert_metrics"]) or "none"
    return f"last slice {last['start']}: {est}; alerts: {alerts}; MAE vs realized: {mae or 'no labels yet'}"


_TS = pl.Datetime("us", "UTC")


def warehouse_rows(perf: dict[str, Any] | None, base: dict[str, Any]) -> pl.DataFrame:
    """``model_quality_estimates`` rows, one per (slice, metric): ``base`` (model, version,
    window, run) plus the estimate, its band and thresholds, the alert and the realized
    value. A re-run of the same window after labels land replaces its rows."""
    out = []
    if perf and perf.get("available"):
        for s in perf["slices"]:
            for metric, m in s["metrics"].items():
                out.append(
                    {
                        **base,
                        "slice_start": datetime.fromisoformat(s["start"]),
                        "slice_end": datetime.fromisoformat(s["end"]),
                        "rows": s["rows"],
                        "labelled": s["labelled"],
                        "metric": metric,
                        "estimate": m["value"],
                        "sampling_error": m["sampling_error"],
                        "lower": m["lower"],
                        "upper": m["upper"],
                        "lower_threshold": m["lower_threshold"],
                        "upper_threshold": m["upper_threshold"],
                        "alert": m["alert"],
                        "realized": m["realized"],
                    }
                )
    schema = {c: _POLARS[t] for c, t, _ in tables.QUALITY_ESTIMATES.columns}
    return pl.DataFrame(out, schema=schema) if out else pl.DataFrame(schema=schema)


_POLARS: dict[str, Any] = {
    "TEXT": pl.String,
    "TIMESTAMPTZ": _TS,
    "BIGINT": pl.Int64,
    "DOUBLE PRECISION": pl.Float64,
    "BOOLEAN": pl.Boolean,
}
