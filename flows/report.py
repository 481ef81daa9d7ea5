"""A drift run's report: one verdict (the run's, on all rows) with its rule in words,
inline SVG charts, the per-column table, the quality numbers, then Evidently's
distribution charts drawn from a sample and labelled as such; plus the same content
as JSON.

    reports/<model>/<run time>/report.html   self-contained, opens offline
    reports/<model>/<run time>/report.json   summary + Evidently's snapshot dicts
    reports/<model>/<run time>/summary.json  the summary alone (the index reads it)

Evidently's page carries a 3.5 MB script bundle and its plot data; writing one page per
Evidently report (the old way) inlined the bundle twice, and an ``as_iframe`` page sized
its iframe before the frame existed (the quality section was cut at 150 px). Here both
Evidently dashboards are drawn into the one page, without iframes, from one copy of the
bundle; bundle and plot data are stored gzip-compressed (base64) and inflated by the
browser's own ``DecompressionStream``, which keeps a report under 4 MB.
"""

from __future__ import annotations

import base64
import gzip
import html
import os
import re
import warnings
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import polars as pl

from flows import charts
from flows.outcome import COLOURS, LABELS, Outcome
from flows.performance_report import performance_html
from flows.reference import ColumnSpec
from flows.summary import SUMMARY_FILE, DriftSummary, RunWindow
from monitoring.stats import P_VALUE_METHODS

if TYPE_CHECKING:
    import pandas as pd

SUMMARY_ID = "inferstream-summary"
DRIFT_TABLE_ID = "inferstream-drift-table"
EPISODES_ID = "inferstream-episodes"
EVIDENTLY_LIB_ID = "evidently-lib"


def evidently_snapshot(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    specs: Sequence[ColumnSpec],
    methods: dict[str, str],
    *,
    thresholds: dict[str, float] | None = None,
    drift_share: float = 0.5,
    labels: tuple[pl.DataFrame, pl.DataFrame] | None = None,
    classes: Sequence[str] = (),
) -> Any:
    """Evidently configured like the run: the same tests and thresholds per column, the
    dataset-drift share over the features only, and the prediction columns as separate
    value-drift metrics (the run's rule: the prediction drifting is drift on its own).
    Classification quality on labelled rows when ``labels`` (reference, current).

    Evidently (with pandas, scikit-learn, nltk: about 200 MB) is imported here, not when
    the module is: the drift flow draws its charts after the window's own tests, once
    the window is no longer held (``flows.drift``)."""
    from evidently import BinaryClassification, DataDefinition, Dataset, MulticlassClassification, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import ClassificationPreset, DataDriftPreset
    from sklearn.exceptions import UndefinedMetricWarning

    num = [s.name for s in specs if s.kind == "num"]
    cat = [s.name for s in specs if s.kind == "cat"]
    cols = [s.name for s in specs]
    features = [s.name for s in specs if s.role == "feature" and s.name in methods]
    thr = {k: v for k, v in (thresholds or {}).items() if k in methods}
    definition = DataDefinition(numerical_columns=num, categorical_columns=cat)
    items: list[Any] = []
    if features:
        items.append(
            DataDriftPreset(
                columns=features,
                per_column_method={c: methods[c] for c in features},
                per_column_threshold={c: thr[c] for c in features if c in thr} or None,
                drift_share=drift_share,
                include_tests=False,  # the verdict is the run's own (all rows)
            )
        )
    for s in specs:
        if s.role == "prediction" and s.name in methods:
            items.append(ValueDrift(column=s.name, method=methods[s.name], threshold=thr.get(s.name)))
    snap = Report(items).run(
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


_STYLE = (
    "<style>body{font-family:sans-serif;margin:0}#inferstream-summary{margin:16px}"
    "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:3px 6px;text-align:left}"
    ".charts{display:flex;flex-wrap:wrap;gap:8px;max-width:1800px}"
    ".charts svg{border:1px solid #ddd;background:#fff}"
    ".evidently h2{margin:16px}.evidently .note{margin:0 16px;color:#444}</style>"
)


def _page(title: str, body: str, head: str = "") -> str:
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"{_STYLE}{head}</head><body>{body}</body></html>"
    )


def _title(summary: DriftSummary) -> str:
    label = LABELS[summary.result()]
    return f"{label}: {summary.model} v{summary.version} {summary.window.label or ''}"


def write_empty_run(run_dir: Path, summary: DriftSummary) -> tuple[Path, Path]:
    """A run whose window held no rows: the summary alone (nothing to chart)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    page = _page(_title(summary), summary_html(summary))
    out_html, out_json = run_dir / "report.html", run_dir / "report.json"
    _atomic(out_html, page.encode())
    doc = summary.to_json()
    _atomic(run_dir / SUMMARY_FILE, _dumps(doc))
    _atomic(out_json, _dumps(doc))
    return out_html, out_json


# Evidently's standalone page (evidently 0.7, ``file_html_template``): the font style in
# the head, then ``var <id> = <dashboard>; var additional_graphs_<id> = <graphs>;``, then
# the bundle. The page is only parsed here; a change of that layout fails loudly.
_DATA = re.compile(r"var (metric_\w+) = (\{.*?\});\s*var additional_graphs_\1 = (\{.*?\});\s*</script>", re.S)
_FONT_STYLE = re.compile(r"<style>.*?</style>", re.S)


def _dashboard(snap: Any) -> tuple[str, str]:
    """(font style, ``{"info": ..., "graphs": ...}`` JSON text) of a snapshot's page."""
    page = snap.get_html_str(as_iframe=False)
    m = _DATA.search(page)
    style = _FONT_STYLE.search(page)
    if m is None or style is None:
        raise RuntimeError("Evidently's HTML layout changed: flows/report.py cannot find its dashboard data")
    return style.group(0), '{"info":' + m.group(2) + ',"graphs":' + m.group(3) + "}"


def _packed(element_id: str, text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    b64 = base64.b64encode(gzip.compress(raw, compresslevel=9, mtime=0)).decode()
    return f"<script type='application/gzip;base64' id='{element_id}'>{b64}</script>"


def _evidently_lib() -> bytes:
    import evidently

    return (Path(evidently.__file__).parent / "nbextension" / "static" / "index.js").read_bytes()


# Inflates the bundle once, then draws every dashboard into its own element.
_LOADER = """<script>
(async () => {
  const inflate = async (id) => {
    const text = atob(document.getElementById(id).textContent.trim());
    const bytes = Uint8Array.from(text, (c) => c.charCodeAt(0));
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'));
    return await new Response(stream).text();
  };
  const status = (text) =>
    document.querySelectorAll('.evidently-status').forEach((s) => (s.textContent = text));
  try {
    window.global = globalThis;
    const lib = document.createElement('script');
    lib.textContent = await inflate('LIB_ID');
    document.body.appendChild(lib);
    for (const root of document.querySelectorAll('[data-dashboard]')) {
      // Evidently writes NaN into its data: a JavaScript literal, not JSON
      const d = Function('"use strict"; return (' + (await inflate(root.dataset.dashboard)) + ');')();
      window.drawDashboard(d.info, new Map(Object.entries(d.graphs)), root.id);
    }
    status('');
  } catch (e) {
    status('The Evidently charts could not be drawn here (' + e + '); the sections above are complete.');
  }
})();
</script>""".replace("LIB_ID", EVIDENTLY_LIB_ID)


def _evidently_section(key: str, title: str, note: str, data: str) -> str:
    return (
        f"<section class='evidently' id='evidently-{key}'><h2>{html.escape(title)}</h2>"
        f"<p class='note'>{html.escape(note)}</p><p class='note evidently-status'>Drawing the charts…</p>"
        f"<div id='root-{key}' data-dashboard='data-{key}'></div>{_packed(f'data-{key}', data)}</section>"
    )


def write_run(run_dir: Path, summary: DriftSummary, drift_snap: Any, quality_snap: Any) -> tuple[Path, Path]:
    """Write report.html, report.json and summary.json atomically (temp name, then rename)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    sample = summary.sample
    style, drift_data = _dashboard(drift_snap)
    if (
        sample is not None
        and sample.current_rows == summary.current_rows
        and sample.reference_rows == summary.reference.rows
    ):
        title = "Distributions (Evidently, all rows)"
        note = (
            "Same rows, tests and thresholds as the table above; its dataset line counts the features "
            "only (the prediction rule is stated at the top), and the verdict is the one at the top."
        )
    else:
        title = "Distributions (Evidently, sample-based view)"
        drawn_from = sample.note if sample and sample.note is not None else "a sample"
        note = (
            f"Drawn from {drawn_from}: its scores and 'detected' labels are the "
            "sample's and may differ from the all-rows ones above; the verdict is the one at the top."
        )
    sections = [_evidently_section("drift", title, note, drift_data)]
    if quality_snap is not None:
        sections.append(
            _evidently_section(
                "quality",
                "Classification quality (Evidently)",
                "On the labelled predictions of the window (ground truth from feedback) and the reference.",
                _dashboard(quality_snap)[1],
            )
        )
    body = summary_html(summary) + "".join(sections) + _packed(EVIDENTLY_LIB_ID, _evidently_lib()) + _LOADER
    page = _page(_title(summary), body, head=style)
    summary_doc = summary.to_json()
    doc = {
        **summary_doc,
        "evidently": drift_snap.dict(),
        "evidently_quality": quality_snap.dict() if quality_snap else None,
    }
    out_html, out_json = run_dir / "report.html", run_dir / "report.json"
    _atomic(out_html, page.encode())
    _atomic(run_dir / SUMMARY_FILE, _dumps(summary_doc))
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
