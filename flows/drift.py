"""Drift flow: one model's recent traffic against its reference, every hour.

Parameters choose the model, the current window (``last_hour``/``last_day`` or an
explicit ``start``/``end``), the reference (``artifact``: the training reference saved
with the model; ``window``: a past window given by ``reference_start``/``_end``) and
the columns. Synthetic traffic is left out unless ``include_synthetic``.

Verdicts come from per-column tests on all rows (``monitoring.stats``, Evidently's default
tests reproduced); Evidently draws the report's charts from a stratified sample of at
most ``INFERSTREAM_DRIFT_SAMPLE_ROWS`` rows a side, and the report says so.

Quality: for a classifier whose artifact holds CBPE's calibration, the window's
quality is estimated per slice before any label (``flows.performance``), with the
realized quality beside it where feedback has landed.

Outcome (``flows.outcome``): drift → Completed "Drift detected"; an estimated quality
drop without input drift → Completed "Quality drop estimated" (a finding, like drift);
no drift → Completed "No drift"; no rows in the window → Failed "No data" (never
green). Each run is named after its model, version and window (``car-loan v1
2026-11-29 19:00-20:00Z``), is tagged ``model:<name>`` and ``version:<v>``, leaves four
artifacts (one the estimated vs realized quality per slice) and an event
(``flows.artifacts``), records its results with the report's URL in the warehouse,
lists the streaming drift monitor's episodes that overlap its window
(``flows.episodes``, from the lake's ``drift_episodes`` table), pushes its scores to
the optional INFERSTREAM_PUSHGATEWAY_URL,
and on drift, quality drop or no data POSTs a JSON alert to the optional
INFERSTREAM_DRIFT_WEBHOOK_URL. Failed without the name "No data" means a real error.

The flow is here; its steps are beside it: ``flows.drift_inputs`` (the window, the
reference, the tests), ``flows.drift_digest`` (the summary and the report) and
``flows.drift_deliver`` (warehouse, Pushgateway, artifacts, webhook).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import State, flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run

from common import artifact
from common.errors import ConfigError
from flows import artifacts, drift_calc, performance
from flows import outcome as outcomes
from flows.drift_deliver import publish, push_scores, record_results, send_alert, store_report
from flows.drift_digest import render, summarise
from flows.drift_inputs import Inputs, compute, load_inputs
from flows.settings import FlowSettings
from flows.summary import DriftSummary
from flows.window import Window, resolve
from warehouse.settings import WarehouseSettings

DRIFT_STATE_NAME = outcomes.STATE_NAMES[outcomes.Outcome.DRIFT]
QUALITY_STATE_NAME = outcomes.STATE_NAMES[outcomes.Outcome.QUALITY_DROP]


__all__ = [
    "DRIFT_STATE_NAME",
    "QUALITY_STATE_NAME",
    "DriftOutcome",
    "Inputs",
    "drift_flow",
    "run_drift",
    "window_span",
]


@dataclass
class DriftOutcome:
    outcome: outcomes.Outcome
    drift: bool
    reason: str
    report_html: Path | None  # None when the reports are kept in object storage
    report_json: Path | None
    summary: DriftSummary
    report_url: str | None = None  # where the report is kept (file:// or s3://) or served


def run_name() -> str:
    """``car-loan v1 2026-11-29 19:00-20:00Z``: model, version (``latest`` resolved to
    the artifact it means) and the window the run covers. Falls back to the raw
    parameters when they are wrong: the run then fails with the error that says so."""
    p = flow_run.get_parameters()
    name, version = str(p.get("model_name", "car-loan")), str(p.get("model_version", "latest"))
    try:
        override = {"data_dir": Path(p["data_dir"])} if p.get("data_dir") else {}
        models_dir = FlowSettings(**override).models_dir  # type: ignore[arg-type]
        version = artifact.resolve_dir(models_dir, name, version).name
    except (ConfigError, OSError, ValueError):
        pass  # a name only: the flow itself fails with the error that names the fix
    try:
        w = resolve(str(p.get("window", "last_hour")), p.get("start"), p.get("end"))
    except ConfigError:
        return f"{name} v{version} {p.get('window', '')}"
    return f"{name} v{version} {window_span(w)}"


def window_span(w: Window) -> str:
    end = f"{w.end:%H:%M}" if w.end.date() == w.start.date() else f"{w.end:%Y-%m-%d %H:%M}"
    return f"{w.start:%Y-%m-%d %H:%M}-{end}Z"


def _tag_run(model: str, version: str) -> None:
    """Tags ``model:<name>`` and ``version:<v>`` on this flow run (the version is known
    only once ``latest`` is resolved, so the decorator cannot carry them)."""
    run_id = flow_run.get_id()
    if run_id is None:
        return
    tags = sorted({*flow_run.get_tags(), f"model:{model}", f"version:{version}"})
    with get_client(sync_client=True) as client:
        client.update_flow_run(UUID(str(run_id)), tags=tags)


# each drift run this process ran, by flow run id, until ``run_drift`` (which calls the
# flow here) takes its own
_RUNS: dict[str, DriftOutcome] = {}
_RUNS_KEPT = 64


def _outcome(summary: DriftSummary, files: tuple[Path, Path] | None, url: str) -> DriftOutcome:
    """``files``: report.html and report.json when they stay on this machine."""
    html, js = files or (None, None)
    return DriftOutcome(
        summary.result(), summary.verdict.drift, summary.verdict.reason, html, js, summary, url
    )


def _remember(run_id: str, out: DriftOutcome) -> None:
    _RUNS[run_id] = out
    while len(_RUNS) > _RUNS_KEPT:  # a long-lived worker runs many; nobody asks for old ones
        del _RUNS[next(iter(_RUNS))]


@flow(name="drift", flow_run_name=run_name)
def drift_flow(
    model_name: str = "car-loan",
    model_version: str = "latest",
    window: str = "last_hour",
    start: str | None = None,
    end: str | None = None,
    reference: str = "artifact",
    reference_start: str | None = None,
    reference_end: str | None = None,
    columns: list[str] | None = None,
    include_synthetic: bool = False,
    drift_share: float = 0.5,
    data_dir: str | None = None,
) -> State[Any]:
    """Compare a window of traffic against the reference; see the module docstring."""
    log = get_run_logger()
    override = {"data_dir": Path(data_dir)} if data_dir else {}
    settings = FlowSettings(**override)  # type: ignore[arg-type]
    ws = WarehouseSettings(**override)  # type: ignore[arg-type]
    store = settings.reports()
    store.check()  # a store that cannot take the report fails the run now, not after the work
    win = resolve(window, start, end)
    ref_win = resolve("last_hour", reference_start, reference_end) if reference == "window" else None
    inputs = load_inputs(
        settings, model_name, model_version, win, reference, ref_win, columns, include_synthetic
    )
    _tag_run(inputs.meta.name, inputs.meta.version)
    results, verdict, tl = compute(inputs, drift_share)
    run_time = datetime.now(UTC)
    run_id = str(flow_run.get_id() or f"local-{run_time:%Y%m%dT%H%M%S%f}")
    digest = summarise(settings, inputs, win, results, verdict, tl, run_time, run_id)
    # the window: Evidently's charts are drawn from the digest's samples alone
    inputs.release()
    del inputs
    drift_calc.release_freed_memory()
    html, js = render(digest)
    kept = store_report(store, digest.run_dir) + "/" + html.name  # the file, or its s3:// URL
    summary = digest.summary
    url = artifacts.report_url(html, store.local, settings.reports_base_url, store.url)
    _remember(run_id, _outcome(summary, None if store.remote else (html, js), url))
    record_results(ws, summary, win, url)
    if settings.pushgateway_url:
        push_scores(settings.pushgateway_url, summary)
    outcome = outcomes.Outcome(publish(summary, url))
    log.info("%s: %s; report %s", outcomes.LABELS[outcome], summary.verdict.reason, url)
    log.info("estimated quality: %s", performance.log_line(summary.performance))
    if outcome in outcomes.ALERTING and settings.drift_webhook_url:
        send_alert(settings.drift_webhook_url, summary, kept, url)
    return outcomes.state(outcome, f"{summary.verdict.reason}; report {url}")


def run_drift(
    data_dir: Path,
    model_name: str = "car-loan",
    model_version: str = "latest",
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    window: str = "last_day",
) -> DriftOutcome:
    """Run the drift flow once and say where its report is (the demo calls this).

    With neither ``start`` nor ``end``, the window is the 24 hours up to now (not to the
    top of the hour, as the scheduled ``last_day`` is: a demo's traffic is minutes old)."""
    if start is None and end is None:
        end = datetime.now(UTC) + timedelta(seconds=1)
        start = end - timedelta(days=1)
    state = drift_flow(
        model_name=model_name,
        model_version=model_version,
        window=window,
        start=start.isoformat() if isinstance(start, datetime) else start,
        end=end.isoformat() if isinstance(end, datetime) else end,
        data_dir=str(data_dir),
        return_state=True,
    )
    run_id = str(state.state_details.flow_run_id)
    out = _RUNS.pop(run_id, None)
    if out is not None:
        return out
    raise RuntimeError(f"drift flow run {run_id} ended {state.type.value} without a report: {state.message}")
