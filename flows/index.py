"""``reports/index.html``: a monitor of every drift run. One section per model and
version (the most recently run first), each with a trend of drift share and accuracy
across its runs (inline SVG) and its runs newest first: verdict, window, rows, links.
Two filters (model, verdict; preset by ``?model=…&verdict=drift``) are a few lines of
inline script; without script every run stays listed.

Rebuilt from the runs' ``summary.json`` files each time, so it never disagrees with
what is on disk (the maintenance flow rebuilds it after removing old reports).
"""

from __future__ import annotations

import html
import os
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import orjson

from flows import charts
from flows.outcome import COLOURS, LABELS, Outcome
from flows.report import window_text
from flows.summary import SUMMARY_FILE, DriftSummary

SUMMARY = SUMMARY_FILE
INDEX = "index.html"


def runs(reports_root: Path) -> list[tuple[Path, DriftSummary]]:
    """Every run with a readable summary, newest first."""
    out = []
    for f in reports_root.glob(f"*/*/{SUMMARY}"):
        try:
            out.append((f.parent, DriftSummary.read(f)))
        except orjson.JSONDecodeError:
            continue  # a run being written; the next refresh lists it
    out.sort(key=lambda x: x[1].run_time or "", reverse=True)
    return out


def _e(v: object) -> str:
    return html.escape(str(v), quote=True)


def _when(s: DriftSummary) -> datetime:
    when = s.window.end or s.run_time
    assert when is not None, "a run's summary has its window's end or its run time"
    return datetime.fromisoformat(when)


def _trend(model: str, version: str, group: list[DriftSummary]) -> str:
    """Drift share of the features and accuracy, one point per run (by window end)."""
    ordered = sorted(group, key=_when)
    share = [(_when(s), None if s.result() is Outcome.NO_DATA else s.verdict.feature_share) for s in ordered]
    acc = [(_when(s), s.quality.get("accuracy")) for s in ordered]
    x0, x1 = _when(ordered[0]), _when(ordered[-1])
    if x0 == x1:  # one run: give the axis a width
        x0 = x0.replace(minute=0, second=0, microsecond=0)
    threshold = next((s.verdict.drift_share for s in ordered if s.verdict.drift_share is not None), None)
    series = [charts.Series("drifted feature share", share, charts.PALETTE[3])]
    if any(v is not None for _, v in acc):
        series.append(charts.Series("accuracy", acc, charts.PALETTE[2]))
    return charts.line_chart(
        f"{model} v{version}: drift share and accuracy per run",
        series,
        x0,
        x1,
        threshold=threshold,
        threshold_label="drift share",
        y_max=1.0,
        css_class="chart trend",
    )


def _row(reports_root: Path, run_dir: Path, s: DriftSummary) -> str:
    outcome = s.result()
    rel = run_dir.relative_to(reports_root).as_posix()
    q = s.quality
    acc = "–" if q.get("accuracy") is None else f"{q['accuracy']:.3f}"
    run_at = s.run_at
    assert run_at is not None, "a run's summary has its run time"
    return (
        f"<tr class='run' data-model='{_e(s.model)}' data-outcome='{outcome.value}'>"
        f"<td>{_e(charts.minute(run_at))}</td>"
        f"<td class='verdict' style='color:{COLOURS[outcome]}'><b>{LABELS[outcome]}</b> "
        f"{_e(s.verdict.reason)}</td>"
        f"<td>{_e(window_text(s.window))}</td><td>{s.current_rows}</td><td>{s.reference.rows}</td>"
        f"<td>{acc}</td>"
        f"<td><a href='{_e(rel)}/report.html'>report</a> · <a href='{_e(rel)}/report.json'>json</a></td></tr>"
    )


_SCRIPT = """<script>
const apply = () => {
  const model = document.getElementById('filter-model').value;
  const outcome = document.getElementById('filter-verdict').value;
  for (const g of document.querySelectorAll('section.model')) {
    let shown = 0;
    for (const r of g.querySelectorAll('tr.run')) {
      const ok = (!model || r.dataset.model === model) && (!outcome || r.dataset.outcome === outcome);
      r.hidden = !ok;
      shown += ok ? 1 : 0;
    }
    g.hidden = shown === 0;
  }
};
// ?model=<name>&verdict=<drift|quality_drop|no_drift|no_data> preselects the filters (a link to a view)
const params = new URLSearchParams(location.search);
for (const [key, id] of [['model', 'filter-model'], ['verdict', 'filter-verdict']]) {
  const el = document.getElementById(id);
  if (params.has(key)) el.value = params.get(key);
  el.addEventListener('change', apply);
}
apply();
</script>"""


def render(reports_root: Path) -> str:
    all_runs = runs(reports_root)
    groups: dict[tuple[str, str], list[tuple[Path, DriftSummary]]] = defaultdict(list)
    for run_dir, s in all_runs:  # newest first, so groups come out most recent first
        groups[(s.model, s.version)].append((run_dir, s))
    sections = []
    for (model, version), members in groups.items():
        rows = "".join(_row(reports_root, d, s) for d, s in members)
        sections.append(
            f"<section class='model' data-model='{_e(model)}'><h2>{_e(model)} v{_e(version)}</h2>"
            + _trend(model, version, [s for _, s in members])
            + "<table><tr><th>run (UTC)</th><th>verdict</th><th>window</th><th>rows</th>"
            "<th>reference rows</th><th>accuracy</th><th>links</th></tr>" + rows + "</table></section>"
        )
    models = sorted({m for m, _ in groups})
    model_opts = "".join(f"<option value='{_e(m)}'>{_e(m)}</option>" for m in models)
    verdict_opts = "".join(f"<option value='{o.value}'>{LABELS[o]}</option>" for o in Outcome)
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>inferstream drift monitor</title>"
        "<style>body{font-family:sans-serif;margin:16px}table{border-collapse:collapse;margin:8px 0 24px}"
        "td,th{border:1px solid #bbb;padding:3px 6px;text-align:left}svg{border:1px solid #ddd}</style>"
        "</head><body><h1>Drift monitor</h1>"
        f"<p>{len(all_runs)} runs of {len(groups)} model versions. "
        "<label>Model <select id='filter-model'><option value=''>all</option>"
        + model_opts
        + "</select></label> <label>Verdict <select id='filter-verdict'><option value=''>all</option>"
        + verdict_opts
        + "</select></label></p>"
        + ("".join(sections) or "<p>No drift runs yet.</p>")
        + _SCRIPT
        + "</body></html>"
    )


def refresh(reports_root: Path) -> Path:
    reports_root.mkdir(parents=True, exist_ok=True)
    page = render(reports_root)
    path = reports_root / INDEX
    tmp = path.with_name(f".{INDEX}.{os.getpid()}.tmp")  # two runs refreshing at once each rename whole
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path
