"""The BI tables: columns (portable SQL types understood by DuckDB and PostgreSQL), a
comment on every table and column (what a BI tool shows beside the name), and the key
each upsert replaces by.

Analyst tables live in the configured schema (``bi``); bookkeeping the loader needs
(``bi_loaded_files``) lives apart in ``<schema>_internal`` so a BI tool's table list
shows only data. The views over these tables are in ``warehouse.views``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Table:
    name: str
    comment: str
    columns: tuple[tuple[str, str, str], ...]  # (name, SQL type, comment)
    key: tuple[str, ...]
    internal: bool = False

    @property
    def column_names(self) -> list[str]:
        return [c for c, _, _ in self.columns]

    def schema_of(self, schema: str) -> str:
        return internal_schema(schema) if self.internal else schema

    def qualified(self, schema: str) -> str:
        """``schema.table`` for the analyst schema ``schema``."""
        return f"{self.schema_of(schema)}.{self.name}"

    def ddl(self, schema: str) -> list[str]:
        """Create the table, add columns a previous release lacked (a warehouse is
        upgraded in place), and (re)write the comments."""
        q = self.qualified(schema)
        cols = ", ".join(f"{c} {t}" for c, t, _ in self.columns)
        out = [f"CREATE TABLE IF NOT EXISTS {q} ({cols}, PRIMARY KEY ({', '.join(self.key)}))"]
        out += [f"ALTER TABLE {q} ADD COLUMN IF NOT EXISTS {c} {t}" for c, t, _ in self.columns]
        out.append(f"COMMENT ON TABLE {q} IS {sql_text(self.comment)}")
        out += [f"COMMENT ON COLUMN {q}.{c} IS {sql_text(d)}" for c, _, d in self.columns]
        return out


def internal_schema(schema: str) -> str:
    return f"{schema}_internal"


def sql_text(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


TS = "TIMESTAMPTZ"
F = "DOUBLE PRECISION"
MODEL = ("model_name", "TEXT", "Model name as served by the API")
VERSION = ("model_version", "TEXT", "Model artifact version")
HOUR = ("hour", TS, "Start of the UTC hour")

EVENTS = Table(
    "inference_events",
    "One row per inference event (deduplicated by event id), as landed in the lake",
    (
        ("event_id", "TEXT", "Prediction id (UUIDv7) returned to the client"),
        ("event_time", TS, "When the API received the request (UTC)"),
        MODEL,
        VERSION,
        ("prediction", "TEXT", "Model output as text; null when the inference failed"),
        ("scores_json", "TEXT", "Class probabilities as JSON; the same as rows in event_scores"),
        ("latency_ms", F, "Time inside the model, milliseconds"),
        (
            "http_latency_ms",
            F,
            "Time inside the API from receiving the request to the answer being ready, "
            "milliseconds; null for events from APIs that did not measure it",
        ),
        ("status", "TEXT", "ok or error"),
        ("error", "TEXT", "Why the inference failed; null when ok"),
        ("synthetic", "BOOLEAN", "Synthetic traffic (left out of every aggregate)"),
        ("features_json", "TEXT", "Model inputs as JSON; the same as rows in event_features"),
        ("kafka_partition", "INTEGER", "Kafka partition the event was read from"),
        ("kafka_offset", "BIGINT", "Kafka offset of the event"),
    ),
    ("event_id",),
)
EVENT_FEATURES = Table(
    "event_features",
    "Model inputs of each event, one row per (event, feature): chart or filter without parsing JSON",
    (
        ("event_id", "TEXT", "Prediction id; joins inference_events.event_id"),
        ("event_time", TS, "When the API received the request (UTC)"),
        MODEL,
        VERSION,
        ("feature", "TEXT", "Feature name"),
        ("value_num", F, "Value of a number or boolean feature (true = 1); null for text"),
        ("value_text", "TEXT", "Value as text (every type); null when the feature was null"),
    ),
    ("event_id", "feature"),
)
EVENT_SCORES = Table(
    "event_scores",
    "Class probabilities of each successful event, one row per (event, class)",
    (
        ("event_id", "TEXT", "Prediction id; joins inference_events.event_id"),
        ("event_time", TS, "When the API received the request (UTC)"),
        MODEL,
        VERSION,
        ("class_label", "TEXT", "Class label"),
        ("score", F, "Probability the model gave this class"),
    ),
    ("event_id", "class_label"),
)
HOURLY = Table(
    "model_hourly",
    "Traffic, errors and latency per model version and UTC hour (synthetic traffic counted apart)",
    (
        MODEL,
        VERSION,
        HOUR,
        ("events", "BIGINT", "Non-synthetic inference events (ok and error)"),
        ("synthetic_events", "BIGINT", "Synthetic inference events"),
        ("errors", "BIGINT", "Non-synthetic events with status error"),
        ("error_rate", F, "errors / events; null when there were no events"),
        ("latency_p50_ms", F, "Median time inside the model, milliseconds"),
        ("latency_p95_ms", F, "95th percentile of time inside the model, milliseconds"),
        ("latency_p99_ms", F, "99th percentile of time inside the model, milliseconds"),
        ("http_latency_p50_ms", F, "Median time inside the API per request, milliseconds"),
        ("http_latency_p95_ms", F, "95th percentile of time inside the API, milliseconds"),
        ("http_latency_p99_ms", F, "99th percentile of time inside the API, milliseconds"),
        ("prediction_mix_json", "TEXT", "Predictions by class as JSON; as rows in prediction_mix_hourly"),
    ),
    ("model_name", "model_version", "hour"),
)
PREDICTION_MIX = Table(
    "prediction_mix_hourly",
    "Successful non-synthetic predictions per model version, UTC hour and predicted class",
    (
        MODEL,
        VERSION,
        HOUR,
        ("prediction", "TEXT", "Predicted class (as text)"),
        ("predictions", "BIGINT", "How many times it was predicted in the hour"),
    ),
    ("model_name", "model_version", "hour", "prediction"),
)
FEATURE_STATS = Table(
    "feature_stats_hourly",
    "Summary of each feature's values per model version and UTC hour (successful, non-synthetic events)",
    (
        MODEL,
        VERSION,
        HOUR,
        ("feature", "TEXT", "Feature name"),
        ("rows", "BIGINT", "Events in the hour"),
        ("nulls", "BIGINT", "Events where the feature was null"),
        ("mean", F, "Mean (numbers and booleans, true = 1)"),
        ("std", F, "Sample standard deviation (numbers and booleans)"),
        ("min", F, "Minimum (numbers and booleans)"),
        ("max", F, "Maximum (numbers and booleans)"),
        ("distinct_values", "BIGINT", "Distinct non-null values"),
        ("top_value", "TEXT", "Most frequent value of a text, boolean or integer feature; null for floats"),
    ),
    ("model_name", "model_version", "hour", "feature"),
)
FEEDBACK = Table(
    "feedback",
    "Ground truth received through /v1/feedback, one row per prediction id (the latest wins)",
    (
        ("event_id", "TEXT", "Prediction id the label belongs to"),
        ("label", "TEXT", "Observed label (as text)"),
        ("feedback_time", TS, "When the API received the label (UTC); null for lakes that lack it"),
    ),
    ("event_id",),
)
DAILY_QUALITY = Table(
    "model_quality_daily",
    "Realized accuracy per model version and UTC day of the prediction, from labelled predictions",
    (
        MODEL,
        VERSION,
        ("day", "DATE", "UTC day the predictions were made"),
        ("labelled", "BIGINT", "Predictions of the day that received a label"),
        ("accuracy", F, "Share of labelled predictions equal to their label"),
    ),
    ("model_name", "model_version", "day"),
)
DRIFT_RESULTS = Table(
    "drift_results",
    "One row per drift-flow run and column: the test, its score and verdict",
    (
        ("run_id", "TEXT", "Prefect flow run id"),
        ("run_time", TS, "When the run computed its results (UTC)"),
        MODEL,
        VERSION,
        ("window_start", TS, "Start of the traffic window compared with the reference"),
        ("window_end", TS, "End of the window (exclusive)"),
        ("column_name", "TEXT", "Feature, prediction or score column tested"),
        ("role", "TEXT", "feature, prediction or score"),
        ("method", "TEXT", "Statistical test (Evidently's default choice)"),
        ("score", F, "Test statistic or distance (higher is more drift, except p-values)"),
        ("threshold", F, "Threshold the score is compared with"),
        ("drifted", "BOOLEAN", "Whether this column drifted"),
        ("run_verdict_drift", "BOOLEAN", "Whether the whole run concluded drift"),
        ("report_url", "TEXT", "The run's HTML report (file:// URL on the machine that ran the flow)"),
    ),
    ("run_id", "column_name"),
)
# CBPE per drift-run slice: estimated quality before labels, realized once they land
# (written by the drift flow; keyed by window and slice so a re-run after labels
# replaces the rows)
QUALITY_ESTIMATES = Table(
    "model_quality_estimates",
    "Model quality per drift-run slice: CBPE's estimate before labels, realized once they land",
    (
        ("model_name", "TEXT", "Model name"),
        ("model_version", "TEXT", "Model version"),
        ("window_start", TS, "Start of the drift run's window (UTC)"),
        ("window_end", TS, "End of the drift run's window (UTC)"),
        ("slice_start", TS, "Start of the time slice (UTC)"),
        ("slice_end", TS, "End of the time slice (UTC)"),
        ("metric", "TEXT", "roc_auc, accuracy, f1, precision or recall"),
        ("run_id", "TEXT", "Drift run that wrote the row"),
        ("run_time", TS, "When that run ran (UTC)"),
        ("rows", "BIGINT", "Predictions in the slice"),
        ("labelled", "BIGINT", "Predictions in the slice with a fed-back label"),
        ("estimate", F, "CBPE estimate of the metric, from calibrated scores alone"),
        ("sampling_error", F, "Sampling error of the estimate (one standard deviation)"),
        ("lower", F, "Estimate minus three sampling errors"),
        ("upper", F, "Estimate plus three sampling errors"),
        ("lower_threshold", F, "Alert below this: reference chunks' mean minus 3 std"),
        ("upper_threshold", F, "Alert above this: reference chunks' mean plus 3 std"),
        ("alert", "BOOLEAN", "The estimate left the thresholds"),
        ("realized", F, "The metric from fed-back labels; NULL until labels land"),
    ),
    ("model_name", "model_version", "window_start", "window_end", "slice_start", "metric"),
)
LOADED_FILES = Table(
    "bi_loaded_files",
    "Loader bookkeeping: lake files already loaded (the watermark); not for analysis",
    (
        ("path", "TEXT", "Lake file path"),
        ("size", "BIGINT", "Size in bytes when loaded"),
        ("mtime_ns", "BIGINT", "Modification time when loaded (ns)"),
        ("loaded_at", TS, "When it was loaded (UTC)"),
    ),
    ("path",),
    internal=True,
)

ALL = (
    EVENTS,
    EVENT_FEATURES,
    EVENT_SCORES,
    HOURLY,
    PREDICTION_MIX,
    FEATURE_STATS,
    FEEDBACK,
    DAILY_QUALITY,
    DRIFT_RESULTS,
    QUALITY_ESTIMATES,
    LOADED_FILES,
)
BY_NAME = {t.name: t for t in ALL}
