"""Writes ``dashboards/inferstream.json`` (run it after changing a panel; a test checks
the file is what this script writes). Panels read only the ``bi`` views, split by
model and version, so the dashboard needs no SQL from its user."""

from __future__ import annotations

import json
from pathlib import Path

DS = {"type": "grafana-postgresql-datasource", "uid": "inferstream-bi"}
MV = "model_name || ' v' || model_version"


def _percentiles(kind: str) -> str:
    parts = [
        f"SELECT hour AS time, {MV} || ' {p}' AS metric, {kind}_latency_{p}_ms AS value "
        "FROM bi.v_latency_hourly WHERE $__timeFilter(hour)"
        for p in ("p50", "p99")
    ]
    return " UNION ALL ".join(parts) + " ORDER BY 1"


# (title, SQL, unit, kind); kind: timeseries (time, metric, value) or table
PANELS: list[tuple[str, str, str, str]] = [
    (
        "Traffic (events per hour)",
        f"SELECT hour AS time, {MV} AS metric, events AS value FROM bi.v_traffic_hourly "
        "WHERE $__timeFilter(hour) ORDER BY 1",
        "short",
        "timeseries",
    ),
    (
        "Error rate",
        f"SELECT hour AS time, {MV} AS metric, error_rate AS value FROM bi.v_traffic_hourly "
        "WHERE $__timeFilter(hour) ORDER BY 1",
        "percentunit",
        "timeseries",
    ),
    (
        "HTTP latency p50 / p99 (inside the API)",
        _percentiles("http"),
        "ms",
        "timeseries",
    ),
    (
        "Model latency p50 / p99",
        _percentiles("model"),
        "ms",
        "timeseries",
    ),
    (
        "Prediction mix (share of the hour)",
        f"SELECT hour AS time, {MV} || ' class ' || prediction AS metric, share AS value "
        "FROM bi.v_prediction_mix_hourly WHERE $__timeFilter(hour) ORDER BY 1",
        "percentunit",
        "timeseries",
    ),
    (
        "Drift score per feature (per drift run)",
        f"SELECT run_time AS time, {MV} || ' ' || feature AS metric, score AS value FROM bi.v_feature_drift "
        "WHERE $__timeFilter(run_time) ORDER BY 1",
        "short",
        "timeseries",
    ),
    (
        "Accuracy per day (realized; estimated where available)",
        f"SELECT CAST(day AS TIMESTAMP) AS time, {MV} || ' realized' AS metric, realized_accuracy AS value "
        "FROM bi.v_accuracy_daily WHERE $__timeFilter(CAST(day AS TIMESTAMP)) "
        f"UNION ALL SELECT CAST(day AS TIMESTAMP), {MV} || ' estimated', estimated_accuracy "
        "FROM bi.v_accuracy_daily WHERE estimated_accuracy IS NOT NULL "
        "AND $__timeFilter(CAST(day AS TIMESTAMP)) ORDER BY 1",
        "percentunit",
        "timeseries",
    ),
    (
        "Latest drift run per model version",
        "SELECT d.model_name, d.model_version, d.run_time, d.feature, d.method, d.score, d.threshold, "
        "d.drifted, d.report_url FROM bi.v_feature_drift d WHERE d.run_time = (SELECT max(x.run_time) "
        "FROM bi.v_feature_drift x WHERE x.model_name = d.model_name AND x.model_version = d.model_version) "
        "ORDER BY d.model_name, d.model_version, d.feature",
        "short",
        "table",
    ),
]


def panel(i: int, title: str, sql: str, unit: str, kind: str) -> dict[str, object]:
    return {
        "id": i + 1,
        "type": kind,
        "title": title,
        "datasource": DS,
        "gridPos": {
            "h": 8,
            "w": 24 if kind == "table" else 12,
            "x": 0 if kind == "table" else 12 * (i % 2),
            "y": 8 * ((i + 1) // 2 if kind == "table" else i // 2),  # a full-width row of its own
        },
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "targets": [
            {
                "refId": "A",
                "datasource": DS,
                "editorMode": "code",
                "rawQuery": True,
                "rawSql": sql,
                "format": "time_series" if kind == "timeseries" else "table",
            }
        ],
    }


def dashboard() -> dict[str, object]:
    return {
        "uid": "inferstream-bi",
        "title": "inferstream: traffic, latency, predictions, drift, accuracy",
        "tags": ["inferstream"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "time": {"from": "now-7d", "to": "now"},
        "refresh": "15m",
        "panels": [panel(i, *p) for i, p in enumerate(PANELS)],
    }


def text() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    out = Path(__file__).parent / "dashboards" / "inferstream.json"
    out.write_text(text())
    print(f"wrote {out}")  # noqa: T201 - a script's output
