"""Where a drift run's results go (``flows.drift``): the report to its store (with the
index), rows in the warehouse, scores to the Pushgateway, Prefect artifacts and an
event, and the webhook alert."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from flows import artifacts, performance
from flows import outcome as outcomes
from flows.alert import post_alert
from flows.drift_metrics import push_drift
from flows.report_store import ReportStore
from flows.summary import DriftSummary
from flows.window import Window
from warehouse import tables
from warehouse.backends import open_warehouse
from warehouse.settings import WarehouseSettings


# the object store may fail for a moment; every step is idempotent (whole objects, rebuilt index)
@task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[2, 10, 30])
def store_report(store: ReportStore, run_dir: Path) -> str:
    """The run's report into the store (``flows.report_store``), then the index rebuilt
    from every run's summary there. Returns where the run's folder is."""
    rel = run_dir.relative_to(store.local).as_posix()
    if run_dir.exists():  # a retry after a whole upload finds the local folder removed
        store.publish_run(run_dir)
    store.refresh_index()
    return store.location(rel)


# DuckDB allows one writing process: the BI load may hold the file for a moment
@task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=10)
def record_results(ws: WarehouseSettings, summary: DriftSummary, window: Window, report_url: str) -> int:
    """Results (run, column, method, score, threshold, verdict, report URL) into the warehouse."""
    if not summary.columns:
        return 0
    df = pl.DataFrame(
        [
            {
                "run_id": summary.run_id,
                "run_time": summary.run_at,
                "model_name": summary.model,
                "model_version": summary.version,
                "window_start": window.start,
                "window_end": window.end,
                "column_name": c.column,
                "role": c.role,
                "method": c.method,
                "score": float(c.score),
                "threshold": float(c.threshold),
                "drifted": bool(c.drifted),
                "run_verdict_drift": bool(summary.verdict.drift),
                "report_url": report_url,
            }
            for c in summary.columns
        ],
        schema_overrides={
            "run_time": pl.Datetime("us", "UTC"),
            "window_start": pl.Datetime("us", "UTC"),
            "window_end": pl.Datetime("us", "UTC"),
        },
    )
    base = {
        "model_name": summary.model,
        "model_version": summary.version,
        "window_start": window.start,
        "window_end": window.end,
        "run_id": summary.run_id,
        "run_time": summary.run_at,
    }
    perf_rows = performance.warehouse_rows(summary.performance, base)
    wh = open_warehouse(ws)
    try:
        with wh.transaction():
            n = wh.upsert(tables.DRIFT_RESULTS.name, df)
            if not perf_rows.is_empty():
                wh.upsert(tables.QUALITY_ESTIMATES.name, perf_rows)
        return n
    finally:
        wh.close()


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def push_scores(gateway: str, summary: DriftSummary) -> None:
    """Drift scores to the Pushgateway, for alert rules (``flows.drift_metrics``, which
    reads the summary's JSON document)."""
    push_drift(gateway, summary.to_json())


ALERTS = {
    outcomes.Outcome.DRIFT: "drift_detected",
    outcomes.Outcome.QUALITY_DROP: "quality_drop_estimated",
    outcomes.Outcome.NO_DATA: "no_data",
    outcomes.Outcome.NO_DRIFT: "no_drift",  # never sent
}


@task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[2, 10, 30])
def send_alert(url: str, summary: DriftSummary, report: str, report_url: str) -> int:
    """The webhook's JSON; ``report`` is where report.html is kept (a path, or its s3:// URL)."""
    outcome = summary.result()
    perf = summary.performance or {}
    payload = {
        "alert": ALERTS[outcome],
        "outcome": outcome.value,
        "verdict": outcomes.LABELS[outcome],
        "rows": summary.current_rows,
        "model": summary.model,
        "version": summary.version,
        "run_id": summary.run_id,
        "run_time": summary.run_time,
        "window": summary.window.model_dump(exclude_unset=True),
        "reason": summary.verdict.reason,
        "drifted_features": summary.verdict.drifted_features,
        "prediction_drift": summary.verdict.prediction_drift,
        "columns": [
            c.model_dump(include={"column", "method", "score", "threshold"}) for c in summary.drifted_columns
        ],
        "estimated_quality_alerts": perf.get("alert_metrics", []),
        "report": report,
        "report_url": report_url,
    }
    return post_alert(url, payload)


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def publish(summary: DriftSummary, url: str) -> str:
    """Artifacts and the outcome's event (see ``flows.artifacts``)."""
    return artifacts.publish(summary, url).value
