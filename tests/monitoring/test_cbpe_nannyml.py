"""monitoring.cbpe against NannyML 0.13.1 itself: the fixture ``nannyml_cbpe.json`` holds
NannyML's per-chunk CBPE results on the data its wheel ships (written by
tests/fixtures/make_nannyml_cbpe.py in a separate environment; nannyml is never
installed here). Estimated ROC AUC and accuracy per chunk within 0.005, the same alerts,
none on the reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monitoring import CBPE, estimate_performance
from monitoring.cbpe import METRICS, PerformanceResult

from .conftest import read_csv

FIXTURE = Path(__file__).parent.parent / "fixtures" / "nannyml_cbpe.json"
TOLERANCE = 0.005


@pytest.fixture(scope="module")
def nannyml() -> dict:
    return json.loads(FIXTURE.read_text())


def _car_loan(whl):
    ref = read_csv(whl, "synthetic_car_loan_reference")
    ana = read_csv(whl, "synthetic_car_loan_analysis").join(
        read_csv(whl, "synthetic_car_loan_analysis_target"), on="id"
    )
    return ref, ana


def _multiclass(whl):
    ref = read_csv(whl, "mc_reference")
    ana = read_csv(whl, "mc_analysis").join(read_csv(whl, "mc_analysis_gt"), on="id")
    return ref, ana


def _compare(ours: PerformanceResult, theirs: list[dict]) -> None:
    mine = ours.reference_slices + ours.slices
    assert [(s.period, s.rows) for s in mine] == [
        (c["period"], c["end_index"] - c["start_index"] + 1) for c in theirs
    ]
    for s, c in zip(mine, theirs, strict=True):
        for m in METRICS:
            e, n = s.metrics[m], c[m]
            where = f"{s.period} chunk {s.key} {m}"
            if m in ("roc_auc", "accuracy"):
                assert e.value == pytest.approx(n["value"], abs=TOLERANCE), where
            assert e.sampling_error == pytest.approx(n["sampling_error"], abs=1e-9), where
            assert e.alert == n["alert"], where
            assert e.realized == pytest.approx(n["realized"], abs=1e-9), where
            assert (e.lower_threshold, e.upper_threshold) == pytest.approx(
                (n["lower_threshold"], n["upper_threshold"]), abs=1e-9
            ), where


def test_car_loan_matches_nannyml(nannyml_data, nannyml):
    ref, ana = _car_loan(nannyml_data)
    expected = nannyml["car_loan"]
    ours = estimate_performance(
        ref,
        ana,
        target="repaid",
        prediction="y_pred",
        scores="y_pred_proba",
        chunk_size=expected["chunk_size"],
    )
    _compare(ours, expected["chunks"])
    assert ours.calibrated == {"1": expected["needs_calibration"]}
    assert not any(s.alerts for s in ours.reference_slices)
    # the drop in the second half of the analysis period is caught before any label
    alerted = [s.key for s in ours.slices if "roc_auc" in s.alerts]
    assert alerted == [c["key"] for c in expected["chunks"] if c["roc_auc"]["alert"]] and alerted


def test_multiclass_matches_nannyml(nannyml_data, nannyml):
    ref, ana = _multiclass(nannyml_data)
    expected = nannyml["multiclass"]
    scores = {c: f"y_pred_proba_{c}" for c in expected["classes"]}
    ours = estimate_performance(
        ref, ana, target="y_true", prediction="y_pred", scores=scores, chunk_size=expected["chunk_size"]
    )
    _compare(ours, expected["chunks"])
    assert not any(s.alerts for s in ours.reference_slices)


def test_stored_calibration_gives_the_same_estimates(nannyml_data):
    """What training stores in the artifact reproduces the estimates without refitting."""
    ref, ana = _car_loan(nannyml_data)
    kw = {"target": "repaid", "prediction": "y_pred", "scores": "y_pred_proba"}
    fitted = CBPE(**kw).fit(ref)
    stored = json.loads(json.dumps(fitted.calibration_json()))
    a = fitted.estimate(ana.drop("repaid"), chunk_size=5000)
    b = estimate_performance(ref, ana.drop("repaid"), chunk_size=5000, calibration=stored, **kw)
    assert [s.metrics["roc_auc"].value for s in a.slices] == [s.metrics["roc_auc"].value for s in b.slices]
    assert all(m.realized is None for s in a.slices for m in s.metrics.values())  # no labels yet
    assert a.mae == dict.fromkeys(METRICS)
