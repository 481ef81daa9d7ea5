"""The maintenance flow's report retention: run folders older than the setting go,
newer ones stay, and the index is rebuilt so it links only to reports that exist."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from flows import index, report
from flows.maintenance import RUN_DIR_FORMAT, maintenance_flow
from flows.summary import DriftSummary


def summary(model: str, run_time: datetime) -> dict:
    start = run_time.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    return {
        "outcome": "no_drift",
        "run_id": f"r-{run_time:%s}",
        "run_time": run_time.isoformat(),
        "model": model,
        "version": "1",
        "window": {"start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat(), "label": "w"},
        "reference": {"name": "training reference of v1", "rows": 100},
        "current_rows": 10,
        "verdict": {"drift": False, "reason": "no drift", "drift_share": 0.5, "feature_share": 0.0},
        "columns": [],
    }


def write_run(root: Path, model: str, run_time: datetime) -> Path:
    run_dir = root / model / run_time.strftime(RUN_DIR_FORMAT)
    report.write_empty_run(run_dir, DriftSummary.model_validate(summary(model, run_time)))
    return run_dir


def test_old_reports_are_removed_and_the_index_follows(prefect_harness, tmp_path):
    root = tmp_path / "reports"
    now = datetime.now(UTC)
    old = [write_run(root, m, now - timedelta(days=d)) for m, d in (("a", 8), ("a", 30), ("b", 9))]
    new = [write_run(root, m, now - timedelta(days=d)) for m, d in (("a", 6), ("b", 0), ("b", 1))]
    (root / "a" / "not-a-run").mkdir()  # not ours: left alone
    index.refresh(root)
    assert len(re.findall(r"report\.html", (root / "index.html").read_text())) == 6

    res = maintenance_flow(data_dir=str(tmp_path), report_retention_days=7)

    assert sorted(res.removed_reports or []) == sorted(str(d) for d in old)
    assert not any(d.exists() for d in old) and all(d.exists() for d in new)
    assert (root / "a" / "not-a-run").is_dir()
    page = (root / "index.html").read_text()
    linked = set(re.findall(r"href='([^']+)/report\.html'", page))
    assert linked == {d.relative_to(root).as_posix() for d in new}
