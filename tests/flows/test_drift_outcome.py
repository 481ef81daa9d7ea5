"""One table of outcomes: state, exit code, wording; and the artifacts' contents."""

from __future__ import annotations

import logging
from pathlib import Path

from flows import artifacts
from flows.automation import NOTIFY_ON
from flows.outcome import (
    ALERTING,
    EVENTS,
    QUIET_LOGGERS,
    NoData,
    Outcome,
    decide,
    exit_code,
    explain,
    state,
)
from flows.summary import DriftSummary


def test_states_and_exit_codes():
    assert decide(0, False) is Outcome.NO_DATA and decide(0, True) is Outcome.NO_DATA
    assert decide(5, True) is Outcome.DRIFT and decide(5, False) is Outcome.NO_DRIFT
    drift, quiet, silent = (state(o, "m") for o in (Outcome.DRIFT, Outcome.NO_DRIFT, Outcome.NO_DATA))
    assert (drift.is_completed(), drift.name) == (True, "Drift detected")
    assert (quiet.is_completed(), quiet.name) == (True, "No drift")
    assert (silent.is_failed(), silent.name) == (True, "No data")  # never green
    assert [exit_code(s.name, s.is_completed()) for s in (quiet, drift, silent)] == [0, 1, 3]
    assert exit_code("Failed", False) == 2 and exit_code("Crashed", False) == 2
    assert exit_code("Drift detected", False) == 2  # a failed run is an error whatever its name


def test_no_data_leaves_no_engine_traceback():
    """Prefect's engine logs the exception of a final non-Completed state with its
    traceback; "No data" carries a NoData, whose records are dropped, and only those
    (the process-level check is tests/flows/test_drift_engine_logs.py)."""
    assert isinstance(state(Outcome.NO_DATA, "no data: x").data, NoData)

    class Keep(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.seen.append(record.getMessage())

    for name in QUIET_LOGGERS:
        logger, keep = logging.getLogger(name), Keep()
        # only our handler: Prefect's API handler (attached once an earlier test ran a
        # flow) refuses records logged outside a flow run
        handlers, propagate = logger.handlers[:], logger.propagate
        logger.handlers, logger.propagate = [keep], False
        try:
            for exc in (NoData("no data: x"), RuntimeError("broken")):
                try:
                    raise exc
                except Exception:
                    logger.error("exited with %s", type(exc).__name__, exc_info=True)
            logger.error("no exception")
        finally:
            logger.handlers, logger.propagate = handlers, propagate
        assert keep.seen == ["exited with RuntimeError", "no exception"], name


def test_an_estimated_quality_drop_is_a_finding_of_its_own():
    """CBPE's quality drop without input drift: Completed under its own name, exit 4,
    alerting like drift; with input drift too, the run is drift and says both."""
    assert decide(5, False, quality_alert=True) is Outcome.QUALITY_DROP
    assert decide(5, True, quality_alert=True) is Outcome.DRIFT
    assert decide(0, False, quality_alert=True) is Outcome.NO_DATA
    drop = state(Outcome.QUALITY_DROP, "m")
    assert (drop.is_completed(), drop.name) == (True, "Quality drop estimated")
    assert exit_code(drop.name, drop.is_completed()) == 4
    assert Outcome.QUALITY_DROP in ALERTING and EVENTS[Outcome.QUALITY_DROP] in NOTIFY_ON
    old = DriftSummary.model_validate(  # no "outcome" key: a run from before outcomes
        {
            "model": "m",
            "version": "1",
            "reference": {"name": "r", "rows": 1},
            "current_rows": 9,
            "verdict": {"drift": False, "quality_alert": True, "reason": "r"},
            "columns": [],
        }
    )
    assert old.result() is Outcome.QUALITY_DROP
    q = "estimated quality drop (accuracy) in 1 of 12 slices, before labels"
    assert explain(Outcome.QUALITY_DROP, [], 4, 0.5, False, q).startswith(q + "; no drift: 0 of 4")
    assert explain(Outcome.DRIFT, list("abc"), 4, 0.5, False, q).endswith("; " + q)


def test_reason_never_reads_a_low_share_as_the_cause():
    pred_only = explain(Outcome.DRIFT, ["a", "b"], 7, 0.5, True)
    assert pred_only.startswith("prediction drift (drift on its own")
    assert "2 of 7 features drifted (29%, under the 50% share): a, b" in pred_only
    assert explain(Outcome.DRIFT, list("abcd"), 7, 0.5, False) == (
        "4 of 7 features drifted (57%, at or above the 50% share): a, b, c, d"
    )
    assert explain(Outcome.NO_DRIFT, ["a"], 4, 0.5, False).startswith("no drift: 1 of 4 features")
    assert explain(Outcome.NO_DATA, [], 4, 0.5, False).startswith("no data")
    many = explain(Outcome.DRIFT, [f"f{i}" for i in range(10)], 10, 0.5, False)
    assert many.endswith("f0, f1, f2, f3, f4, f5 and 4 more")


SUMMARY = DriftSummary.model_validate(
    {
        "outcome": "drift",
        "model": "Car Loan",
        "version": "3",
        "window": {"start": "2026-11-29T19:00:00+00:00", "end": "2026-11-29T20:00:00+00:00", "label": "w"},
        "current_rows": 1234,
        "reference": {"name": "training reference of v3", "rows": 5000},
        "verdict": {"drift": True, "reason": "prediction drift; 1 of 2 features drifted"},
        "columns": [
            {
                "column": "car_value",
                "role": "feature",
                "method": "wasserstein",
                "score": 0.51781,
                "threshold": 0.1,
                "drifted": True,
            },
            {
                "column": "age",
                "role": "feature",
                "method": "wasserstein",
                "score": 0.02,
                "threshold": 0.1,
                "drifted": False,
            },
        ],
    }
)


def test_artifact_keys_urls_and_contents(tmp_path: Path):
    assert artifacts.key("Car Loan", "3", "summary") == "drift-car-loan-v3-summary"
    html = tmp_path / "reports" / "Car Loan" / "20261129T200500.000000Z" / "report.html"
    html.parent.mkdir(parents=True)
    html.write_text("x")
    root = tmp_path / "reports"
    assert artifacts.report_url(html, root, None) == html.resolve().as_uri()
    assert (
        artifacts.report_url(html, root, "https://r.example/drift/")
        == "https://r.example/drift/Car Loan/20261129T200500.000000Z/report.html"
    )
    md = artifacts.summary_markdown(SUMMARY, "https://r.example/x.html")
    assert "**Verdict:** DRIFT" in md
    assert "**Window:** 2026-11-29 19:00 – 20:00 UTC (1 h)" in md
    assert "**Rows:** 1234 current" in md and "training reference of v3 (5000 rows)" in md
    assert "**Drifted columns:** car\\_value (wasserstein 0.5178)" in md
    assert artifacts.columns_table(SUMMARY)[0] == {
        "column": "car_value",
        "role": "feature",
        "method": "wasserstein",
        "score": 0.51781,
        "threshold": 0.1,
        "verdict": "DRIFT",
    }
    payload = artifacts.event_payload(SUMMARY, "u")
    assert (payload["outcome"], payload["verdict"], payload["drifted_columns"]) == (
        "drift",
        "DRIFT",
        ["car_value"],
    )


def test_quality_table_says_why_nothing_was_estimated():
    # SUMMARY has no performance entry (a run before CBPE, or none estimated)
    assert artifacts.quality_table(SUMMARY) == [{"estimated": "no", "reason": "not estimated in this run"}]
    reason = "multiclass models: no calibration.json"
    summary = SUMMARY.model_copy(update={"performance": {"available": False, "reason": reason}})
    assert artifacts.quality_table(summary) == [{"estimated": "no", "reason": reason}]
