"""Rows for the BI tables, computed from one lake partition (one model, one hour).

A partition holds every event of its hour (the lake partitions by event time), so its
aggregates can be recomputed whole from the table's current snapshot of it and replace
the previous ones: that is what makes a re-run load nothing twice.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import duckdb
import orjson
import polars as pl

from common import lake


def read_partition(where: lake.Lake | Path | str, model: str, day: date, hour: int) -> pl.DataFrame:
    """The events of one (model, date, hour) partition. The lander lands one row per
    event id; the dedupe here keeps that true for tables written otherwise (a migrated
    lake, a second incarnation of a topic whose copies fall outside the lander's check)."""
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        if not lake.register_duckdb(con, where, lake.EVENTS_TABLE):
            return pl.DataFrame()
        df: pl.DataFrame = con.sql(
            f"SELECT * EXCLUDE (date, hour, model) FROM {lake.EVENTS_TABLE} "
            "WHERE model = $model AND date = $day AND hour = $hour "
            "QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY kafka_offset) = 1",
            params={"model": model, "day": day, "hour": hour},
        ).pl()
        return df
    finally:
        con.close()


def _json_col(df: pl.DataFrame, name: str) -> pl.Series:
    if name not in df.columns:
        return pl.Series(name, [None] * df.height, dtype=pl.String)
    return pl.Series(name, [None if v is None else orjson.dumps(v).decode() for v in df[name].to_list()])


def _float_col(df: pl.DataFrame, name: str) -> pl.Expr:
    """A number column that older lake files may lack (null there)."""
    if name in df.columns:
        return pl.col(name).cast(pl.Float64)
    return pl.lit(None, dtype=pl.Float64).alias(name)


def events_rows(df: pl.DataFrame) -> pl.DataFrame:
    return df.select(
        pl.col("event_id").cast(pl.String),
        pl.col("event_time"),
        "model_name",
        "model_version",
        pl.col("prediction").cast(pl.String),
        _json_col(df, "scores").alias("scores_json"),
        pl.col("latency_ms").cast(pl.Float64),
        _float_col(df, "http_latency_ms"),
        "status",
        pl.col("error").cast(pl.String),
        pl.col("synthetic").cast(pl.Boolean),
        _json_col(df, "features").alias("features_json"),
        pl.col("kafka_partition").cast(pl.Int32),
        pl.col("kafka_offset").cast(pl.Int64),
    )


def hourly_rows(df: pl.DataFrame, hour: datetime) -> pl.DataFrame:
    """Per model version: counts, error rate, latency percentiles, prediction mix.
    Synthetic traffic is counted apart and left out of the rest."""
    out = []
    df = df.with_columns(_float_col(df, "http_latency_ms"))
    for (version,), g in df.group_by(["model_version"], maintain_order=True):
        real = g.filter(~pl.col("synthetic").fill_null(False))
        lat = real["latency_ms"]
        http = real["http_latency_ms"].drop_nulls()
        mix = real.filter(pl.col("status") == "ok")["prediction"].value_counts(sort=True)
        errors = int((real["status"] == "error").sum())
        out.append(
            {
                "model_name": str(g["model_name"][0]),
                "model_version": str(version),
                "hour": hour,
                "events": real.height,
                "synthetic_events": g.height - real.height,
                "errors": errors,
                "error_rate": errors / real.height if real.height else None,
                "latency_p50_ms": lat.quantile(0.50, "linear") if real.height else None,
                "latency_p95_ms": lat.quantile(0.95, "linear") if real.height else None,
                "latency_p99_ms": lat.quantile(0.99, "linear") if real.height else None,
                "http_latency_p50_ms": http.quantile(0.50, "linear") if http.len() else None,
                "http_latency_p95_ms": http.quantile(0.95, "linear") if http.len() else None,
                "http_latency_p99_ms": http.quantile(0.99, "linear") if http.len() else None,
                "prediction_mix_json": orjson.dumps(
                    {str(k): int(c) for k, c in zip(mix["prediction"], mix["count"], strict=True)},
                    option=orjson.OPT_SORT_KEYS,
                ).decode(),
            }
        )
    return pl.DataFrame(
        out,
        schema_overrides={
            "hour": pl.Datetime("us", "UTC"),
            **{f"http_latency_p{p}_ms": pl.Float64 for p in (50, 95, 99)},
        },
    )


def prediction_mix_rows(df: pl.DataFrame, hour: datetime) -> pl.DataFrame:
    """Per model version and predicted class: successful non-synthetic predictions."""
    real = df.filter(~pl.col("synthetic").fill_null(False) & (pl.col("status") == "ok"))
    return (
        real.group_by("model_name", "model_version", pl.col("prediction").cast(pl.String))
        .agg(pl.len().cast(pl.Int64).alias("predictions"))
        .with_columns(pl.lit(hour).cast(pl.Datetime("us", "UTC")).alias("hour"))
        .select("model_name", "model_version", "hour", "prediction", "predictions")
        .sort("model_version", "prediction")
    )


_EVENT_KEYS = ("event_id", "event_time", "model_name", "model_version")


def feature_value_rows(df: pl.DataFrame) -> pl.DataFrame:
    """One row per (event, feature): ``value_num`` for numbers and booleans, and
    ``value_text`` for every value, so a BI tool filters and charts without JSON."""
    if "features" not in df.columns or df.is_empty():
        return pl.DataFrame()
    keys = df.select(pl.col("event_id").cast(pl.String), *_EVENT_KEYS[1:])
    feats = df["features"].struct.unnest()
    parts = []
    for name in feats.columns:
        s = feats[name]
        numeric = s.dtype.is_numeric() or s.dtype == pl.Boolean
        parts.append(
            keys.with_columns(
                pl.lit(name).alias("feature"),
                (s.cast(pl.Float64) if numeric else pl.Series([None] * s.len(), dtype=pl.Float64)).alias(
                    "value_num"
                ),
                s.cast(pl.String).alias("value_text"),
            )
        )
    return pl.concat(parts)


def score_rows(df: pl.DataFrame) -> pl.DataFrame:
    """One row per (successful event, class): the probability the model gave it."""
    if "scores" not in df.columns or df.is_empty() or not isinstance(df.schema["scores"], pl.Struct):
        return pl.DataFrame()
    ok = df.filter(pl.col("scores").is_not_null())
    keys = ok.select(pl.col("event_id").cast(pl.String), *_EVENT_KEYS[1:])
    scores = ok["scores"].struct.unnest()
    return pl.concat(
        [
            keys.with_columns(pl.lit(c).alias("class_label"), scores[c].cast(pl.Float64).alias("score"))
            for c in scores.columns
        ]
    ).filter(pl.col("score").is_not_null())


def feature_rows(df: pl.DataFrame, hour: datetime) -> pl.DataFrame:
    """Per model version and feature: rows, nulls, mean/std/min/max (numbers and
    booleans), distinct values and the most frequent value (not for floats, where
    nearly every value is distinct and the "most frequent" one is noise)."""
    out = []
    if "features" not in df.columns or df.is_empty():
        return pl.DataFrame()
    real = df.filter(~pl.col("synthetic").fill_null(False) & (pl.col("status") == "ok"))
    for (version,), g in real.group_by(["model_version"], maintain_order=True):
        feats = g["features"].struct.unnest()
        for name in feats.columns:
            s = feats[name]
            numeric = s.dtype.is_numeric() or s.dtype == pl.Boolean
            nums = s.cast(pl.Float64) if numeric else None
            vc = s.drop_nulls().value_counts(sort=True)
            out.append(
                {
                    "model_name": str(g["model_name"][0]),
                    "model_version": str(version),
                    "hour": hour,
                    "feature": name,
                    "rows": s.len(),
                    "nulls": s.null_count(),
                    "mean": nums.mean() if nums is not None else None,
                    "std": nums.std() if nums is not None else None,
                    "min": nums.min() if nums is not None else None,
                    "max": nums.max() if nums is not None else None,
                    "distinct_values": s.n_unique() - (1 if s.null_count() else 0),
                    "top_value": str(vc[name][0]) if vc.height and not s.dtype.is_float() else None,
                }
            )
    return pl.DataFrame(
        out,
        schema_overrides={
            "hour": pl.Datetime("us", "UTC"),
            "mean": pl.Float64,
            "std": pl.Float64,
            "min": pl.Float64,
            "max": pl.Float64,
        },
    )
