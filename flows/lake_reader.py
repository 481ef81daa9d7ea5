"""Read one model's inference events for a time window from the events Delta table.

Only the files that can hold the window are scanned: DuckDB pushes the filters on the
partition columns (model, date, hour) and on ``event_time`` down into the table's
Arrow dataset (``common.lake.register_duckdb``), which skips files by their partition
values and min/max statistics, and only the requested feature fields are read out of
the ``features`` struct.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb
import polars as pl

from common import lake
from flows.window import Window

SCORE = "score"
PREDICTION = "prediction"
CLASS_SCORE_PREFIX = "score:"  # one column per class: "score:<class>" (a multiclass model's scores)


def class_score_column(label: str) -> str:
    return f"{CLASS_SCORE_PREFIX}{label}"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def read_window(
    where: lake.Lake | Path | str,
    model: str,
    window: Window,
    features: Sequence[str],
    *,
    version: str | None = None,
    score_label: str | None = None,
    class_scores: Sequence[str] = (),
    include_synthetic: bool = False,
) -> pl.DataFrame:
    """Successful inferences in ``[window.start, window.end)``: event_id, event_time, one
    column per feature, prediction (text), if ``score_label`` is given ``score`` (that
    class's probability), and for each of ``class_scores`` (a multiclass model's classes)
    its probability as ``score:<class>``. Failed inferences carry no prediction and are
    left out."""
    cols = ["event_id", "event_time"]
    cols += [f"features.{_ident(f)} AS {_ident(f)}" for f in features]
    cols.append(f"{PREDICTION}")
    if score_label is not None:
        cols.append(f"scores.{_ident(score_label)} AS {SCORE}")
    cols += [f"scores.{_ident(c)} AS {_ident(class_score_column(c))}" for c in class_scores]
    empty = pl.DataFrame(schema={"event_id": pl.String, "event_time": pl.Datetime("us", "UTC")})
    con = duckdb.connect()
    if not lake.register_duckdb(con, where, lake.EVENTS_TABLE):
        con.close()
        return empty
    conds = [
        "model = $model",
        "model_name = $model_name",
        # partition pruning: whole days, then the first and last day's hours
        "date BETWEEN CAST($d0 AS DATE) AND CAST($d1 AS DATE)",
        "(date > CAST($d0 AS DATE) OR hour >= $h0)",
        "(date < CAST($d1 AS DATE) OR hour <= $h1)",
        "event_time >= $start AND event_time < $end",
        "status = 'ok'",
    ]
    params: dict[str, object] = {
        "model": lake.safe_segment(model),
        "model_name": model,
        "d0": window.start.date().isoformat(),
        "d1": window.end.date().isoformat(),
        "h0": window.start.hour,
        "h1": window.end.hour,
        "start": window.start,
        "end": window.end,
    }
    if version is not None:
        conds.append("model_version = $version")
        params["version"] = version
    if not include_synthetic:
        conds.append("NOT coalesce(synthetic, false)")
    sql = f"SELECT {', '.join(cols)} FROM {lake.EVENTS_TABLE} WHERE {' AND '.join(conds)}"
    try:
        con.execute("SET TimeZone = 'UTC'")
        df: pl.DataFrame = con.sql(sql, params=params).pl()
    except duckdb.BinderException as exc:  # a requested feature was never written
        raise ValueError(f"columns: the lake has no such feature for model {model!r}: {exc}") from exc
    finally:
        con.close()
    return df
