"""The drift flow end to end on lakes written by the real lake sink, under Prefect's
test harness: drifted data → "Drift detected" (Failed) and a webhook alert; identical
data → Completed; the report, its JSON, the index and the warehouse rows agree."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import duckdb
import orjson
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


@pytest.fixture
def webhook():
    _Hook.received = []
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/alerts", _Hook.received
    server.shutdown()
    server.server_close()


def test_drifted_window_fails_with_named_state_and_alerts(
    prefect_harness, model_lake, write_lake, webhook, monkeypatch
):
    url, received = webhook
    monkeypatch.setenv("INFERSTREAM_DRIFT_WEBHOOK_URL", url)
    m = model_lake
    write_lake(m.data_dir / "lake", m.name, m.version, m.drifted(), m.features)
    # synthetic traffic in the same hour is identical to the reference: it must not dilute
    write_lake(
        m.data_dir / "lake",
        m.name,
        m.version,
        m.predict(m.reference),
        m.features,
        synthetic=True,
        first_offset=10_000,
    )
    state = drift_flow(model_name=m.name, data_dir=str(m.data_dir), return_state=True, **WINDOW)
    assert state.is_failed() and state.name == DRIFT_STATE_NAME
    (run_dir,) = [p.parent for p in (m.data_dir / "reports" / m.name).glob("*/summary.json")]
    summary = orjson.loads((run_dir / "summary.json").read_bytes())
    assert summary["verdict"]["drift"] is True
    assert summary["current_rows"] == m.reference.height  # synthetic rows left out
    drifted = {c["column"] for c in summary["columns"] if c["drifted"]}
    assert {"mean_radius", "worst_area"} <= drifted
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
    con.close()
    assert {c for c, d in rows if d} == drifted
    assert len(rows) == len(summary["columns"])


def test_identical_window_completes_without_alert(
    prefect_harness, model_lake, write_lake, webhook, monkeypatch
):
    url, received = webhook
    monkeypatch.setenv("INFERSTREAM_DRIFT_WEBHOOK_URL", url)
    m = model_lake
    write_lake(m.data_dir / "lake", m.name, m.version, m.predict(m.reference), m.features)
    state = drift_flow(model_name=m.name, data_dir=str(m.data_dir), return_state=True, **WINDOW)
    assert state.is_completed(), state.message
    assert received == []
    out = run_drift(m.data_dir, m.name, start=WINDOW["start"], end=WINDOW["end"])
    assert out.drift is False and out.report_html.is_file()
    assert not any(c["drifted"] for c in out.summary["columns"])
    assert out.summary["current_rows"] == m.reference.height
