"""The views a BI tool charts: one question each, no JSON to parse, a comment on every
view and column. Portable SQL (DuckDB and PostgreSQL); times are the tables' UTC hours
and days, so a client's session time zone changes nothing.

Every view has ``model_name`` and ``model_version`` to filter or split by.
"""

from __future__ import annotations

from dataclasses import dataclass

from warehouse.tables import sql_text


@dataclass(frozen=True)
class View:
    name: str
    comment: str
    select: str  # {s} is the analyst schema
    columns: tuple[tuple[str, str], ...]  # (name, comment), in select order

    def ddl(self, schema: str) -> list[str]:
        q = f"{schema}.{self.name}"
        # drop first: PostgreSQL's CREATE OR REPLACE cannot change a view's columns
        out = [f"DROP VIEW IF EXISTS {q}", f"CREATE VIEW {q} AS {self.select.format(s=schema)}"]
        out.append(f"COMMENT ON VIEW {q} IS {sql_text(self.comment)}")
        out += [f"COMMENT ON COLUMN {q}.{c} IS {sql_text(d)}" for c, d in self.columns]
        return out


MODEL = ("model_name", "Model name")
VERSION = ("model_version", "Model artifact version")
HOUR = ("hour", "Start of the UTC hour")

TRAFFIC = View(
    "v_traffic_hourly",
    "Requests, errors and error rate per model version and UTC hour",
    "SELECT model_name, model_version, hour, events, synthetic_events, errors, error_rate "
    "FROM {s}.model_hourly",
    (
        MODEL,
        VERSION,
        HOUR,
        ("events", "Non-synthetic inference events (ok and error)"),
        ("synthetic_events", "Synthetic inference events (not in the other columns)"),
        ("errors", "Events whose inference failed"),
        ("error_rate", "errors / events (0..1); null without events"),
    ),
)
LATENCY = View(
    "v_latency_hourly",
    "Latency percentiles per model version and UTC hour: inside the API (HTTP) and inside the model",
    "SELECT model_name, model_version, hour, "
    "http_latency_p50_ms, http_latency_p95_ms, http_latency_p99_ms, "
    "latency_p50_ms AS model_latency_p50_ms, latency_p95_ms AS model_latency_p95_ms, "
    "latency_p99_ms AS model_latency_p99_ms FROM {s}.model_hourly",
    (
        MODEL,
        VERSION,
        HOUR,
        ("http_latency_p50_ms", "Median time inside the API from request to answer, ms"),
        ("http_latency_p95_ms", "95th percentile of time inside the API, ms"),
        ("http_latency_p99_ms", "99th percentile of time inside the API, ms"),
        ("model_latency_p50_ms", "Median time inside the model, ms"),
        ("model_latency_p95_ms", "95th percentile of time inside the model, ms"),
        ("model_latency_p99_ms", "99th percentile of time inside the model, ms"),
    ),
)
PREDICTION_MIX = View(
    "v_prediction_mix_hourly",
    "Predicted classes per model version and UTC hour, with each class's share of the hour",
    "SELECT model_name, model_version, hour, prediction, predictions, "
    "CAST(predictions AS DOUBLE PRECISION) / "
    "sum(predictions) OVER (PARTITION BY model_name, model_version, hour) AS share "
    "FROM {s}.prediction_mix_hourly",
    (
        MODEL,
        VERSION,
        HOUR,
        ("prediction", "Predicted class"),
        ("predictions", "Successful non-synthetic predictions of this class"),
        ("share", "predictions / all predictions of the hour (0..1)"),
    ),
)
FEATURE_DRIFT = View(
    "v_feature_drift",
    "Drift score of every feature (and the prediction and score) per drift-flow run",
    "SELECT run_id, run_time, model_name, model_version, window_start, window_end, "
    "column_name AS feature, role, method, score, threshold, drifted, run_verdict_drift, report_url "
    "FROM {s}.drift_results",
    (
        ("run_id", "Prefect flow run id"),
        ("run_time", "When the run computed its results (UTC)"),
        MODEL,
        VERSION,
        ("window_start", "Start of the traffic window compared with the reference"),
        ("window_end", "End of the window (exclusive)"),
        ("feature", "Column tested: a feature, the prediction or the score"),
        ("role", "feature, prediction or score"),
        ("method", "Statistical test"),
        ("score", "Drift score of the test"),
        ("threshold", "Threshold the score is compared with"),
        ("drifted", "Whether this column drifted"),
        ("run_verdict_drift", "Whether the whole run concluded drift"),
        ("report_url", "The run's HTML report"),
    ),
)
ACCURACY = View(
    "v_accuracy_daily",
    "Accuracy per model version and UTC day: realized from labels; estimated where an estimate exists",
    # a full join: estimates exist for days whose labels have not landed yet
    "SELECT COALESCE(q.model_name, e.model_name) AS model_name, "
    "COALESCE(q.model_version, e.model_version) AS model_version, COALESCE(q.day, e.day) AS day, "
    "q.labelled, q.accuracy AS realized_accuracy, e.estimated_accuracy "
    "FROM {s}.model_quality_daily q FULL OUTER JOIN ("
    "SELECT model_name, model_version, CAST(slice_start AS DATE) AS day, "
    "SUM(estimate * rows) / NULLIF(SUM(rows), 0) AS estimated_accuracy "
    "FROM {s}.model_quality_estimates WHERE metric = 'accuracy' GROUP BY 1, 2, 3) e "
    "ON q.model_name = e.model_name AND q.model_version = e.model_version AND q.day = e.day",
    (
        MODEL,
        VERSION,
        ("day", "UTC day the predictions were made"),
        ("labelled", "Predictions of the day that received a label"),
        ("realized_accuracy", "Share of labelled predictions equal to their label"),
        (
            "estimated_accuracy",
            "Accuracy estimated without labels (CBPE, row-weighted over the day's slices)",
        ),
    ),
)
FEATURES = View(
    "v_event_features",
    "Every event's inputs as (model, version, event, feature, value) rows, successful non-synthetic events",
    "SELECT f.model_name, f.model_version, f.event_id, f.event_time, f.feature, f.value_num, f.value_text "
    "FROM {s}.event_features f JOIN {s}.inference_events e ON e.event_id = f.event_id "
    "WHERE e.status = 'ok' AND NOT e.synthetic",
    (
        MODEL,
        VERSION,
        ("event_id", "Prediction id"),
        ("event_time", "When the API received the request (UTC)"),
        ("feature", "Feature name"),
        ("value_num", "Value of a number or boolean feature (true = 1)"),
        ("value_text", "Value as text"),
    ),
)

ALL = (TRAFFIC, LATENCY, PREDICTION_MIX, FEATURE_DRIFT, ACCURACY, FEATURES)
