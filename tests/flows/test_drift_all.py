"""The hourly drift scan covers every model and version that had traffic in the window,
one report each; ``models`` narrows it, and a named model without traffic ends
"No data"."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from common.errors import ConfigError
from flows.drift_all import drift_all_flow, plan

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
WINDOW = {"start": T0.isoformat(), "end": (T0 + timedelta(hours=1)).isoformat()}


def test_plan_takes_every_model_with_traffic_unless_narrowed():
    traffic = [("a", "1", 5), ("a", "2", 3), ("b", "7", 1)]
    assert plan(traffic, None) == [("a", "1"), ("a", "2"), ("b", "7")]
    assert plan(traffic, ["a"]) == [("a", "1"), ("a", "2")]
    assert plan(traffic, ["a@2", "b"]) == [("a", "2"), ("b", "7")]
    assert plan(traffic, ["c"]) == [("c", "latest")]  # named, silent: still run
    assert plan(traffic, ["c@4"]) == [("c", "4")]
    with pytest.raises(ConfigError, match="models"):
        plan(traffic, ["@3"])


def _copy_artifact(data_dir, name, version, new_name, new_version):
    src = data_dir / "models" / name / version
    dst = data_dir / "models" / new_name / new_version
    shutil.copytree(src, dst)
    meta = json.loads((dst / "metadata.json").read_text())
    meta.update(name=new_name, version=new_version)
    (dst / "metadata.json").write_text(json.dumps(meta))


def _reports(data_dir):
    return sorted(
        (s["model"], str(s["version"]), s["outcome"])
        for s in (orjson.loads(p.read_bytes()) for p in (data_dir / "reports").glob("*/*/summary.json"))
    )


def test_scan_runs_one_report_per_model_version_with_traffic(prefect_harness, model_lake, write_lake):
    m = model_lake
    _copy_artifact(m.data_dir, m.name, m.version, m.name, "2")
    _copy_artifact(m.data_dir, m.name, m.version, "quiet-model", "1")
    lake = m.data_dir / "lake"
    write_lake(lake, m.name, m.version, m.drifted(), m.features)
    write_lake(lake, m.name, "2", m.predict(m.reference), m.features, first_offset=10_000)
    # the quiet model's traffic is the hour before the window: not in it
    write_lake(lake, "quiet-model", "1", m.predict(m.reference), m.features, start=T0 - timedelta(hours=1))

    state = drift_all_flow(data_dir=str(m.data_dir), return_state=True, **WINDOW)

    assert state.is_completed() and state.name == "Drift detected", state
    assert _reports(m.data_dir) == [(m.name, m.version, "drift"), (m.name, "2", "no_drift")]

    # narrowed: one version, and a named model that was silent in the window
    shutil.rmtree(m.data_dir / "reports")
    state = drift_all_flow(
        data_dir=str(m.data_dir), models=[f"{m.name}@2", "quiet-model"], return_state=True, **WINDOW
    )
    assert state.is_failed() and state.name == "No data", state
    assert _reports(m.data_dir) == [(m.name, "2", "no_drift"), ("quiet-model", "1", "no_data")]


def test_scan_of_a_silent_lake_is_no_data(prefect_harness, model_lake):
    state = drift_all_flow(data_dir=str(model_lake.data_dir), return_state=True, **WINDOW)
    assert state.is_failed() and state.name == "No data" and "no model had traffic" in state.message
    assert not (model_lake.data_dir / "reports").exists()
