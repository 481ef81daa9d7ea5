"""Frames in, per-column statistics out: pandas or polars frames, the column types
Evidently (0.7) would infer, and a column's values as ``stats.ColumnData``.

Evidently's default inference (``evidently.core.datasets.infer_column_type``), applied
to a pandas column: floats are numerical; integers are categorical when they hold at
most 10 distinct values, else numerical; booleans and pandas categoricals are
categorical; strings are categorical unless more than half the non-missing values are
distinct (then text); datetimes are timestamps. Text, datetime and unknown columns get
no drift test here (Evidently tests text with a model, not a statistic): they are
reported as skipped with the reason. A polars column is judged as its pandas conversion
would be (an integer column with nulls becomes float in pandas, hence numerical).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeGuard

import numpy as np
import polars as pl

from monitoring.errors import MissingColumnError, SchemaError
from monitoring.stats import ColumnData, categorical_column, numeric_column, numeric_unsorted

Kind = Literal["num", "cat"]
INTEGER_CARDINALITY_LIMIT = 10  # Evidently 0.7's INTEGER_CARDINALITY_LIMIT
_KIND_NAMES: dict[str, Kind] = {
    "num": "num",
    "numerical": "num",
    "numeric": "num",
    "cat": "cat",
    "categorical": "cat",
}


def is_kind(value: str) -> TypeGuard[Kind]:
    """Whether ``infer_kind``'s answer is a kind (``"num"``/``"cat"``) rather than a reason to skip."""
    return value in ("num", "cat")


def as_polars(frame: Any, name: str) -> pl.DataFrame:
    """A polars frame from a polars or pandas one (pandas numeric columns are not copied)."""
    if isinstance(frame, pl.DataFrame):
        return frame
    if isinstance(frame, pl.LazyFrame):
        return frame.collect()
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(frame, pd.DataFrame):
        return pl.from_pandas(frame)
    raise SchemaError(f"{name}: expected a pandas or polars DataFrame, got {type(frame).__name__}")


def require(frame: pl.DataFrame, columns: list[str], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MissingColumnError(missing, name)


def infer_kind(series: pl.Series) -> Kind | str:
    """``"num"``/``"cat"``, or the reason the column gets no drift test (see module doc)."""
    dt = series.dtype
    if dt.is_float():
        return "num"
    if dt.is_integer():
        if series.null_count():
            return "num"  # pandas holds an integer column with nulls as float64
        return "cat" if series.n_unique() <= INTEGER_CARDINALITY_LIMIT else "num"
    if dt == pl.Boolean:
        # pandas: bool without nulls is categorical; with nulls an object column of
        # True/False/None, which Evidently leaves unknown
        return "cat" if not series.null_count() else "skipped: boolean with missing values (pass a schema)"
    if dt in (pl.Categorical, pl.Enum):
        return "cat"
    if dt == pl.String:
        non_null = series.len() - series.null_count()
        if non_null == 0:
            return "skipped: no values"
        if series.n_unique() - (1 if series.null_count() else 0) > non_null * 0.5:
            return "skipped: text (more than half the values are distinct; pass a schema to test it)"
        return "cat"
    if dt.is_temporal():
        return "skipped: datetime"
    return f"skipped: unsupported type {dt}"


def resolve_kinds(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    schema: Mapping[str, str] | None,
    columns: list[str] | None = None,
) -> tuple[dict[str, Kind], dict[str, str]]:
    """Which columns to test and how: ``(kinds, skipped)``.

    With a schema, its columns (each ``num``/``numerical`` or ``cat``/``categorical``)
    must be in both frames. Without one, the columns are ``columns`` or every column of
    the reference, each must be in the current frame, and the current frame's values
    decide the kind, as in Evidently (its report infers on the current dataset)."""
    if schema is not None:
        kinds: dict[str, Kind] = {}
        for col, kind in schema.items():
            k = _KIND_NAMES.get(str(kind).lower())
            if k is None:
                raise SchemaError(f"schema[{col!r}]: expected 'num' or 'cat', got {kind!r}")
            kinds[col] = k
        names = list(kinds)
    else:
        names = list(columns) if columns is not None else list(reference.columns)
    require(reference, names, "reference")
    require(current, names, "current")
    if schema is not None:
        return kinds, {}
    kinds, skipped = {}, {}
    for name in names:
        inferred = infer_kind(current[name])
        if is_kind(inferred):
            kinds[name] = inferred
        else:
            skipped[name] = inferred.removeprefix("skipped: ")
    return kinds, skipped


def column_data(series: pl.Series, kind: str, *, sort: bool = True) -> ColumnData:
    """``sort=False`` for the (possibly huge) current window: no test needs it sorted."""
    if kind == "num":
        if series.dtype not in (pl.Float64, pl.Float32):
            series = series.cast(pl.Float64, strict=False)
        values = (series.drop_nulls() if series.null_count() else series).to_numpy()  # zero-copy
        if values.dtype != np.float64:
            values = values.astype(np.float64)
        return numeric_column(values) if sort else numeric_unsorted(values)
    vc = series.drop_nulls().value_counts()
    return categorical_column(dict(zip(vc[series.name].to_list(), vc["count"].to_list(), strict=True)))


def label_text(s: pl.Series) -> pl.Series:
    """Class labels as text, ``1``, ``1.0`` and ``"1"`` being one class."""
    if s.dtype == pl.Boolean:
        return s.cast(pl.String).str.to_lowercase()
    as_num = s.cast(pl.Float64, strict=False)
    if s.dtype.is_numeric() or (as_num.null_count() == s.null_count() and s.len() > s.null_count()):
        integral = as_num.drop_nulls()
        if integral.len() == 0 or bool((integral == integral.round(0)).all()):
            return as_num.cast(pl.Int64).cast(pl.String)
        return as_num.cast(pl.String)
    return s.cast(pl.String)
