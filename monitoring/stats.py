"""Per-column drift statistics that reproduce Evidently's default verdicts, fast.

Evidently (0.7) picks a test per column from the reference size and the number of
distinct values (``ref <= 1000``: K-S, chi-square or Z; otherwise normed Wasserstein or
Jensen-Shannon). This module makes the same choice and computes the same quantities
from counts and sorted arrays, so a 1M-row window does not need Evidently's per-row
pandas work. Only the normed Wasserstein distance is approximated: it is computed on
a fine uniform histogram, whose error is provably at most one bin width (each value
moves at most half a bin in either distribution); when the threshold lies inside that
error band the column is recomputed exactly, so verdicts never change.

scipy is imported only by the tests that need it (K-S and chi-square, chosen for a
reference of at most 1000 rows): importing ``scipy.stats`` costs about 75 MB of memory
and 2 s, which a window tested with Wasserstein, Jensen-Shannon and Z does not need.
The exact Wasserstein distance, Jensen-Shannon and Z are computed here with numpy as
scipy computes them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

ColumnKind = Literal["num", "cat"]
Method = Literal["wasserstein", "jensenshannon", "ks", "chisquare", "z"]

DEFAULT_THRESHOLDS: dict[str, float] = {
    "wasserstein": 0.1,
    "jensenshannon": 0.1,
    "ks": 0.05,
    "chisquare": 0.05,
    "z": 0.05,
}
# statistical tests report p-values (drift when small); distances drift when large
P_VALUE_METHODS = frozenset({"ks", "chisquare", "z"})
HIST_BINS = 8192


@dataclass(frozen=True)
class ColumnData:
    """One column's non-missing values: a float array (num; sorted for a reference) or
    counts (cat)."""

    kind: ColumnKind
    n: int
    sorted_values: np.ndarray | None = None
    counts: Mapping[object, int] | None = None

    @property
    def nunique(self) -> int:
        if self.counts is not None:
            return len(self.counts)
        assert self.sorted_values is not None
        v = self.sorted_values
        return int(v.size and 1 + np.count_nonzero(v[1:] != v[:-1]))


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    method: str
    score: float
    threshold: float
    drifted: bool
    exact: bool  # False: a histogram estimate whose verdict is certain (see module doc)


def numeric_column(values: np.ndarray, *, presorted: bool = False) -> ColumnData:
    """Drop NaN and +-inf (as Evidently does) and sort."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return ColumnData("num", int(v.size), v if presorted else np.sort(v))


def numeric_unsorted(values: np.ndarray) -> ColumnData:
    """Like :func:`numeric_column` but leaves the (large, current) array unsorted, and
    does not copy it when every value is finite."""
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    if not finite.all():
        v = v[finite]
    return ColumnData("num", int(v.size), v)


def categorical_column(counts: Mapping[object, int]) -> ColumnData:
    clean = {k: int(c) for k, c in counts.items() if k is not None and c > 0}
    return ColumnData("cat", sum(clean.values()), counts=clean)


def choose_method(ref: ColumnData, cur: ColumnData) -> Method:
    """Evidently's default test for this column (``_get_default_stattest``)."""
    if ref.kind == "cat":
        n_values = len(set(ref.counts or {}) | set(cur.counts or {}))
    else:
        n_values = _union_nunique(ref, cur, limit=5)
    if ref.n <= 1000:
        if n_values <= 5:
            return "chisquare" if n_values > 2 else "z"
        return "ks" if ref.kind == "num" else ("chisquare" if n_values > 2 else "z")
    if ref.kind == "num" and n_values > 5:
        return "wasserstein"
    return "jensenshannon"


def _union_nunique(ref: ColumnData, cur: ColumnData, limit: int) -> int:
    """Distinct values over both columns, exact up to ``limit`` (above, any larger value)."""
    assert ref.sorted_values is not None and cur.sorted_values is not None
    if ref.nunique > limit:
        return ref.nunique
    cur_u = np.unique(cur.sorted_values[:10_000]) if cur.n else np.array([])
    if cur_u.size > limit:
        return int(cur_u.size)
    return int(np.union1d(np.unique(ref.sorted_values), np.unique(cur.sorted_values)).size)


def _as_counts(col: ColumnData) -> dict[object, int]:
    if col.counts is not None:
        return dict(col.counts)
    assert col.sorted_values is not None
    keys, counts = np.unique(col.sorted_values, return_counts=True)
    return {float(k): int(c) for k, c in zip(keys, counts, strict=True)}


def column_drift(
    name: str, ref: ColumnData, cur: ColumnData, method: Method | None = None, threshold: float | None = None
) -> ColumnDrift:
    method = method or choose_method(ref, cur)
    thr = DEFAULT_THRESHOLDS[method] if threshold is None else threshold
    exact = True
    if method == "wasserstein":
        score, exact = _wasserstein_norm(ref, cur, thr)
        drifted = score >= thr
    elif method == "ks":
        assert ref.sorted_values is not None and cur.sorted_values is not None
        from scipy import stats

        score = float(stats.ks_2samp(ref.sorted_values, cur.sorted_values)[1])
        drifted = score <= thr
    else:
        rc, cc = _as_counts(ref), _as_counts(cur)
        keys = list(set(rc) | set(cc))
        r = np.array([rc.get(k, 0) for k in keys], dtype=np.float64)
        c = np.array([cc.get(k, 0) for k in keys], dtype=np.float64)
        if method == "jensenshannon":
            score = jensenshannon(r / ref.n, c / cur.n)
            drifted = score >= thr
        elif method == "chisquare":
            from scipy import stats

            score = float(stats.chisquare(c, r * (cur.n / ref.n))[1])
            drifted = score < thr
        else:
            score = _z_test(rc, cc, ref.n, cur.n)
            drifted = score < thr
    return ColumnDrift(name, method, score, thr, bool(drifted), exact)


def _z_test(rc: dict[object, int], cc: dict[object, int], n1: int, n2: int) -> float:
    keys = set(rc) | set(cc)
    if len(rc) == 1 and len(cc) == 1 and rc.keys() == cc.keys():
        return 1.0
    try:
        first = sorted(keys)[0]  # type: ignore[type-var]
    except TypeError:  # mixed key types: any fixed order will do for a two-valued column
        first = sorted(keys, key=str)[0]
    # Evidently codes the first sorted key as 0 and everything else as 1
    p1 = (n1 - rc.get(first, 0)) / n1
    p2 = (n2 - cc.get(first, 0)) / n2
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2))
    # 2 * (1 - Phi(|z|)) as Evidently computes it with scipy's normal cdf
    return float(2 * (1 - 0.5 * math.erfc(-abs(float(z)) / math.sqrt(2))))


def jensenshannon(p: np.ndarray, q: np.ndarray) -> float:
    """``scipy.spatial.distance.jensenshannon(p, q)`` (natural log), without scipy."""
    p = p / p.sum()
    q = q / q.sum()
    m = (p + q) / 2.0

    def rel_entr(x: np.ndarray) -> float:  # scipy.special.rel_entr summed: 0 where x == 0
        nz = x > 0
        return float(np.sum(x[nz] * np.log(x[nz] / m[nz])))

    return math.sqrt(max(rel_entr(p) + rel_entr(q), 0.0) / 2.0)


def _wasserstein_norm(ref: ColumnData, cur: ColumnData, thr: float) -> tuple[float, bool]:
    r, c = ref.sorted_values, cur.sorted_values
    assert r is not None and c is not None
    norm = max(float(np.std(r)), 0.001)
    lo = min(float(r[0]), float(c.min()))
    hi = max(float(r[-1]), float(c.max()))
    if hi <= lo:
        return 0.0, True
    width = (hi - lo) / HIST_BINS
    rh = np.histogram(r, bins=HIST_BINS, range=(lo, hi))[0]
    ch = np.histogram(c, bins=HIST_BINS, range=(lo, hi))[0]
    approx = float(np.abs(np.cumsum(rh) / r.size - np.cumsum(ch) / c.size)[:-1].sum() * width) / norm
    err = width / norm
    if abs(approx - thr) > err * 1.01 + 1e-12:
        return approx, False
    return wasserstein_distance(r, c) / norm, True


def wasserstein_distance(u: np.ndarray, v: np.ndarray) -> float:
    """``scipy.stats.wasserstein_distance(u, v)`` (scipy's ``_cdf_distance`` with p=1, the
    same steps), without importing scipy: the area between the two empirical CDFs."""
    u_sorted, v_sorted = np.sort(u), np.sort(v)
    all_values = np.concatenate((u, v))
    all_values.sort(kind="mergesort")
    deltas = np.diff(all_values)
    u_cdf = np.searchsorted(u_sorted, all_values[:-1], "right") / u.size
    v_cdf = np.searchsorted(v_sorted, all_values[:-1], "right") / v.size
    return float(np.sum(np.multiply(np.abs(u_cdf - v_cdf), deltas)))
