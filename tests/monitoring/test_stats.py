"""monitoring.stats reproduces Evidently's default per-column verdicts (and scores) from
counts and arrays: every test Evidently picks by default (Wasserstein, Jensen-Shannon,
K-S, chi-square, Z), columns placed right at the threshold, and missing values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

from flows.drift_calc import compare, stratified_sample
from flows.reference import ColumnSpec, frame_stats
from monitoring import stats

EV_METHODS = {
    "Wasserstein distance (normed)": "wasserstein",
    "Jensen-Shannon distance": "jensenshannon",
    "K-S p_value": "ks",
    "chi-square p_value": "chisquare",
    "Z-test p_value": "z",
}


def _frames(n_ref: int, n_cur: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, list[ColumnSpec]]:
    rng = np.random.default_rng(seed)

    def make(n: int, cur: bool) -> pd.DataFrame:
        d = {}
        for i in range(8):  # shifts 0 .. 0.14 sd: some below, some at, some above 0.1
            d[f"n{i}"] = rng.normal(0, 1, n) + (0.02 * i if cur else 0.0)
        d["n_nan"] = np.where(rng.random(n) < 0.1, np.nan, rng.exponential(1, n) * (1.2 if cur else 1))
        # <= 5 distinct values: Jensen-Shannon (large ref) or chi-square (small ref)
        d["few"] = rng.choice([0.0, 1.0, 2.0, 3.0], n, p=[0.25] * 4 if not cur else [0.31, 0.23, 0.23, 0.23])
        p = [0.5, 0.3, 0.2] if not cur else [0.42, 0.33, 0.25]
        d["cat"] = rng.choice(["a", "b", "c"], n, p=p)
        d["flag"] = rng.choice(["t", "f"], n, p=[0.5, 0.5] if not cur else [0.45, 0.55])
        return pd.DataFrame(d)

    specs = [ColumnSpec(f"n{i}", "num") for i in range(8)]
    specs += [
        ColumnSpec("n_nan", "num"),
        ColumnSpec("few", "num"),
        ColumnSpec("cat", "cat"),
        ColumnSpec("flag", "cat"),
    ]
    return make(n_ref, False), make(n_cur, True), specs


def _evidently(
    ref: pd.DataFrame, cur: pd.DataFrame, specs: list[ColumnSpec]
) -> dict[str, tuple[str, float, bool]]:
    dd = DataDefinition(
        numerical_columns=[s.name for s in specs if s.kind == "num"],
        categorical_columns=[s.name for s in specs if s.kind == "cat"],
    )
    snap = Report([DataDriftPreset(include_tests=False)]).run(
        Dataset.from_pandas(cur, data_definition=dd), Dataset.from_pandas(ref, data_definition=dd)
    )
    out = {}
    for m in snap.dict()["metrics"]:
        cfg = m["config"]
        if cfg["type"].endswith("ValueDrift"):
            method = EV_METHODS[cfg["method"]]
            v, thr = float(m["value"]), float(cfg["threshold"])
            drifted = v <= thr if method == "ks" else v < thr if method in stats.P_VALUE_METHODS else v >= thr
            out[cfg["column"]] = (method, v, drifted)
    return out


@pytest.mark.parametrize(("n_ref", "n_cur"), [(20_000, 30_000), (800, 600)], ids=["large-ref", "small-ref"])
def test_verdicts_and_scores_match_evidently(n_ref, n_cur):
    ref, cur, specs = _frames(n_ref, n_cur, seed=3)
    expected = _evidently(ref, cur, specs)
    ours = compare(frame_stats(pl.from_pandas(ref), specs), pl.from_pandas(cur), specs)
    got = {r.column: (r.method, r.score, r.drifted) for r in ours}
    assert {k: (m, d) for k, (m, _, d) in got.items()} == {k: (m, d) for k, (m, _, d) in expected.items()}
    for r in ours:
        tol = (
            (1.5 * (np.ptp(ref[r.column].dropna()) / stats.HIST_BINS) / ref[r.column].std())
            if not r.exact
            else 1e-9
        )
        assert r.score == pytest.approx(expected[r.column][1], abs=tol, rel=1e-9), r
    assert sum(d for _, _, d in expected.values()) not in (0, len(expected)), "the data must mix verdicts"


def test_histogram_estimate_near_the_threshold_is_recomputed_exactly():
    rng = np.random.default_rng(0)
    ref = stats.numeric_column(rng.normal(0, 1, 50_000))
    cur_values = rng.normal(0, 1, 200_000)
    exact = stats.column_drift("x", ref, stats.numeric_unsorted(cur_values), "wasserstein")
    assert not exact.exact  # far from 0.1: the estimate decides
    # move the threshold onto the estimate: the band is ambiguous, scipy decides
    near = stats.column_drift(
        "x", ref, stats.numeric_unsorted(cur_values), "wasserstein", threshold=exact.score
    )
    assert near.exact
    from scipy.stats import wasserstein_distance

    assert near.score == pytest.approx(
        wasserstein_distance(ref.sorted_values, cur_values) / np.std(ref.sorted_values)
    )


def test_stratified_sample_keeps_time_and_class_mix():
    n = 100_000
    rng = np.random.default_rng(1)
    df = pl.DataFrame(
        {
            "event_time": pl.datetime_range(
                pl.datetime(2026, 3, 1, time_zone="UTC"),
                pl.datetime(2026, 3, 2, time_zone="UTC"),
                interval="864ms",
                eager=True,
                time_zone="UTC",
            ).head(n),
            "prediction": np.where(rng.random(n) < 0.1, "1", "0"),
        }
    )
    s = stratified_sample(df, 2_000)
    assert 1_950 <= s.height <= 2_100
    assert abs((s["prediction"] == "1").mean() - 0.1) < 0.02
    per_hour = s.group_by(pl.col("event_time").dt.hour()).len()["len"]
    assert per_hour.min() > 0.7 * 2_000 / 24


def test_the_drift_path_loads_neither_scipy_nor_evidently():
    """The window's tests (Wasserstein, Jensen-Shannon, Z, the exact recomputation near the
    threshold) and the drift flow's modules need numpy and polars only: scipy.stats,
    pandas, scikit-learn and Evidently (about 250 MB together) are loaded for the charts,
    after the flow has dropped the window (bench/drift.py measures it)."""
    import subprocess
    import sys
    from pathlib import Path

    code = """
import sys
import numpy as np, polars as pl
import flows.drift
from flows.drift_calc import stratified_sample, timeline
from monitoring import drift
rng = np.random.default_rng(0)
ref = pl.DataFrame({"a": rng.normal(size=5000), "few": rng.choice([0.0, 1.0], 5000),
                    "c": rng.choice(["x", "y", "z"], 5000)})
cur = pl.DataFrame({"a": rng.normal(size=20000) + 0.1 * 1.0, "few": rng.choice([0.0, 1.0], 20000),
                    "c": rng.choice(["x", "y", "z"], 20000)})
r = drift(ref, cur, {"a": "num", "few": "num", "c": "cat"})
assert [c.method for c in r] == ["wasserstein", "jensenshannon", "jensenshannon"], list(r)
small = drift(ref.head(800), cur, {"few": "num"})  # a reference of <= 1000 rows: the Z test
assert small["few"].method == "z", list(small)
# a threshold inside the histogram's error band: recomputed exactly
from monitoring.columns import column_data
from monitoring.stats import column_drift
ra, ca = column_data(ref["a"], "num"), column_data(cur["a"], "num", sort=False)
assert column_drift("a", ra, ca, "wasserstein", threshold=r["a"].score).exact
print(sorted(m for m in ("scipy", "pandas", "sklearn", "evidently") if m in sys.modules))
"""
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env={"PYTHONPATH": str(root)}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def test_numpy_wasserstein_and_jensenshannon_equal_scipys():
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(5)
    for n, m in [(50, 70), (3000, 20000)]:
        u, v = rng.normal(0, 1, n), rng.lognormal(0, 0.5, m)
        assert stats.wasserstein_distance(u, v) == pytest.approx(wasserstein_distance(u, v), rel=1e-12)
        u, v = np.round(u, 1), np.round(v, 1)  # ties
        assert stats.wasserstein_distance(u, v) == pytest.approx(wasserstein_distance(u, v), rel=1e-12)
    p, q = rng.random(6), rng.random(6)
    q[3] = 0.0
    assert stats.jensenshannon(p / p.sum(), q / q.sum()) == pytest.approx(
        jensenshannon(p / p.sum(), q / q.sum()), rel=1e-12
    )
