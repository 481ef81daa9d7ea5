"""Drift scores as Prometheus metrics, pushed to a Pushgateway after each drift run, so
an alert rule (``deployments/prometheus/alerts.yaml``) can fire on drift.

One push per (model, version) group replaces that group's previous values (PUT), so a
column that stops drifting stops alerting. The families, labelled model, version and
column:

- ``inferstream_drift_score`` the column's test statistic; ``inferstream_drift_threshold``
- ``inferstream_drift_detected`` 1 when the column drifted, else 0
- ``inferstream_drift_run_drift`` 1 when the run concluded drift (labels model, version)
- ``inferstream_drift_last_run_timestamp_seconds`` when the run computed its results
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

JOB = "inferstream_drift"


def drift_registry(summary: dict[str, Any]) -> CollectorRegistry:
    """A registry holding one drift run's results (``summary`` as the drift flow writes it)."""
    r = CollectorRegistry()
    labels = ["model", "version", "column", "method"]
    score = Gauge(
        "inferstream_drift_score", "Drift score of a column in the last drift run", labels, registry=r
    )
    threshold = Gauge(
        "inferstream_drift_threshold", "Threshold the score is compared with", labels, registry=r
    )
    detected = Gauge(
        "inferstream_drift_detected", "1 when the column drifted in the last run", labels, registry=r
    )
    run = Gauge(
        "inferstream_drift_run_drift", "1 when the last run concluded drift", ["model", "version"], registry=r
    )
    when = Gauge(
        "inferstream_drift_last_run_timestamp_seconds",
        "When the last drift run computed its results",
        ["model", "version"],
        registry=r,
    )
    model, version = str(summary["model"]), str(summary["version"])
    for c in summary["columns"]:
        key = (model, version, str(c["column"]), str(c["method"]))
        score.labels(*key).set(float(c["score"]))
        threshold.labels(*key).set(float(c["threshold"]))
        detected.labels(*key).set(1.0 if c["drifted"] else 0.0)
    run.labels(model, version).set(1.0 if summary["verdict"]["drift"] else 0.0)
    when.labels(model, version).set(datetime.fromisoformat(summary["run_time"]).timestamp())
    return r


def push_drift(gateway: str, summary: dict[str, Any]) -> None:
    """PUT the run's metrics to the Pushgateway at ``gateway`` (host:port or URL), grouped
    by model and version."""
    push_to_gateway(
        gateway,
        job=JOB,
        registry=drift_registry(summary),
        grouping_key={"model": str(summary["model"]), "version": str(summary["version"])},
    )
