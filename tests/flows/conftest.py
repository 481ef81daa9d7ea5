"""Fixtures for the flow tests: one Prefect test harness for the session (it starts a
temporary API server, slow), and lakes written by the real lake sink."""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import joblib
import polars as pl
import psycopg
import pytest
from deltalake import write_deltalake

from common import artifact, events, lake
from warehouse.settings import WarehouseSettings

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"  # no network on test machines
    with prefect_test_harness(server_startup_timeout=120):
        yield


def _write_lake(
    lake_dir: Path,
    model: str,
    version: str,
    frame: pl.DataFrame,
    features: list[str],
    *,
    start: datetime = T0,
    span: timedelta = timedelta(minutes=59),
    synthetic: bool = False,
    first_offset: int = 0,
    partition: int = 0,
) -> list[str]:
    """Rows of ``frame`` (features + prediction + score, or ``score:<class>`` columns for a
    multiclass model) as inference events spread over
    ``span`` from ``start``, appended to the events table in the lake sink's schema and
    partitioning (``common.lake``; the sink itself is tested in tests/consumers).
    Returns the event ids."""
    n = frame.height
    step = span / max(n, 1)
    ids = [str(events.uuid7()) for _ in range(n)]
    df = pl.DataFrame(
        {
            "event_id": ids,
            "schema_version": pl.Series([events.SCHEMA_VERSION] * n, dtype=pl.Int16),
            "event_time": [start + step * i for i in range(n)],
            "model_name": [model] * n,
            "model_version": [version] * n,
            "features": frame.select(features).to_struct("features"),
            "prediction": frame["prediction"].cast(pl.String),
            "scores": _scores(frame),
            "latency_ms": [1.0 + (i % 7) for i in range(n)],
            "http_latency_ms": [10.0 + (i % 13) for i in range(n)],
            "status": ["ok"] * n,
            "error": pl.Series([None] * n, dtype=pl.String),
            "synthetic": [synthetic] * n,
            "kafka_partition": pl.Series([partition] * n, dtype=pl.Int32),
            "kafka_offset": pl.Series(range(first_offset, first_offset + n), dtype=pl.Int64),
        }
    ).with_columns(
        pl.col("event_time").dt.cast_time_unit("us").dt.convert_time_zone("UTC"),
        pl.col("event_time").dt.cast_time_unit("ms").dt.convert_time_zone("UTC").alias("kafka_timestamp"),
    )
    df = df.with_columns(
        pl.lit(lake.safe_segment(model)).alias("model"),
        pl.col("event_time").dt.date().alias("date"),
        pl.col("event_time").dt.hour().cast(pl.Int32).alias("hour"),
    )
    write_deltalake(
        str(lake_dir / lake.EVENTS_TABLE),
        df.to_arrow(compat_level=pl.CompatLevel.oldest()),
        mode="append",
        partition_by=lake.PARTITION_BY,
        schema_mode="merge",
    )
    return ids


def _scores(frame: pl.DataFrame) -> pl.Series:
    """The events' ``scores`` struct: one field per ``score:<class>`` column of the frame
    (a multiclass model), else classes "0" and "1" from the binary ``score``."""
    per_class = [c for c in frame.columns if c.startswith("score:")]
    if per_class:
        return frame.select(pl.col(c).alias(c.removeprefix("score:")) for c in per_class).to_struct("scores")
    return pl.DataFrame({"0": 1.0 - frame["score"], "1": frame["score"]}).to_struct("scores")


def write_feedback(lake_dir: Path, frame: pl.DataFrame) -> None:
    """Rows with ``event_id`` and ``label`` (text) appended to the feedback table; their
    ``feedback_time`` is kept where the frame has one (else T0)."""
    n = frame.height
    when = (
        pl.col("feedback_time").dt.cast_time_unit("us")
        if "feedback_time" in frame.columns
        else pl.lit(T0).dt.cast_time_unit("us")
    )
    df = frame.with_columns(
        pl.Series("feedback_id", [str(events.uuid7()) for _ in range(n)]),
        when.alias("feedback_time"),
        pl.lit("m").alias("model"),
        pl.lit(T0.date()).alias("date"),
        pl.lit(T0.hour, pl.Int32).alias("hour"),
    )
    write_deltalake(
        str(lake_dir / lake.FEEDBACK_TABLE),
        df.to_arrow(compat_level=pl.CompatLevel.oldest()),
        mode="append",
        partition_by=lake.PARTITION_BY,
    )


@pytest.fixture(scope="session")
def model_lake_factory():
    """``model_lake_factory(trained_model, dir)`` for fixtures wider than one test."""
    return make_model_lake


@pytest.fixture(scope="session")
def feedback_writer():
    """``feedback_writer(lake_dir, frame)``: ``event_id``, ``label`` rows into the feedback table."""
    return write_feedback


@pytest.fixture(scope="session")
def write_lake():
    """``write_lake(lake_dir, model, version, frame, features, start=, span=, ...)``."""
    return _write_lake


@dataclass
class ModelLake:
    data_dir: Path
    name: str
    version: str
    features: list[str]
    reference: pl.DataFrame
    estimator: object

    def predict(self, df: pl.DataFrame) -> pl.DataFrame:
        proba = self.estimator.predict_proba(df.select(self.features).to_pandas())  # type: ignore[attr-defined]
        classes = self.estimator.classes_  # type: ignore[attr-defined]
        return df.select(self.features).with_columns(
            pl.Series("prediction", classes[proba.argmax(axis=1)]), pl.Series("score", proba[:, -1])
        )

    def drifted(self, factor: float = 1.6) -> pl.DataFrame:
        """The reference with every number feature scaled: drift everywhere."""
        nums = [c for c in self.features if self.reference.schema[c] == pl.Float64]
        return self.predict(self.reference.with_columns([pl.col(c) * factor for c in nums]))


@pytest.fixture
def model_lake(trained_model, tmp_path: Path) -> ModelLake:
    """A fresh data dir with a copy of the session's trained model and an empty lake."""
    return make_model_lake(trained_model, tmp_path)


def make_model_lake(trained_model, tmp_path: Path) -> ModelLake:
    src = trained_model.data_dir / "models" / trained_model.name
    shutil.copytree(src, tmp_path / "models" / trained_model.name)
    art = tmp_path / "models" / trained_model.name / trained_model.version
    meta = artifact.read_metadata(art)
    ref = pl.read_parquet(art / "reference.parquet")
    est = joblib.load(art / "model.joblib")
    return ModelLake(tmp_path, meta.name, meta.version, [f.name for f in meta.features], ref, est)


@pytest.fixture(params=["duckdb", "postgres"])
def warehouse_settings(
    request: pytest.FixtureRequest, tmp_path: Path, pg_dsn: str
) -> Iterator[WarehouseSettings]:
    """Both backends; PostgreSQL is the real server, one schema per test (dropped after)."""
    schema = "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40] + "_" + uuid.uuid4().hex[:6]
    ws = WarehouseSettings(
        data_dir=tmp_path, warehouse_backend=request.param, warehouse_schema=schema, postgres_dsn=pg_dsn
    )
    yield ws
    if request.param == "postgres":
        with psycopg.connect(pg_dsn, autocommit=True) as con:
            con.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            con.execute(f"DROP SCHEMA IF EXISTS {schema}_internal CASCADE")
