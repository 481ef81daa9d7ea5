"""BI load flow on both warehouse backends (DuckDB file, real PostgreSQL): a second
run loads nothing and leaves identical tables; events are deduplicated by event id;
aggregates match the lake; a new file reloads only its partition; feedback yields daily
quality."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import polars as pl
import pytest
from deltalake import DeltaTable, write_deltalake

from flows.bi_load import bi_load_flow
from warehouse import tables
from warehouse.backends import open_warehouse

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def _snapshot(ws) -> dict[str, list[tuple]]:
    wh = open_warehouse(ws)
    try:
        out = {}
        for t in tables.ALL:
            cols = [c for c in t.column_names if c != "loaded_at"]
            out[t.name] = wh.query(
                f"SELECT {', '.join(cols)} FROM {t.qualified(wh.schema)} ORDER BY {', '.join(t.key)}"
            )
        return out
    finally:
        wh.close()


@pytest.fixture
def env(warehouse_settings, monkeypatch):
    ws = warehouse_settings
    monkeypatch.setenv("INFERSTREAM_WAREHOUSE_BACKEND", ws.warehouse_backend)
    monkeypatch.setenv("INFERSTREAM_WAREHOUSE_SCHEMA", ws.warehouse_schema)
    monkeypatch.setenv("INFERSTREAM_POSTGRES_DSN", ws.postgres_dsn or "")
    return ws


def test_bi_load_twice_gives_same_tables(
    prefect_harness, env, model_lake, write_lake, feedback_writer, caplog
):
    m, ws = model_lake, env
    lake_dir = m.data_dir / "lake"
    assert ws.data_dir == m.data_dir
    rows = m.predict(m.reference)
    first = rows.head(300)
    ids = write_lake(lake_dir, m.name, m.version, first, m.features, start=T0, span=timedelta(minutes=119))
    # a table written by another tool (or migrated) may repeat events: 50 of hour 10 again
    events_table = str(lake_dir / "inference_events")
    dup = pl.from_arrow(DeltaTable(events_table).to_pyarrow_table(partitions=[("hour", "=", "10")])).head(50)
    write_deltalake(events_table, dup.to_arrow(), mode="append", partition_by=["model", "date", "hour"])
    write_lake(
        lake_dir, m.name, m.version, rows.head(20), m.features, start=T0, synthetic=True, first_offset=5000
    )

    n10 = sum(1 for i in range(300) if i * 119 / 300 < 60)  # events of hour 10
    with caplog.at_level("INFO"):
        r1 = bi_load_flow(data_dir=str(m.data_dir))
    assert r1.files_loaded == 4 and r1.partitions == 2
    # the run's log says it for people, not as a Python repr
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("BI load: ")]
    assert said == [f"BI load: {r1.describe()}"] and "BiLoadResult(" not in said[0], said
    assert said[0].startswith("BI load: loaded 4 new lake file(s) in 2 partition(s): 320 events")
    snap1 = _snapshot(ws)
    events = snap1[tables.EVENTS.name]
    assert len(events) == 320  # 300 + 20 synthetic; the 50 replayed rows deduplicated
    assert {e[0] for e in events} >= set(ids)
    hourly = snap1[tables.HOURLY.name]
    assert [(h[2].astimezone(UTC).hour, h[3], h[4]) for h in hourly] == [(10, n10, 20), (11, 300 - n10, 0)]
    # latency percentiles as numpy computes them over the hour's non-synthetic events
    lat10 = [1.0 + (i % 7) for i in range(300)][:n10]
    assert hourly[0][7] == pytest.approx(np.percentile(lat10, 50))
    assert hourly[0][9] == pytest.approx(np.percentile(lat10, 99))
    mix = orjson.loads(hourly[0][13])
    assert sum(mix.values()) == n10
    fstats = {(f[2].astimezone(UTC).hour, f[3]): f for f in snap1[tables.FEATURE_STATS.name]}
    mean10 = first.head(n10)["mean_radius"].mean()
    assert fstats[(10, "mean_radius")][6] == pytest.approx(mean10)
    assert fstats[(10, "size_band")][10] == first.head(n10)["size_band"].n_unique()

    r2 = bi_load_flow(data_dir=str(m.data_dir))
    assert (r2.files_loaded, r2.event_rows) == (0, 0)
    assert _snapshot(ws) == snap1

    # a new file in hour 11 reloads that partition only; hour 10 untouched
    write_lake(
        lake_dir,
        m.name,
        m.version,
        rows.slice(300, 10),
        m.features,
        start=T0 + timedelta(minutes=90),
        span=timedelta(minutes=5),
        first_offset=300,
    )
    r3 = bi_load_flow(data_dir=str(m.data_dir))
    # one partition reloaded whole: its live files are the first write's and the new one
    assert (r3.files_loaded, r3.partitions) == (2, 1)
    snap3 = _snapshot(ws)
    assert len(snap3[tables.EVENTS.name]) == 330
    assert [h[3] for h in snap3[tables.HOURLY.name]] == [n10, 310 - n10]

    # ground truth for 100 predictions of hour 10: daily quality appears
    labels = first.head(100).with_columns(pl.Series("event_id", ids[:100]))
    truth = labels.select("event_id", pl.col("prediction").cast(pl.String).alias("label"))
    truth = truth.with_columns(
        pl.when(pl.int_range(pl.len()) < 10).then(pl.lit("x")).otherwise(pl.col("label")).alias("label")
    )
    feedback_writer(lake_dir, truth)
    r4 = bi_load_flow(data_dir=str(m.data_dir))
    assert (r4.feedback_rows, r4.quality_rows) == (100, 1)
    q = _snapshot(ws)[tables.DAILY_QUALITY.name]
    assert [(x[2].isoformat(), x[3]) for x in q] == [("2026-03-01", 100)]
    assert q[0][4] == pytest.approx(0.9)
    assert _snapshot(ws) == _snapshot(ws)
