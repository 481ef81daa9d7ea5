"""Evidently in a drift report (``flows.report``): the snapshots configured like the run,
and their dashboards embedded in the one page (gzip-compressed, drawn by a small loader)."""

from __future__ import annotations

import base64
import gzip
import html
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from flows.reference import ColumnSpec

if TYPE_CHECKING:
    import pandas as pd

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


# Evidently's standalone page (evidently 0.7, ``file_html_template``): the font style in
# the head, then ``var <id> = <dashboard>; var additional_graphs_<id> = <graphs>;``, then
# the bundle. The page is only parsed here; a change of that layout fails loudly.
_DATA = re.compile(r"var (metric_\w+) = (\{.*?\});\s*var additional_graphs_\1 = (\{.*?\});\s*</script>", re.S)
_FONT_STYLE = re.compile(r"<style>.*?</style>", re.S)


def dashboard(snap: Any) -> tuple[str, str]:
    """(font style, ``{"info": ..., "graphs": ...}`` JSON text) of a snapshot's page."""
    page = snap.get_html_str(as_iframe=False)
    m = _DATA.search(page)
    style = _FONT_STYLE.search(page)
    if m is None or style is None:
        raise RuntimeError("Evidently's HTML layout changed: flows/report.py cannot find its dashboard data")
    return style.group(0), '{"info":' + m.group(2) + ',"graphs":' + m.group(3) + "}"


def packed(element_id: str, text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    b64 = base64.b64encode(gzip.compress(raw, compresslevel=9, mtime=0)).decode()
    return f"<script type='application/gzip;base64' id='{element_id}'>{b64}</script>"


def evidently_lib() -> bytes:
    import evidently

    return (Path(evidently.__file__).parent / "nbextension" / "static" / "index.js").read_bytes()


# Inflates the bundle once, then draws every dashboard into its own element.
LOADER = """<script>
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


def evidently_section(key: str, title: str, note: str, data: str) -> str:
    return (
        f"<section class='evidently' id='evidently-{key}'><h2>{html.escape(title)}</h2>"
        f"<p class='note'>{html.escape(note)}</p><p class='note evidently-status'>Drawing the charts…</p>"
        f"<div id='root-{key}' data-dashboard='data-{key}'></div>{packed(f'data-{key}', data)}</section>"
    )
