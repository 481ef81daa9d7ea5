"""The public ``monitoring.drift``: frames in, typed results out; column kinds inferred
as Evidently infers them; a missing column is an error naming it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest
from evidently import Dataset, Report
from evidently.presets import DataDriftPreset

from monitoring import MissingColumnError, SchemaError, drift
from monitoring.columns import as_polars, resolve_kinds
from monitoring.stats import P_VALUE_METHODS

EV_METHODS = {
    "Wasserstein distance (normed)": "wasserstein",
    "Jensen-Shannon distance": "jensenshannon",
    "K-S p_value": "ks",
    "chi-square p_value": "chisquare",
    "Z-test p_value": "z",
}


def _frames(n_ref: int, n_cur: int, seed: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)

    def make(n: int, cur: bool) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "amount": rng.normal(0, 1, n) + (0.3 if cur else 0.0),
                # integers with <= 10 distinct values: Evidently calls them categorical
                "n_children": rng.choice(np.arange(6), n, p=[0.3, 0.3, 0.2, 0.1, 0.05, 0.05]),
                "rooms": rng.choice(np.arange(10), n) + (rng.random(n) < 0.2 if cur else 0),
                "age": rng.integers(18, 90, n),  # many distinct integers: numerical
                "member": rng.random(n) < (0.55 if cur else 0.5),
                "city": rng.choice(["paris", "rome", "oslo"], n, p=[0.5, 0.3, 0.2]),
            }
        )

    return make(n_ref, False), make(n_cur, True)


def _evidently_default(ref: pd.DataFrame, cur: pd.DataFrame) -> dict[str, tuple[str, bool]]:
    """Evidently with no data definition at all: its own inference and default tests."""
    snap = Report([DataDriftPreset(include_tests=False)]).run(
        Dataset.from_pandas(cur), Dataset.from_pandas(ref)
    )
    out = {}
    for m in snap.dict()["metrics"]:
        cfg = m["config"]
        if cfg["type"].endswith("ValueDrift"):
            method = EV_METHODS[cfg["method"]]
            v, thr = float(m["value"]), float(cfg["threshold"])
            drifted = v <= thr if method == "ks" else v < thr if method in P_VALUE_METHODS else v >= thr
            out[cfg["column"]] = (method, drifted)
    return out


@pytest.mark.parametrize("as_frame", ["pandas", "polars"])
@pytest.mark.parametrize(("n_ref", "n_cur"), [(5_000, 8_000), (600, 700)], ids=["large-ref", "small-ref"])
def test_without_a_schema_methods_and_verdicts_equal_evidentlys_defaults(as_frame, n_ref, n_cur):
    ref, cur = _frames(n_ref, n_cur)
    expected = _evidently_default(ref, cur)
    if as_frame == "polars":
        ref, cur = pl.from_pandas(ref), pl.from_pandas(cur)
    result = drift(ref, cur)
    assert {c.column: (c.method, c.drifted) for c in result} == expected
    # the integer-cardinality rule decides the test, not the dtype
    assert result["n_children"].method != ("wasserstein" if n_ref > 1000 else "ks")
    assert result["age"].method == ("wasserstein" if n_ref > 1000 else "ks")


def test_inferred_kinds_are_evidentlys():
    ref, cur = _frames(300, 300)
    cur["note"] = [f"free text {i}" for i in range(len(cur))]  # mostly distinct: text
    ref["note"] = cur["note"]
    cur["when"] = pd.Timestamp("2026-01-01") + pd.to_timedelta(np.arange(len(cur)), unit="s")
    ref["when"] = cur["when"]
    dd = Dataset.from_pandas(cur).data_definition
    kinds, skipped = resolve_kinds(as_polars(ref, "reference"), as_polars(cur, "current"), None)
    assert sorted(k for k, v in kinds.items() if v == "num") == sorted(dd.numerical_columns or [])
    assert sorted(k for k, v in kinds.items() if v == "cat") == sorted(dd.categorical_columns or [])
    assert set(skipped) == {"note", "when"} and "text" in skipped["note"]


def test_a_missing_column_is_an_error_naming_it():
    ref, cur = _frames(200, 200)
    with pytest.raises(MissingColumnError, match="current frame has no column 'city'"):
        drift(ref, cur.drop(columns=["city"]))
    with pytest.raises(MissingColumnError, match="'citty'"):
        drift(ref, cur, schema={"amount": "num", "citty": "cat"})
    with pytest.raises(MissingColumnError, match="'agee'"):
        drift(ref, cur, columns=["agee"])
    with pytest.raises(SchemaError, match=r"schema\['amount'\]"):
        drift(ref, cur, schema={"amount": "numbers"})


def test_a_schema_overrides_inference_and_results_are_typed():
    ref, cur = _frames(5_000, 5_000)
    result = drift(ref, cur, schema={"n_children": "num", "amount": "numerical", "city": "cat"})
    assert [c.column for c in result] == ["n_children", "amount", "city"]
    # declared numerical, its 6 values get Wasserstein; inferred, it would be categorical
    assert result["n_children"].method == "wasserstein"
    assert drift(ref, cur, columns=["n_children"])["n_children"].method == "jensenshannon"
    assert result["amount"].method == "wasserstein" and result["amount"].drifted
    assert result["amount"].threshold == 0.1 and isinstance(result["amount"].score, float)
    assert result.drifted_columns == [c.column for c in result if c.drifted]
    assert result.drift == (result.share >= 0.5)
