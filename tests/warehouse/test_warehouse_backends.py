"""The warehouse interface behaves the same on DuckDB and PostgreSQL: upsert replaces
by key, a failed transaction leaves nothing behind, and the settings name what to fix."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from common.errors import ConfigError, DependencyUnavailable
from warehouse import tables
from warehouse.backends import open_warehouse
from warehouse.settings import WarehouseSettings

H = datetime(2026, 3, 1, 10, tzinfo=UTC)


def _feedback(pairs):
    return pl.DataFrame({"event_id": [p[0] for p in pairs], "label": [p[1] for p in pairs]})


def test_upsert_replaces_rows_by_key(wh):
    assert wh.upsert(tables.FEEDBACK.name, _feedback([("a", "0"), ("b", "1")])) == 2
    wh.upsert(tables.FEEDBACK.name, _feedback([("b", "0"), ("c", "1")]))
    rows = wh.query(f"SELECT event_id, label FROM {wh.schema}.feedback ORDER BY 1")
    assert rows == [("a", "0"), ("b", "0"), ("c", "1")]


def test_composite_key_and_types_round_trip(wh):
    df = pl.DataFrame(
        {
            "model_name": ["m", "m"],
            "model_version": ["1", "2"],
            "day": [H.date(), H.date()],
            "labelled": [10, 20],
            "accuracy": [0.5, None],
        }
    )
    wh.upsert(tables.DAILY_QUALITY.name, df)
    wh.upsert(tables.DAILY_QUALITY.name, df.head(1).with_columns(pl.lit(11).alias("labelled")))
    rows = wh.query(
        f"SELECT model_version, day, labelled, accuracy FROM {wh.schema}.model_quality_daily ORDER BY 1"
    )
    assert rows == [("1", H.date(), 11, 0.5), ("2", H.date(), 20, None)]


def test_failed_transaction_leaves_nothing(wh):
    with pytest.raises(RuntimeError), wh.transaction():
        wh.upsert(tables.FEEDBACK.name, _feedback([("a", "0")]))
        raise RuntimeError("crash between the load and its watermark")
    assert wh.query(f"SELECT count(*) FROM {wh.schema}.feedback") == [(0,)]


def test_postgres_backend_needs_a_dsn_and_names_it(tmp_path):
    with pytest.raises(ConfigError, match="INFERSTREAM_POSTGRES_DSN"):
        open_warehouse(WarehouseSettings(data_dir=tmp_path, warehouse_backend="postgres"))
    bad = WarehouseSettings(
        data_dir=tmp_path, warehouse_backend="postgres", postgres_dsn="postgresql://postgres@127.0.0.1:1/x"
    )
    with pytest.raises(DependencyUnavailable, match="INFERSTREAM_POSTGRES_DSN"):
        open_warehouse(bad)


def test_settings_read_the_shared_postgres_dsn_variable(monkeypatch):
    monkeypatch.setenv("INFERSTREAM_POSTGRES_DSN", "postgresql://u@h/db")
    monkeypatch.setenv("INFERSTREAM_WAREHOUSE_BACKEND", "postgres")
    ws = WarehouseSettings()
    assert (ws.postgres_dsn, ws.warehouse_backend) == ("postgresql://u@h/db", "postgres")
