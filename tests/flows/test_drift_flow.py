"""The drift flow end to end on lakes in the lake's layout, under Prefect's test
harness: drifted data → "Drift detected" (Failed) and a webhook alert; identical data →
Completed; the report, its JSON, the index and the warehouse rows agree; the HTML opens
in headless Chromium and shows the drift tables."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import duckdb
import orjson
import polars as pl
import pytest

from flows.drift import DRIFT_STATE_NAME, drift_flow, run_drift

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
WINDOW = {"start": T0.isoformat(), "end": (T0 + timedelta(hours=1)).isoformat()}


class _Hook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append({"content_type": self.headers["Content-Type"], "body": json.loads(body)})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


class Webhook:
    """A real HTTP server on 127.0.0.1 that records the JSON POSTs it receives."""

    def __enter__(self) -> Webhook:
        _Hook.received = []
        self.server = HTTPServer(("127.0.0.1", 0), _Hook)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.received = _Hook.received
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class DriftRun:
    lake: Any
    state: Any
    received: list[dict]


@pytest.fixture(scope="module")
def drifted_run(prefect_harness, trained_model, tmp_path_factory, model_lake_factory, write_lake) -> DriftRun:
    m = model_lake_factory(trained_model, tmp_path_factory.mktemp("drifted"))
    write_lake(m.data_dir / "lake", m.name, m.version, m.drifted(), m.features)
    # synthetic traffic in the same hour matches the reference: it must not dilute the verdict
    write_lake(
        m.data_dir / "lake",
        m.name,
        m.version,
        m.predict(m.reference),
        m.features,
        synthetic=True,
        first_offset=10_000,
    )
    with Webhook() as hook, pytest.MonkeyPatch.context() as mp:
        mp.setenv("INFERSTREAM_DRIFT_WEBHOOK_URL", hook.url)
        state = drift_flow(model_name=m.name, data_dir=str(m.data_dir), return_state=True, **WINDOW)
        received = list(hook.received)
    return DriftRun(m, state, received)


def _run_dir(data_dir: Path, model: str) -> Path:
    (run_dir,) = [p.parent for p in (data_dir / "reports" / model).glob("*/summary.json")]
    return run_dir


def test_drifted_window_fails_with_named_state_and_alerts(drifted_run):
    m, state, received = drifted_run.lake, drifted_run.state, drifted_run.received
    assert state.is_failed() and state.name == DRIFT_STATE_NAME, state
    run_dir = _run_dir(m.data_dir, m.name)
    summary = orjson.loads((run_dir / "summary.json").read_bytes())
    assert summary["verdict"]["drift"] is True
    assert summary["current_rows"] == m.reference.height  # synthetic rows left out
    drifted = {c["column"] for c in summary["columns"] if c["drifted"]}
    assert {"mean_radius", "worst_area"} <= drifted
    assert "size_band" not in drifted  # categories were not shifted
    # the alert: one JSON POST naming the drifted features and the report
    assert len(received) == 1
    alert = received[0]
    assert alert["content_type"] == "application/json"
    assert alert["body"]["alert"] == "drift_detected"
    assert alert["body"]["model"] == m.name
    assert set(alert["body"]["drifted_features"]) == set(summary["verdict"]["drifted_features"])
    assert alert["body"]["report"] == str(run_dir / "report.html")
    # index lists the run; the warehouse has one row per column with the same verdicts
    index = (m.data_dir / "reports" / "index.html").read_text()
    assert "DRIFT" in index and f"{run_dir.name}/report.html" in index
    con = duckdb.connect(str(m.data_dir / "warehouse.duckdb"), read_only=True)
    rows = con.execute("SELECT column_name, drifted FROM bi.drift_results").fetchall()
    links = con.execute("SELECT DISTINCT report_url FROM bi.drift_results").fetchall()
    con.close()
    assert links == [((run_dir / "report.html").resolve().as_uri(),)]
    assert {c for c, d in rows if d} == drifted
    assert len(rows) == len(summary["columns"])
    doc = orjson.loads((run_dir / "report.json").read_bytes())
    assert doc["evidently"]["metrics"], "report.json carries Evidently's snapshot"


def _chromium_dom(html: Path, tmp: Path) -> str:
    exe = shutil.which("chromium")
    assert exe, "chromium is not installed: run .ci/ensure-chromium (make test does)"
    profile = tmp / "profile"
    out = subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=15000",  # let Evidently's bundled React render
            "--dump-dom",
            html.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    ).stdout
    # text a reader sees: scripts and styles removed (the report's data also sits in a script)
    out = re.sub(r"<(script|style)\b.*?</\1>", " ", out, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", out))


def test_report_opens_in_headless_chromium_and_shows_drift_tables(drifted_run, tmp_path):
    m = drifted_run.lake
    run_dir = _run_dir(m.data_dir, m.name)
    text = _chromium_dom(run_dir / "report.html", tmp_path)
    # the run's own header and table (all rows)
    assert "Verdict: DRIFT" in text
    assert re.search(r"mean_radius feature ks \(p-value\) \S+ 0\.05 DRIFT", text)
    # Evidently's drift table, rendered by its JavaScript (not present as HTML in the file)
    assert "Data Drift Summary" in text
    assert re.search(r"mean_\w+ num Detected K-S p_value", text)
    assert re.search(r"size_band cat Not Detected chi-square p_value", text)
    raw = (run_dir / "report.html").read_text()
    assert "Data Drift Summary" not in re.sub(r"<script\b.*?</script>", "", raw, flags=re.S)
    index = _chromium_dom(m.data_dir / "reports" / "index.html", tmp_path)
    assert f"{m.name} v{m.version} DRIFT" in index


def test_identical_window_completes_without_alert(
    prefect_harness, model_lake, write_lake, feedback_writer, monkeypatch
):
    m = model_lake
    rows = m.predict(m.reference)
    ids = write_lake(m.data_dir / "lake", m.name, m.version, rows, m.features)
    # ground truth for 200 predictions, 20 of them contradicting the model (class flipped)
    truth = rows.head(200).select(pl.col("prediction").cast(pl.Int64).alias("label"))
    truth = truth.with_columns(pl.Series("event_id", ids[:200]))
    truth = truth.with_columns(
        pl.when(pl.int_range(pl.len()) < 20)
        .then(1 - pl.col("label"))
        .otherwise(pl.col("label"))
        .cast(pl.String)
        .alias("label")
    )
    feedback_writer(m.data_dir / "lake", truth)
    with Webhook() as hook:
        monkeypatch.setenv("INFERSTREAM_DRIFT_WEBHOOK_URL", hook.url)
        state = drift_flow(model_name=m.name, data_dir=str(m.data_dir), return_state=True, **WINDOW)
        assert state.is_completed(), state.message
        assert hook.received == []
        out = run_drift(m.data_dir, m.name, start=WINDOW["start"], end=WINDOW["end"])
    assert out.drift is False and out.report_html.is_file()
    assert not any(c["drifted"] for c in out.summary["columns"])
    assert out.summary["current_rows"] == m.reference.height
    assert out.summary["sample"]["note"].startswith("all rows")
    q = out.summary["quality"]
    assert (q["labelled_rows"], q["accuracy"]) == (200, pytest.approx(0.9))
    assert sum(s["labelled"] for s in q["by_slice"]) == 200
    assert "200 labelled predictions: accuracy 0.9" in out.report_html.read_text()


def test_empty_window_completes_and_is_listed(prefect_harness, model_lake):
    m = model_lake
    state = drift_flow(model_name=m.name, data_dir=str(m.data_dir), return_state=True, **WINDOW)
    assert state.is_completed() and "no current rows" in state.message
    assert "no drift" in (m.data_dir / "reports" / "index.html").read_text()
