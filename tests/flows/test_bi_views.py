"""What an analyst sees in the warehouse, on both backends: every view answers its
question without JSON (traffic, errors, HTTP and model latency, prediction mix as rows,
drift per feature per run, accuracy per day), features and scores are rows, every view
and column carries a comment, and the loader's bookkeeping is out of the analyst
schema. A DuckDB load succeeds while another process holds the file open."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import polars as pl
import pytest
from deltalake import DeltaTable

from flows.bi_load import bi_load_flow
from warehouse import tables, views
from warehouse.backends import open_warehouse
from warehouse.settings import WarehouseSettings

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
TIME_COLUMNS = ("run_time", "window_start", "window_end")

COMMENTS_SQL = {
    "duckdb": (
        "SELECT table_name, column_name, comment FROM duckdb_columns() WHERE schema_name = %s "
        "ORDER BY table_name, column_index",
        "SELECT view_name, comment FROM duckdb_views() WHERE schema_name = %s",
    ),
    "postgres": (
        "SELECT c.relname, a.attname, col_description(c.oid, a.attnum) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid "
        "WHERE n.nspname = %s AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'v') "
        "ORDER BY c.relname, a.attnum",
        "SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'v'",
    ),
}


@pytest.fixture
def loaded(prefect_harness, warehouse_settings, model_lake, write_lake, feedback_writer, monkeypatch):
    """300 events over two hours, 5 of them failed, labels for 100, one drift row."""
    ws, m = warehouse_settings, model_lake
    for k, v in (
        ("WAREHOUSE_BACKEND", ws.warehouse_backend),
        ("WAREHOUSE_SCHEMA", ws.warehouse_schema),
        ("POSTGRES_DSN", ws.postgres_dsn or ""),
    ):
        monkeypatch.setenv(f"INFERSTREAM_{k}", v)
    lake_dir = m.data_dir / "lake"
    rows = m.predict(m.reference).head(300)
    ids = write_lake(lake_dir, m.name, m.version, rows, m.features, start=T0, span=timedelta(minutes=119))
    # five failed inferences in hour 10: errors counted, no prediction, no scores
    # (an update of the Delta table: its data files are never rewritten in place)
    table = DeltaTable(str(lake_dir / "inference_events"))
    df = pl.from_arrow(table.to_pyarrow_table(filters=[("hour", "=", 10)]))
    first5 = ", ".join(f"'{i}'" for i in df["event_id"].head(5))
    table.update(
        updates={"status": "'error'", "prediction": "NULL", "scores": "NULL"},
        predicate=f"event_id IN ({first5})",
    )
    fb = pl.DataFrame(
        {
            "event_id": ids[100:200],
            "label": rows.slice(100, 100)["prediction"].cast(pl.String),
            "feedback_time": [T0 + timedelta(hours=5)] * 100,
        },
        schema_overrides={"feedback_time": pl.Datetime("us", "UTC")},
    )
    feedback_writer(lake_dir, fb)
    wh = open_warehouse(ws)
    try:
        wh.upsert(tables.DRIFT_RESULTS.name, _drift_rows(m.name, m.version, m.features[:3]))
    finally:
        wh.close()
    bi_load_flow(data_dir=str(m.data_dir))
    return ws, m, rows, df


def _drift_rows(model: str, version: str, columns: list[str]) -> pl.DataFrame:
    """Two drift runs over ``columns`` as the drift flow records them; the second drifts."""
    return pl.DataFrame(
        [
            {
                "run_id": f"run{i}",
                "run_time": T0 + timedelta(hours=i + 1),
                "model_name": model,
                "model_version": version,
                "window_start": T0,
                "window_end": T0 + timedelta(hours=i + 1),
                "column_name": col,
                "role": "feature",
                "method": "wasserstein",
                "score": 0.05 + 0.2 * i,
                "threshold": 0.1,
                "drifted": i == 1,
                "run_verdict_drift": i == 1,
                "report_url": f"file:///reports/run{i}/report.html",
            }
            for i in range(2)
            for col in columns
        ],
        schema_overrides=dict.fromkeys(TIME_COLUMNS, pl.Datetime("us", "UTC")),
    )


def _q(ws: WarehouseSettings, sql: str, params=()):
    wh = open_warehouse(ws)
    try:
        return wh.query(sql.format(s=ws.warehouse_schema), params)
    finally:
        wh.close()


def test_views_answer_each_question_without_json(loaded):
    ws, m, rows, hour10 = loaded
    n10 = hour10.height
    traffic = _q(ws, "SELECT hour, events, errors, error_rate FROM {s}.v_traffic_hourly ORDER BY hour")
    assert [(t[0].astimezone(UTC).hour, t[1], t[2]) for t in traffic] == [(10, n10, 5), (11, 300 - n10, 0)]
    assert traffic[0][3] == pytest.approx(5 / n10)

    lat = _q(ws, "SELECT http_latency_p99_ms, model_latency_p99_ms FROM {s}.v_latency_hourly ORDER BY hour")
    assert lat[0][0] == pytest.approx(np.percentile([10.0 + i % 13 for i in range(n10)], 99))
    assert lat[0][1] == pytest.approx(np.percentile([1.0 + i % 7 for i in range(n10)], 99))

    mix_sql = "SELECT prediction, predictions, share FROM {s}.v_prediction_mix_hourly WHERE hour = %s"
    mix = _q(ws, mix_sql, (T0,))
    ok = hour10.slice(5)["prediction"].value_counts()
    assert sorted((p, c) for p, c, _ in mix) == sorted(zip(ok["prediction"], ok["count"], strict=True))
    assert sum(s for _, _, s in mix) == pytest.approx(1.0)

    acc = _q(ws, "SELECT day, labelled, realized_accuracy, estimated_accuracy FROM {s}.v_accuracy_daily")
    assert [(a[0].isoformat(), a[1], a[2], a[3]) for a in acc] == [("2026-03-01", 100, 1.0, None)]
    assert _q(ws, "SELECT feedback_time FROM {s}.feedback LIMIT 1")[0][0] == T0 + timedelta(hours=5)


def test_features_and_scores_are_rows(loaded):
    ws, m, rows, hour10 = loaded
    feats = _q(
        ws,
        "SELECT feature, count(*), avg(value_num), count(value_text) FROM {s}.v_event_features GROUP BY 1",
    )
    by = {f[0]: f[1:] for f in feats}
    assert set(by) == set(m.features)
    ok = pl.concat([rows.head(hour10.height).slice(5), rows.slice(hour10.height)])
    for name in m.features:
        count, mean, texts = by[name]
        assert count == texts == 295  # failed events left out of the view
        if ok.schema[name].is_numeric():
            assert mean == pytest.approx(ok[name].cast(pl.Float64).mean())
    scores = _q(ws, "SELECT class_label, count(*), sum(score) FROM {s}.event_scores GROUP BY 1 ORDER BY 1")
    assert [(c, n) for c, n, _ in scores] == [("0", 295), ("1", 295)]
    assert scores[1][2] == pytest.approx(ok["score"].sum())


def test_views_and_columns_carry_comments_and_bookkeeping_is_apart(loaded):
    ws = loaded[0]
    schema = ws.warehouse_schema
    col_sql, view_sql = COMMENTS_SQL[ws.warehouse_backend]
    cols = {(t, c): d for t, c, d in _q(ws, col_sql, (schema,))}
    for v in views.ALL:
        assert [c for c, _ in v.columns] == [c for (t, c) in cols if t == v.name], v.name
    analyst = [t for t in tables.ALL if not t.internal]
    expected = {(v.name, c) for v in views.ALL for c, _ in v.columns}
    expected |= {(t.name, c) for t in analyst for c in t.column_names}
    assert set(cols) == expected  # and nothing else: bi_loaded_files is not here
    assert all(cols.values()), [k for k, d in cols.items() if not d]
    assert {name for name, d in _q(ws, view_sql, (schema,)) if d} == {v.name for v in views.ALL}
    internal = _q(ws, f"SELECT count(*) FROM {tables.LOADED_FILES.qualified(schema)}")
    assert internal == [(2,)]


READER = textwrap.dedent(
    """
    import sys, duckdb
    con = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == "ro")
    def count():
        return con.execute("SELECT count(*) FROM " + sys.argv[3] + ".inference_events").fetchone()[0]
    print(count(), flush=True)
    sys.stdin.readline()  # hold the file open until told
    print(count(), flush=True)
    """
)


@pytest.mark.parametrize("mode", ["ro", "rw"])  # rw: the duckdb CLI's default
def test_duckdb_load_succeeds_while_another_process_holds_the_file(
    prefect_harness, model_lake, write_lake, monkeypatch, mode
):
    m = model_lake
    monkeypatch.setenv("INFERSTREAM_WAREHOUSE_BACKEND", "duckdb")
    ws = WarehouseSettings(data_dir=m.data_dir)
    rows = m.predict(m.reference)
    lake_dir = m.data_dir / "lake"
    write_lake(lake_dir, m.name, m.version, rows.head(100), m.features, start=T0)
    assert bi_load_flow(data_dir=str(m.data_dir)).event_rows == 100
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(ws.duckdb_path), mode, ws.warehouse_schema],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout is not None and reader.stdin is not None
        assert reader.stdout.readline().strip() == "100"  # the reader has the file open
        later = T0 + timedelta(hours=1)
        write_lake(lake_dir, m.name, m.version, rows.slice(100, 50), m.features, start=later)
        assert bi_load_flow(data_dir=str(m.data_dir)).event_rows == 50
        reader.stdin.write("\n")
        reader.stdin.flush()
        assert reader.stdout.readline().strip() == "100"  # its snapshot, unchanged
        assert reader.wait(timeout=30) == 0
    finally:
        reader.kill()
    assert _q(ws, "SELECT count(*) FROM {s}.inference_events") == [(150,)]
    assert not list(ws.duckdb_path.parent.glob(f".{ws.duckdb_path.name}.*"))  # no work file left


def _chromium_dom(page: Path, tmp: Path) -> str:
    exe = shutil.which("chromium")
    assert exe, "chromium is not installed: run .ci/ensure-chromium (make test does)"
    return subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp / 'profile'}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    ).stdout


def test_bi_flow_writes_a_dashboard_that_opens_in_chromium(
    prefect_harness, model_lake, write_lake, monkeypatch, tmp_path
):
    m = model_lake
    monkeypatch.setenv("INFERSTREAM_WAREHOUSE_BACKEND", "duckdb")
    ws = WarehouseSettings(data_dir=m.data_dir)
    rows = m.predict(m.reference)
    lake_dir = m.data_dir / "lake"
    write_lake(lake_dir, m.name, m.version, rows.head(240), m.features, start=T0, span=timedelta(hours=3))
    write_lake(lake_dir, m.name, "v2", rows.slice(240, 60), m.features, start=T0, first_offset=240)
    wh = open_warehouse(ws)
    try:
        wh.upsert(tables.DRIFT_RESULTS.name, _drift_rows(m.name, m.version, m.features[:3]))
    finally:
        wh.close()
    result = bi_load_flow(data_dir=str(m.data_dir))
    assert result.dashboard == m.data_dir / "reports" / "dashboard.html"
    dom = _chromium_dom(result.dashboard, tmp_path)
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", re.sub(r"<(style)\b.*?</\1>", " ", dom, flags=re.S)))
    sections = re.findall(r"<section id=.*?</section>", dom, flags=re.S)
    assert len(sections) == 2  # one per model version
    main = next(s for s in sections if f"version {m.version}<" in s)
    assert "240 events, 0 errors" in text and "60 events, 0 errors" in text
    titles = ("Traffic per hour", "Error rate per hour", "Latency per hour", "Prediction mix", "Drift score")
    assert all(t in main for t in titles)
    # hourly charts: 3 hours → 3 points per series; drift: 3 features x 2 runs
    traffic = re.search(r"Traffic per hour</figcaption>(.*?)</figure>", main, flags=re.S)[1]
    assert traffic.count("<circle") == 2 * 3
    drift = re.search(r"Drift score per feature.*?</figcaption>(.*?)</figure>", main, flags=re.S)[1]
    assert drift.count("<circle") == 6 and all(f in drift for f in m.features[:3])
    assert "DRIFT" in main and "file:///reports/run1/report.html" in main
    accuracy = re.search(r"Accuracy per day</figcaption>(.*?)</figure>", main, flags=re.S)[1]
    assert "no data" in accuracy  # no labels yet: said, not drawn as a flat line
    page = result.dashboard.read_text()  # self-contained: no script, nothing fetched
    assert "<script" not in page and not re.search(r"(src|href)=['\"]?https?:", page)


GRAFANA = Path(__file__).resolve().parents[2] / "deployments" / "grafana" / "dashboards" / "inferstream.json"
RANGE = "'2026-02-01T00:00:00Z' AND '2026-04-01T00:00:00Z'"  # as Grafana expands it
TIME_FILTER = re.compile(r"\$__timeFilter\(((?:[^()]|\([^()]*\))*)\)")


def test_every_grafana_panel_query_runs_on_the_loaded_warehouse(loaded):
    """Each panel's SQL, with Grafana's time macro expanded as Grafana does, returns rows
    in the shape its panel expects (time series: time, metric, value)."""
    ws = loaded[0]
    panels = orjson.loads(GRAFANA.read_bytes())["panels"]
    assert len(panels) == 8
    for p in panels:
        (target,) = p["targets"]
        sql = TIME_FILTER.sub(
            r"\1 BETWEEN '2026-02-01T00:00:00Z' AND '2026-04-01T00:00:00Z'", target["rawSql"]
        )
        assert "$" not in sql, f"{p['title']}: a Grafana macro this test does not expand"
        assert set(re.findall(r"\bbi\.(\w+)", sql)) <= {v.name for v in views.ALL}, "panels read views only"
        wh = open_warehouse(ws)
        try:
            df = wh.frame(re.sub(r"\bbi\.", f"{ws.warehouse_schema}.", sql))
        finally:
            wh.close()
        assert df.height > 0, p["title"]
        if target["format"] == "time_series":
            assert df.columns == ["time", "metric", "value"], p["title"]
            assert df["value"].null_count() < df.height, p["title"]
