"""The typed drift summary reads and writes the same ``summary.json`` as the dict it
replaced: every key in its order, and the summaries of older runs unchanged."""

from __future__ import annotations

import orjson

from flows.outcome import Outcome
from flows.summary import DriftSummary

FULL = {
    "outcome": "drift",
    "run_id": "r1",
    "run_name": "car-loan v1 2026-11-29 19:00-20:00Z",
    "run_time": "2026-11-29T20:05:00+00:00",
    "model": "car-loan",
    "version": "1",
    "window": {"start": "2026-11-29T19:00:00+00:00", "end": "2026-11-29T20:00:00+00:00", "label": "w"},
    "rule": {"drift_share": 0.5, "n_features": 2},
    "reference": {"name": "training reference of v1", "rows": 500},
    "current_rows": 100,
    "sample": {"current_rows": 100, "reference_rows": 500, "note": "all rows"},
    "verdict": {
        "drift": True,
        "drifted_features": ["a"],
        "feature_share": 0.5,
        "drift_share": 0.5,
        "prediction_drift": False,
        "quality_alert": False,
        "reason": "1 of 2 features drifted",
    },
    "columns": [
        {
            "column": "a",
            "method": "wasserstein",
            "score": 0.3,
            "threshold": 0.1,
            "drifted": True,
            "exact": True,
            "role": "feature",
        }
    ],
    "timeline": [
        {"start": "2026-11-29T19:00:00+00:00", "rows": 10, "scores": {"a": None}, "drifted": {"a": False}}
    ],
    "drift_starts": {"a": "2026-11-29T19:05:00+00:00"},
    "prediction_mix": [{"start": "s", "end": "e", "counts": {"yes": 3}}],
    "quality": {"labelled_rows": 0, "accuracy": None},
    "performance": {"available": False, "reason": "x"},
    "episodes": None,
}


def test_a_full_summary_round_trips_key_for_key():
    s = DriftSummary.model_validate(orjson.loads(orjson.dumps(FULL)))
    assert orjson.dumps(s.to_json()) == orjson.dumps(FULL)
    assert s.result() is Outcome.DRIFT and s.has_episodes and s.episodes is None
    assert [c.column for c in s.drifted_columns] == ["a"]


def test_an_old_summary_keeps_its_keys_and_gets_its_outcome(tmp_path):
    old = {k: v for k, v in FULL.items() if k not in ("outcome", "episodes", "rule", "sample")}
    old["verdict"] = {"drift": False, "quality_alert": True, "reason": "estimated quality drop"}
    path = tmp_path / "summary.json"
    path.write_bytes(orjson.dumps(old))
    s = DriftSummary.read(tmp_path)
    assert s.result() is Outcome.QUALITY_DROP
    assert not s.has_episodes  # the report then leaves the episodes section out
    assert s.to_json() == old
