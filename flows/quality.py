"""Model quality from ground truth that arrived later, joined by prediction id.

Ground truth comes from feedback events (``/v1/feedback`` → ``inference-feedback``),
landed in the lake's ``inference_feedback`` table with at least ``event_id`` (the
prediction id, i.e. the inference event's id) and ``label``. Until that table exists,
every function here answers "no labels yet" rather than failing.
When an id got feedback twice, the latest (by ``feedback_time`` if present) wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import polars as pl

from common import lake

FEEDBACK_TABLE = lake.FEEDBACK_TABLE


def read_feedback(where: lake.Lake | Path | str, *, with_time: bool = False) -> pl.DataFrame:
    """``event_id``, ``label`` (text): one row per prediction id; empty if no feedback.
    ``with_time`` adds ``feedback_time`` (null where the table lacks it)."""
    empty = pl.DataFrame(schema={"event_id": pl.String, "label": pl.String})
    if with_time:
        empty = empty.with_columns(pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias("feedback_time"))
    con = duckdb.connect()
    try:
        if not lake.register_duckdb(con, where, FEEDBACK_TABLE):
            return empty
        src = FEEDBACK_TABLE
        names = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}
        if not {"event_id", "label"} <= names:
            raise ValueError(
                f"{where}: feedback files need columns event_id and label, found {sorted(names)}"
            )
        order = "feedback_time DESC" if "feedback_time" in names else "1"
        time_col = ""
        if with_time:
            has = "feedback_time" in names
            time_col = ", " + ("feedback_time" if has else "CAST(NULL AS TIMESTAMPTZ)") + " AS feedback_time"
            con.execute("SET TimeZone = 'UTC'")
        df: pl.DataFrame = con.sql(
            "SELECT CAST(event_id AS VARCHAR) AS event_id, CAST(label AS VARCHAR) AS label"
            f"{time_col} FROM {src} "
            f"QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY {order}) = 1"
        ).pl()
    finally:
        con.close()
    return df


@dataclass
class Quality:
    labelled_rows: int
    accuracy: float | None
    reference_accuracy: float | None
    roc_auc: float | None = None
    by_slice: list[dict[str, object]] | None = None  # accuracy over time: where drift hurts

    def to_json(self) -> dict[str, object]:
        return {
            "labelled_rows": self.labelled_rows,
            "accuracy": self.accuracy,
            "reference_accuracy": self.reference_accuracy,
            "roc_auc": self.roc_auc,
            "by_slice": self.by_slice or [],
        }


def accuracy_by_slice(labelled: pl.DataFrame, slices: int = 12) -> list[dict[str, object]]:
    """Accuracy of the labelled predictions on equal time slices of their span."""
    if labelled.is_empty() or "event_time" not in labelled.columns:
        return []
    t0, t1 = labelled["event_time"].min(), labelled["event_time"].max()
    if not isinstance(t0, datetime) or not isinstance(t1, datetime) or t1 <= t0:
        return []
    step = (t1 - t0) / slices
    idx = ((pl.col("event_time") - pl.lit(t0)) / pl.lit(step)).cast(pl.Int32).clip(0, slices - 1)
    df = labelled.with_columns(
        idx.alias("_s"),
        (_normalise_label(labelled["label"]) == _normalise_label(labelled["prediction"])).alias("_ok"),
    )
    agg = df.group_by("_s").agg(pl.len().alias("n"), pl.col("_ok").mean().alias("acc")).sort("_s")
    return [
        {"start": (t0 + step * int(s)).isoformat(), "labelled": int(n), "accuracy": float(a)}
        for s, n, a in agg.iter_rows()
    ]


def join_labels(current: pl.DataFrame, feedback: pl.DataFrame) -> pl.DataFrame:
    """Current rows that have ground truth, with a ``label`` column."""
    if feedback.is_empty() or current.is_empty():
        return current.head(0).with_columns(pl.lit(None, dtype=pl.String).alias("label"))
    return current.with_columns(pl.col("event_id").cast(pl.String)).join(feedback, on="event_id", how="inner")


def _normalise_label(s: pl.Series) -> pl.Series:
    # "1", "1.0" and 1 are the same class
    as_num = s.cast(pl.Float64, strict=False)
    return (
        pl.Series(s.name, [str(x) for x in as_num])
        if as_num.null_count() == s.null_count()
        else s.cast(pl.String)
    )


def accuracy(labels: pl.Series, predictions: pl.Series) -> float | None:
    if labels.len() == 0:
        return None
    return float((_normalise_label(labels) == _normalise_label(predictions)).mean())  # type: ignore[arg-type]


def classification_quality(
    labelled: pl.DataFrame, reference: pl.DataFrame | None, target: str, positive: str | None
) -> Quality:
    ref_acc = None
    if reference is not None and target in reference.columns and "prediction" in reference.columns:
        ref_acc = accuracy(reference[target].cast(pl.String), reference["prediction"].cast(pl.String))
    if labelled.is_empty():
        return Quality(0, None, ref_acc)
    acc = accuracy(labelled["label"], labelled["prediction"])
    auc = None
    if positive is not None and "score" in labelled.columns:
        y = (_normalise_label(labelled["label"]) == _normalise_label(pl.Series([positive]))[0]).to_numpy()
        if 0 < y.sum() < y.size:
            from sklearn.metrics import roc_auc_score

            auc = float(roc_auc_score(y, labelled["score"].fill_null(0.0).to_numpy()))
    return Quality(labelled.height, acc, ref_acc, auc, accuracy_by_slice(labelled))
