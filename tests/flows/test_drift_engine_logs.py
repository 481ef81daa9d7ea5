"""A "No data" run as a worker runs it: ``python -m prefect.engine <flow run id>`` in
a process of its own, against the test harness's API. Prefect raises the result of
every non-Completed final state at the top of that process and logs it as "Engine
execution exited with unexpected exception" with a traceback; an empty window is an
outcome, not an error, so its run's logs hold neither, the run ends Failed "No data"
and the process exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
WINDOW = {"start": T0.isoformat(), "end": (T0 + timedelta(hours=1)).isoformat()}

pytestmark = pytest.mark.timeout(600)


def _engine_run(entrypoint: str, flow_obj, parameters: dict, tmp_path: Path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.settings import PREFECT_API_URL

    with get_client(sync_client=True) as client:
        run = client.create_flow_run(flow_obj, parameters=parameters)
    env = {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PREFECT__FLOW_ENTRYPOINT": entrypoint,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",
    }
    env.pop("INFERSTREAM_DRIFT_WEBHOOK_URL", None)
    proc = subprocess.run(
        [sys.executable, "-m", "prefect.engine", str(run.id)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    with get_client(sync_client=True) as client:
        final = client.read_flow_run(run.id)
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
    return proc, final, [f"{log.level} {log.message}" for log in logs]


def _check(proc, final, logs) -> None:
    out = proc.stdout + proc.stderr
    assert (final.state.type.value, final.state.name) == ("FAILED", "No data"), (final.state, out[-3000:])
    assert final.state.message.startswith("no data"), final.state.message
    # the run's last line says the outcome; nothing after it
    assert logs[-1].startswith("20 Finished in state No data('no data"), logs[-3:]
    joined = "\n".join(logs)
    assert "Traceback" not in joined and "Engine execution exited" not in joined, joined[-3000:]
    assert "Traceback" not in out and "unexpected exception" not in out, out[-3000:]
    assert proc.returncode == 0, out[-3000:]


def test_a_model_run_without_rows_logs_no_traceback(prefect_harness, model_lake, tmp_path):
    from flows.drift import drift_flow

    m = model_lake
    params = {"model_name": m.name, "data_dir": str(m.data_dir), **WINDOW}
    _check(*_engine_run("flows/drift.py:drift_flow", drift_flow, params, tmp_path))
    assert (m.data_dir / "reports" / "index.html").is_file()  # the run did its job


def test_a_scan_of_a_silent_lake_logs_no_traceback(prefect_harness, model_lake, tmp_path):
    from flows.drift_all import drift_all_flow

    params = {"data_dir": str(model_lake.data_dir), **WINDOW}
    _check(*_engine_run("flows/drift_all.py:drift_all_flow", drift_all_flow, params, tmp_path))
