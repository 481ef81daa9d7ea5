"""The BI tables: columns (portable SQL types understood by DuckDB and PostgreSQL) and
the key each upsert replaces by."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[tuple[str, str], ...]
    key: tuple[str, ...]

    @property
    def column_names(self) -> list[str]:
        return [c for c, _ in self.columns]

    def ddl(self, schema: str) -> str:
        cols = ", ".join(f"{c} {t}" for c, t in self.columns)
        return (
            f"CREATE TABLE IF NOT EXISTS {schema}.{self.name} ({cols}, PRIMARY KEY ({', '.join(self.key)}))"
        )


TS = "TIMESTAMPTZ"
F = "DOUBLE PRECISION"

EVENTS = Table(
    "inference_events",
    (
        ("event_id", "TEXT"),
        ("event_time", TS),
        ("model_name", "TEXT"),
        ("model_version", "TEXT"),
        ("prediction", "TEXT"),
        ("scores_json", "TEXT"),
        ("latency_ms", F),
        ("status", "TEXT"),
        ("error", "TEXT"),
        ("synthetic", "BOOLEAN"),
        ("features_json", "TEXT"),
        ("kafka_partition", "INTEGER"),
        ("kafka_offset", "BIGINT"),
    ),
    ("event_id",),
)
HOURLY = Table(
    "model_hourly",
    (
        ("model_name", "TEXT"),
        ("model_version", "TEXT"),
        ("hour", TS),
        ("events", "BIGINT"),
        ("synthetic_events", "BIGINT"),
        ("errors", "BIGINT"),
        ("error_rate", F),
        ("latency_p50_ms", F),
        ("latency_p95_ms", F),
        ("latency_p99_ms", F),
        ("prediction_mix_json", "TEXT"),
    ),
    ("model_name", "model_version", "hour"),
)
FEATURE_STATS = Table(
    "feature_stats_hourly",
    (
        ("model_name", "TEXT"),
        ("model_version", "TEXT"),
        ("hour", TS),
        ("feature", "TEXT"),
        ("rows", "BIGINT"),
        ("nulls", "BIGINT"),
        ("mean", F),
        ("std", F),
        ("min", F),
        ("max", F),
        ("distinct_values", "BIGINT"),
        ("top_value", "TEXT"),
    ),
    ("model_name", "model_version", "hour", "feature"),
)
FEEDBACK = Table("feedback", (("event_id", "TEXT"), ("label", "TEXT")), ("event_id",))
DAILY_QUALITY = Table(
    "model_quality_daily",
    (
        ("model_name", "TEXT"),
        ("model_version", "TEXT"),
        ("day", "DATE"),
        ("labelled", "BIGINT"),
        ("accuracy", F),
    ),
    ("model_name", "model_version", "day"),
)
DRIFT_RESULTS = Table(
    "drift_results",
    (
        ("run_id", "TEXT"),
        ("run_time", TS),
        ("model_name", "TEXT"),
        ("model_version", "TEXT"),
        ("window_start", TS),
        ("window_end", TS),
        ("column_name", "TEXT"),
        ("role", "TEXT"),
        ("method", "TEXT"),
        ("score", F),
        ("threshold", F),
        ("drifted", "BOOLEAN"),
        ("run_verdict_drift", "BOOLEAN"),
    ),
    ("run_id", "column_name"),
)
# CBPE per drift-run slice: estimated quality before labels, realized once they land
# (written by the drift flow; keyed by window and slice so a re-run after labels
# replaces the rows)
QUALITY_ESTIMATES = Table(
    "model_quality_estimates",
    (
        ("model_name", "TEXT"),
        ("model_version", "TEXT"),
        ("window_start", TS),
        ("window_end", TS),
        ("slice_start", TS),
        ("slice_end", TS),
        ("metric", "TEXT"),
        ("run_id", "TEXT"),
        ("run_time", TS),
        ("rows", "BIGINT"),
        ("labelled", "BIGINT"),
        ("estimate", F),
        ("sampling_error", F),
        ("lower", F),
        ("upper", F),
        ("lower_threshold", F),
        ("upper_threshold", F),
        ("alert", "BOOLEAN"),
        ("realized", F),
    ),
    ("model_name", "model_version", "window_start", "window_end", "slice_start", "metric"),
)
LOADED_FILES = Table(
    "bi_loaded_files",
    (("path", "TEXT"), ("size", "BIGINT"), ("mtime_ns", "BIGINT"), ("loaded_at", TS)),
    ("path",),
)

ALL = (
    EVENTS,
    HOURLY,
    FEATURE_STATS,
    FEEDBACK,
    DAILY_QUALITY,
    DRIFT_RESULTS,
    QUALITY_ESTIMATES,
    LOADED_FILES,
)
BY_NAME = {t.name: t for t in ALL}
