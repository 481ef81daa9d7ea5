"""A drift run's report: Evidently's HTML (charts drawn from a stratified sample)
headed by the run's own summary (verdict and per-column results on all rows), plus the
same content as JSON.

    reports/<model>/<run time>/report.html   self-contained (Evidently inlines its JS)
    reports/<model>/<run time>/report.json   summary + Evidently's snapshot dict
"""

from __future__ import annotations

import html
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import polars as pl
from evidently import BinaryClassification, DataDefinition, Dataset, MulticlassClassification, Report
from evidently.presets import ClassificationPreset, DataDriftPreset
from sklearn.exceptions import UndefinedMetricWarning

from flows.performance_report import performance_html
from flows.reference import ColumnSpec
from monitoring.stats import P_VALUE_METHODS

SUMMARY_ID = "inferstream-summary"
DRIFT_TABLE_ID = "inferstream-drift-table"


def evidently_snapshot(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    specs: Sequence[ColumnSpec],
    methods: dict[str, str],
    *,
    labels: tuple[pl.DataFrame, pl.DataFrame] | None = None,
    classes: Sequence[str] = (),
) -> Any:
    """Evidently's data and prediction drift with the run's own test per column (so the
    charts' verdicts use the same tests as the full-data results); classification
    quality on labelled rows when ``labels`` (reference, current; each with ``label``)."""
    num = [s.name for s in specs if s.kind == "num"]
    cat = [s.name for s in specs if s.kind == "cat"]
    cols = [s.name for s in specs]
    definition = DataDefinition(numerical_columns=num, categorical_columns=cat)
    # no Evidently tests: the verdict is the run's own (all rows); Evidently draws the charts
    items: list[Any] = [DataDriftPreset(columns=cols, per_column_method=methods, include_tests=False)]
    report = Report(items)
    snap = report.run(
        Dataset.from_pandas(_pandas(current, cols), data_definition=definition),
        Dataset.from_pandas(_pandas(reference, cols), data_definition=definition),
    )
    if labels is None:
        return snap, None
    ref_l, cur_l = labels
    task: Any
    if len(classes) == 2:
        task = BinaryClassification(target="label", prediction_labels="prediction", pos_label=classes[-1])
    else:
        task = MulticlassClassification(target="label", prediction_labels="prediction")
    qdef = DataDefinition(categorical_columns=["label", "prediction"], classification=[task])
    with warnings.catch_warnings():
        # few labels so far: a class may have no predictions yet, precision is then 0 by definition
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        quality = Report([ClassificationPreset()]).run(
            Dataset.from_pandas(_pandas(cur_l, ["label", "prediction"]), data_definition=qdef),
            Dataset.from_pandas(_pandas(ref_l, ["label", "prediction"]), data_definition=qdef),
        )
    return snap, quality


def _pandas(df: pl.DataFrame, cols: Sequence[str]) -> pd.DataFrame:
    return df.select([c for c in cols if c in df.columns]).to_pandas()


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def summary_html(summary: dict[str, Any]) -> str:
    """The header analysts read first: verdict, window, sizes, what was sampled, the
    per-column table (all rows) and when each drifted column started drifting."""
    v = summary["verdict"]
    colour = "#b00020" if v["drift"] else "#1b5e20"
    rows = []
    for r in summary["columns"]:
        kind = "p-value" if r["method"] in P_VALUE_METHODS else "distance"
        rows.append(
            f"<tr><td>{_fmt(r['column'])}</td><td>{_fmt(r['role'])}</td><td>{_fmt(r['method'])} ({kind})</td>"
            f"<td>{_fmt(r['score'])}</td><td>{_fmt(r['threshold'])}</td>"
            f"<td style='color:{'#b00020' if r['drifted'] else '#1b5e20'}'>"
            f"{'DRIFT' if r['drifted'] else 'ok'}</td></tr>"
        )
    tl = summary.get("timeline") or []
    tl_html = ""
    if tl:
        names = list(tl[0]["scores"])
        head = "".join(f"<th>{_fmt(n)}</th>" for n in names)
        body = []
        for row in tl:
            cells = "".join(
                f"<td style='color:{'#b00020' if row['drifted'].get(n) else '#1b5e20'}'>"
                f"{_fmt(row['scores'][n])}</td>"
                for n in names
            )
            body.append(f"<tr><td>{_fmt(row['start'])}</td><td>{row['rows']}</td>{cells}</tr>")
        first = summary.get("drift_starts") or {}
        starts = "".join(f"<li>{_fmt(k)}: from {_fmt(t)}</li>" for k, t in first.items())
        tl_html = (
            "<h3>When the drifted columns drift</h3><ul>" + starts + "</ul>"
            "<table border=1 cellpadding=3><tr><th>slice start (UTC)</th><th>rows</th>"
            + head
            + "</tr>"
            + "".join(body)
            + "</table>"
        )
    q = summary.get("quality") or {}
    if q.get("labelled_rows"):
        q_html = (
            f"<h3>Quality (ground truth from feedback)</h3><p>{q['labelled_rows']} labelled predictions: "
            f"accuracy {_fmt(q['accuracy'])} (reference {_fmt(q['reference_accuracy'])})"
            + (f", ROC AUC {_fmt(q['roc_auc'])}" if q.get("roc_auc") is not None else "")
            + "</p>"
            + (
                "<table id='inferstream-quality' border=1 cellpadding=3>"
                "<tr><th>slice start (UTC)</th><th>labelled</th><th>accuracy</th></tr>"
                + "".join(
                    f"<tr><td>{_fmt(r['start'])}</td><td>{r['labelled']}</td><td>{_fmt(r['accuracy'])}</td></tr>"
                    for r in q.get("by_slice") or []
                )
                + "</table>"
                if q.get("by_slice")
                else ""
            )
        )
    else:
        q_html = "<h3>Quality</h3><p>No ground truth has arrived for this window yet.</p>"
    s = summary["sample"]
    return (
        f"<section id='{SUMMARY_ID}' style='font-family:sans-serif;margin:16px'>"
        f"<h1>Drift report: {_fmt(summary['model'])} v{_fmt(summary['version'])}</h1>"
        f"<h2 style='color:{colour}'>Verdict: {'DRIFT' if v['drift'] else 'NO DRIFT'} – "
        f"{_fmt(v['reason'])}</h2>"
        f"<p>Window {_fmt(summary['window']['label'])}; current rows {summary['current_rows']}; "
        f"reference {_fmt(summary['reference']['name'])} ({summary['reference']['rows']} rows); "
        f"run {_fmt(summary['run_time'])}.</p>"
        f"<p><b>Statistics below use all rows.</b> The Evidently charts further down were computed on "
        f"{_fmt(s['note'])}.</p>"
        f"<h3>Per-column drift (all rows)</h3><table id='{DRIFT_TABLE_ID}' border=1 cellpadding=3>"
        "<tr><th>column</th><th>role</th><th>method</th><th>score</th><th>threshold</th><th>verdict</th></tr>"
        + "".join(rows)
        + "</table>"
        + tl_html
        + performance_html(summary.get("performance"))
        + q_html
        + "<hr></section>"
    )


def write_empty_run(run_dir: Path, summary: dict[str, Any]) -> tuple[Path, Path]:
    """A run whose window held no rows: the summary alone (nothing to chart)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'></head><body>{summary_html(summary)}</body></html>"
    )
    out_html, out_json = run_dir / "report.html", run_dir / "report.json"
    _atomic(out_html, page.encode())
    _atomic(run_dir / "summary.json", _dumps(summary))
    _atomic(out_json, _dumps(summary))
    return out_html, out_json


def _inject(page: str, header: str) -> str:
    i = page.find("<body")
    if i < 0:
        return header + page
    j = page.find(">", i) + 1
    return page[:j] + header + page[j:]


def write_run(
    run_dir: Path, summary: dict[str, Any], drift_snap: Any, quality_snap: Any
) -> tuple[Path, Path]:
    """Write report.html and report.json atomically (temp name, then rename)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    page = _inject(drift_snap.get_html_str(as_iframe=False), summary_html(summary))
    if quality_snap is not None:
        qpage = quality_snap.get_html_str(as_iframe=True)
        page = page.replace(
            "</body>", f"<h2 style='font-family:sans-serif'>Classification quality</h2>{qpage}</body>", 1
        )
    doc = {
        **summary,
        "evidently": drift_snap.dict(),
        "evidently_quality": quality_snap.dict() if quality_snap else None,
    }
    out_html, out_json = run_dir / "report.html", run_dir / "report.json"
    _atomic(out_html, page.encode())
    _atomic(run_dir / "summary.json", _dumps(summary))
    _atomic(out_json, _dumps(doc))
    return out_html, out_json


def _dumps(doc: Any) -> bytes:
    opts = orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    return orjson.dumps(doc, option=opts, default=str)


def _atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
