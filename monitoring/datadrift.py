"""``drift(reference, current)``: one verdict per column, as Evidently's defaults give it.

The drift flow calls :func:`compare` with its cached reference statistics; users call
:func:`drift` with two frames. Both end in ``stats.column_drift``: one implementation.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import polars as pl

from monitoring.columns import as_polars, column_data, resolve_kinds
from monitoring.errors import MissingColumnError
from monitoring.stats import ColumnData, ColumnDrift, Method, column_drift

DEFAULT_DRIFT_SHARE = 0.5  # Evidently's DataDriftPreset: dataset drift when half the columns drift


@dataclass(frozen=True)
class DriftResult:
    """Per-column results (``columns``), the columns left out and why (``skipped``),
    and the dataset verdict: drift when at least ``drift_share`` of the tested columns
    drift (Evidently's rule)."""

    columns: tuple[ColumnDrift, ...]
    drift_share: float = DEFAULT_DRIFT_SHARE
    skipped: Mapping[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> ColumnDrift:
        for c in self.columns:
            if c.column == name:
                return c
        raise MissingColumnError([name], "result")

    def __iter__(self) -> Iterator[ColumnDrift]:
        return iter(self.columns)

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    @property
    def share(self) -> float:
        return len(self.drifted_columns) / len(self.columns) if self.columns else 0.0

    @property
    def drift(self) -> bool:
        return bool(self.drifted_columns) and self.share >= self.drift_share

    def to_dicts(self) -> list[dict[str, Any]]:
        return [asdict(c) for c in self.columns]


def compare(
    reference: Mapping[str, ColumnData],
    current: pl.DataFrame,
    kinds: Mapping[str, str],
    methods: Mapping[str, str] | None = None,
) -> list[ColumnDrift]:
    """One result per column of ``kinds`` with data on both sides. The current frame's
    columns are taken one at a time (a 1M-row window is never copied whole)."""
    out = []
    for name, kind in kinds.items():
        ref = reference.get(name)
        if ref is None or ref.n == 0 or name not in current.columns:
            continue
        cur = column_data(current[name], kind, sort=False)
        if cur.n == 0:
            continue
        method: Method | None = (methods or {}).get(name)  # type: ignore[assignment]
        out.append(column_drift(name, ref, cur, method))
    return out


def drift(
    reference: Any,
    current: Any,
    schema: Mapping[str, str] | None = None,
    *,
    columns: Sequence[str] | None = None,
    drift_share: float = DEFAULT_DRIFT_SHARE,
    methods: Mapping[str, str] | None = None,
) -> DriftResult:
    """Test every column (or ``columns``, or the ``schema``'s) of two pandas or polars
    frames with Evidently's default test for it, on all rows.

    ``schema`` maps column names to ``"num"`` or ``"cat"``; without it the kinds are
    inferred as Evidently infers them (see ``monitoring.columns``). A column missing
    from either frame raises ``MissingColumnError`` naming it. ``methods`` overrides the
    test per column (``wasserstein``, ``jensenshannon``, ``ks``, ``chisquare``, ``z``).
    A column with no values on one side is reported in ``skipped``."""
    ref, cur = as_polars(reference, "reference"), as_polars(current, "current")
    kinds, skipped = resolve_kinds(ref, cur, schema, list(columns) if columns is not None else None)
    stats = {name: column_data(ref[name], kind) for name, kind in kinds.items()}
    results = compare(stats, cur, kinds, methods)
    tested = {r.column for r in results}
    skipped = {**skipped, **{n: "no values on one side" for n in kinds if n not in tested}}
    return DriftResult(tuple(results), drift_share, skipped)
