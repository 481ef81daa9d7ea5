"""A drift report's summary section (``flows.report``): the verdict with its rule, the
window, the charts, the per-column table, quality, estimated performance and the drift
monitor's episodes, as HTML."""

from __future__ import annotations

import html
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flows import charts
from flows.outcome import COLOURS, LABELS, Outcome
from flows.performance_report import performance_html
from flows.summary import DriftSummary, RunWindow
from monitoring.stats import P_VALUE_METHODS

if TYPE_CHECKING:
    pass

SUMMARY_ID = "inferstream-summary"
DRIFT_TABLE_ID = "inferstream-drift-table"
EPISODES_ID = "inferstream-episodes"


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def duration(start: datetime, end: datetime) -> str:
    minutes = round((end - start).total_seconds() / 60)
    if minutes % 60 == 0:
        return f"{minutes // 60} h"
    return f"{minutes} min"


def window_text(window: RunWindow) -> str:
    """``2026-11-29 19:00 – 20:00 UTC (1 h)``: minute precision, with the length."""
    start, end = _time(window.start), _time(window.end)
    if start is None or end is None:
        return window.label or ""
    tail = f"{end:%H:%M}" if start.date() == end.date() else f"{end:%Y-%m-%d %H:%M}"
    return f"{start:%Y-%m-%d %H:%M} – {tail} UTC ({duration(start, end)})"


def _rule_html(summary: DriftSummary) -> str:
    v, rule = summary.verdict, summary.rule
    n = rule.n_features if rule else None
    share = v.drift_share if v.drift_share is not None else (rule.drift_share if rule else None)
    if share is None:
        share = 0.5
    k = len(v.drifted_features)
    counted = f" Here {k} of {n} features drifted" if n is not None else f" Here {k} features drifted"
    pred = "did" if v.prediction_drift else "did not"
    return (
        f"<p class='rule'><b>Rule.</b> The run is <i>drift</i> when at least {share:.0%} of the features "
        f"drift, or when the prediction (class or score) drifts, whatever the features do."
        f"{counted} and the prediction {pred} drift.</p>"
    )


def _charts_html(summary: DriftSummary) -> str:
    """Per drifted column its score per slice with the threshold; prediction mix and
    volume per slice; accuracy per slice against the reference's."""
    w0, w1 = _time(summary.window.start), _time(summary.window.end)
    if w0 is None or w1 is None:
        return ""
    out = []
    columns = {c.column: c for c in summary.columns}
    tl = summary.timeline
    drifted = [name for name, c in columns.items() if c.drifted]
    for i, name in enumerate(drifted):
        c = columns[name]
        points = [(datetime.fromisoformat(r.start), r.scores.get(name)) for r in tl]
        kind = "p-value, drift below" if c.method in P_VALUE_METHODS else "distance, drift above"
        out.append(
            charts.line_chart(
                f"{name}: {c.method} per time slice ({kind})",
                [charts.Series(name, points, charts.PALETTE[i % len(charts.PALETTE)])],
                w0,
                w1,
                threshold=float(c.threshold),
                y_fmt=".3g",
                css_class="chart drift-chart",
                size=(420, 170),
            )
        )
    mix = summary.prediction_mix
    if mix:
        out.append(
            charts.stacked_bars(
                "Predictions per time slice (volume and mix)",
                [
                    (datetime.fromisoformat(m["start"]), datetime.fromisoformat(m["end"]), m["counts"])
                    for m in mix
                ],
                w0,
                w1,
                css_class="chart mix-chart",
            )
        )
    q = summary.quality
    if q.get("by_slice"):
        acc = [(datetime.fromisoformat(r["start"]), r["accuracy"]) for r in q["by_slice"]]
        series = [charts.Series("accuracy", acc, charts.PALETTE[2])]
        if q.get("reference_accuracy") is not None:
            series.append(
                charts.Series(
                    "reference", [(w0, q["reference_accuracy"]), (w1, q["reference_accuracy"])], "#555", True
                )
            )
        out.append(
            charts.line_chart(
                "Accuracy per time slice (labelled predictions) vs the reference",
                series,
                w0,
                w1,
                y_max=1.0,
                css_class="chart accuracy-chart",
            )
        )
    if not out:
        return ""
    return "<h3>At a glance</h3><div class='charts'>" + "".join(out) + "</div>"


def summary_html(summary: DriftSummary) -> str:
    """The part analysts read first: the one verdict, its rule, the window, the charts,
    the per-column table (all rows) and the quality numbers."""
    outcome = summary.result()
    v = summary.verdict
    colour = COLOURS[outcome]
    rows = []
    for r in summary.columns:
        kind = "p-value" if r.method in P_VALUE_METHODS else "distance"
        rows.append(
            f"<tr><td>{_fmt(r.column)}</td><td>{_fmt(r.role)}</td><td>{_fmt(r.method)} ({kind})</td>"
            f"<td>{_fmt(r.score)}</td><td>{_fmt(r.threshold)}</td>"
            f"<td style='color:{'#b00020' if r.drifted else '#1b5e20'}'>"
            f"{'DRIFT' if r.drifted else 'ok'}</td></tr>"
        )
    first = summary.drift_starts
    starts = "".join(
        f"<li>{_fmt(k)}: from {_fmt(charts.minute(datetime.fromisoformat(t)))}</li>" for k, t in first.items()
    )
    q = summary.quality
    if q.get("labelled_rows"):
        q_html = (
            f"<h3>Quality (ground truth from feedback)</h3><p>{q['labelled_rows']} labelled predictions: "
            f"accuracy {_fmt(q['accuracy'])} (reference {_fmt(q.get('reference_accuracy'))})"
            + (f", ROC AUC {_fmt(q['roc_auc'])}" if q.get("roc_auc") is not None else "")
            + "</p>"
        )
    elif outcome is Outcome.NO_DATA:
        q_html = ""
    else:
        q_html = "<h3>Quality</h3><p>No ground truth has arrived for this window yet.</p>"
    ref = summary.reference
    run_time = summary.run_at
    table = (
        f"<h3>Per-column drift (all rows)</h3><table id='{DRIFT_TABLE_ID}'>"
        "<tr><th>column</th><th>role</th><th>method</th><th>score</th><th>threshold</th><th>verdict</th></tr>"
        + "".join(rows)
        + "</table>"
        if rows
        else ""
    )
    return (
        f"<section id='{SUMMARY_ID}'>"
        f"<h1>Drift report: {_fmt(summary.model)} v{_fmt(summary.version)}</h1>"
        f"<h2 id='verdict' style='color:{colour}'>Verdict: {LABELS[outcome]} – {_fmt(v.reason)}</h2>"
        + (_rule_html(summary) if outcome is not Outcome.NO_DATA else "")
        + (
            "<p><b>Drifted columns:</b> "
            + ", ".join(_fmt(c.column) for c in summary.drifted_columns)
            + "</p>"
            if summary.drifted_columns
            else ""
        )
        + f"<p>Window {_fmt(window_text(summary.window))}; current rows {summary.current_rows}; "
        f"reference {_fmt(ref.name)} ({ref.rows} rows)"
        + (f"; run {_fmt(charts.minute(run_time))}" if run_time else "")
        + ". Every score and verdict above the Evidently sections is computed on all rows.</p>"
        + _charts_html(summary)
        + table
        + (f"<h3>When the drifted columns start drifting</h3><ul>{starts}</ul>" if starts else "")
        + performance_html(summary.performance)
        + q_html
        + episodes_html(summary)
        + "</section>"
    )


def episodes_html(summary: DriftSummary) -> str:
    """The streaming drift monitor's episodes that overlap the window (``flows.episodes``)."""
    if not summary.has_episodes:  # a report from before the monitor's episodes were read
        return ""
    eps = summary.episodes
    head = f"<h3 id='{EPISODES_ID}'>Streaming drift monitor: episodes in this window</h3>"
    if eps is None:
        return head + (
            "<p>Unknown: the lake has no drift_episodes table (the lake consumer lands the drift "
            "monitor's alerts there; is `inferstream consume drift` running?).</p>"
        )
    if not eps:
        return head + "<p>None: the monitor opened no episode for this model version during the window.</p>"
    rows = "".join(
        f"<tr><td>{_fmt(e['column'])}</td><td>{_fmt(charts.minute(datetime.fromisoformat(e['opened_at'])))}"
        + ("" if e["opened_in_window"] else " (before the window)")
        + "</td><td>"
        + (
            "open at the window's end"
            if e["open_at_end"]
            else _fmt(charts.minute(datetime.fromisoformat(e["closed_at"])))
        )
        + f"</td><td>{_fmt(e['method'])}</td><td>{_fmt(e['score_at_open'])}</td>"
        f"<td>{_fmt(e['threshold'])}</td><td><code>{_fmt(e['episode_id'])}</code></td></tr>"
        for e in eps
    )
    return (
        head + f"<p>{len(eps)} episode{'s' if len(eps) != 1 else ''} (times are the monitor's, in UTC; "
        "each is one opening and one closing alert on inference-alerts with this episode id).</p>"
        + f"<table id='{EPISODES_ID}-table'><tr><th>column</th><th>opened</th><th>closed</th>"
        "<th>method</th><th>score at opening</th><th>threshold</th><th>episode id</th></tr>"
        + rows
        + "</table>"
    )
