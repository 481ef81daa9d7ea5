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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import polars as pl
from prefect import State, flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run

from common import artifact
from common.errors import ConfigError
from flows import artifacts, drift_calc, index, performance, report, slices
from flows import outcome as outcomes
from flows.alert import post_alert
from flows.drift_metrics import push_drift
from flows.episodes import read_episodes
from flows.lake_reader import read_window
from flows.quality import classification_quality, join_labels, read_feedback
from flows.reference import (
    ColumnSpec,
    artifact_reference_stats,
    class_labels,
    column_specs,
    frame_stats,
    normalise,
    read_artifact_reference,
    score_label,
)
from flows.settings import FlowSettings
from flows.summary import DriftSummary
from flows.window import Window, resolve
from monitoring.stats import ColumnData, ColumnDrift
from warehouse import tables
from warehouse.backends import open_warehouse
from warehouse.settings import WarehouseSettings

DRIFT_STATE_NAME = outcomes.STATE_NAMES[outcomes.Outcome.DRIFT]
QUALITY_STATE_NAME = outcomes.STATE_NAMES[outcomes.Outcome.QUALITY_DROP]


@dataclass
class DriftOutcome:
    outcome: outcomes.Outcome
    drift: bool
    reason: str
    report_html: Path | None
    report_json: Path | None
    summary: DriftSummary


@dataclass
class Inputs:
    meta: artifact.ModelMetadata
    specs: list[ColumnSpec]
    current: pl.DataFrame
    reference: pl.DataFrame
    reference_stats: dict[str, ColumnData]
    reference_name: str


@task(cache_policy=NO_CACHE)  # local files: an error here is not transient, no retries
def load_inputs(
    settings: FlowSettings,
    model_name: str,
    model_version: str,
    window: Window,
    reference: str,
    reference_window: Window | None,
    columns: list[str] | None,
    include_synthetic: bool,
) -> Inputs:
    art_dir = artifact.resolve_dir(settings.models_dir, model_name, model_version)
    meta = artifact.read_metadata(art_dir)
    specs = column_specs(meta, columns)
    features = [s.name for s in specs if s.role == "feature"]
    label = score_label(meta)

    def lake_window(w: Window) -> pl.DataFrame:
        df = read_window(
            settings.lake(),
            model_name,
            w,
            features,
            version=meta.version,
            score_label=label,
            class_scores=class_labels(meta),
            include_synthetic=include_synthetic,
        )
        return normalise(df, specs)

    current = lake_window(window)
    if reference == "artifact":
        ref_df = read_artifact_reference(art_dir, specs)
        ref_stats = artifact_reference_stats(art_dir, specs)  # cached across runs
        ref_name = f"training reference of v{meta.version}"
    elif reference == "window":
        if reference_window is None:
            raise ConfigError("reference='window' needs reference_start and reference_end")
        ref_df = lake_window(reference_window)
        ref_stats = frame_stats(ref_df, specs)
        ref_name = f"window {reference_window.label()}"
    else:
        raise ConfigError(f"reference: expected 'artifact' or 'window', got {reference!r}")
    return Inputs(meta, specs, current, ref_df, ref_stats, ref_name)


@task(cache_policy=NO_CACHE)
def compute(inputs: Inputs, drift_share: float) -> tuple[list[ColumnDrift], drift_calc.Verdict, list[Any]]:
    results = drift_calc.compare(inputs.reference_stats, inputs.current, inputs.specs)
    verdict = drift_calc.verdict(results, inputs.specs, drift_share)
    tl = drift_calc.timeline(inputs.reference_stats, inputs.current, inputs.specs, results)
    return results, verdict, tl


def _sample_note(cur_n: int, cur_s: int, ref_n: int, ref_s: int) -> str:
    if cur_s == cur_n and ref_s == ref_n:
        return f"all rows (current {cur_n}, reference {ref_n}): nothing was sampled"
    return (
        f"a stratified sample (by time slice and predicted class) of {cur_s} of {cur_n} current rows "
        f"and a random sample of {ref_s} of {ref_n} reference rows"
    )


@dataclass
class Digest:
    """What the report needs once the window's own numbers are done: the summary and
    the small samples Evidently draws from (never the window itself)."""

    summary: DriftSummary
    run_dir: Path
    specs: list[ColumnSpec]
    classes: list[str]
    current_sample: pl.DataFrame
    reference_sample: pl.DataFrame
    labels: tuple[pl.DataFrame, pl.DataFrame] | None


@task(cache_policy=NO_CACHE)
def summarise(
    settings: FlowSettings,
    inputs: Inputs,
    window: Window,
    results: list[ColumnDrift],
    verdict: drift_calc.Verdict,
    tl: list[Any],
    run_time: datetime,
    run_id: str,
) -> Digest:
    """Everything that reads the window: samples, quality, estimated performance, the
    prediction mix and the summary. The flow drops the window after this task, so the
    report's Evidently charts (``render``) never share memory with it."""
    meta = inputs.meta
    roles = {s.name: s.role for s in inputs.specs}
    cur_s = drift_calc.stratified_sample(inputs.current, settings.drift_sample_rows)
    ref_s = (
        inputs.reference.sample(n=settings.drift_sample_rows, seed=0)
        if inputs.reference.height > settings.drift_sample_rows
        else inputs.reference
    )
    # quality: current predictions that got ground truth through feedback
    feedback = read_feedback(settings.lake())
    labelled = join_labels(inputs.current, feedback)
    art_dir = artifact.resolve_dir(settings.models_dir, meta.name, meta.version)
    perf = performance.estimate_quality(art_dir, meta, inputs.current, feedback)
    perf_reason = performance.reason(perf)
    ref_labelled = _reference_with_target(settings, meta)
    quality = classification_quality(labelled, ref_labelled, "label", score_label(meta))
    drift_starts = {}
    for name in verdict.drifted_features + [
        r.column for r in results if r.drifted and roles[r.column] != "feature"
    ]:
        first = next((row.start for row in tl if row.drifted.get(name)), None)
        if first is not None:
            drift_starts[name] = first
    features = [r for r in results if roles[r.column] == "feature"]
    outcome = outcomes.decide(inputs.current.height, verdict.drift, perf_reason is not None)
    reason = outcomes.explain(
        outcome,
        verdict.drifted_features,
        len(features),
        verdict.drift_share,
        verdict.prediction_drift,
        perf_reason,
    )
    summary = DriftSummary.model_validate(
        {
            "outcome": outcome.value,
            "run_id": run_id,
            "run_name": str(flow_run.get_name() or ""),
            "run_time": run_time.isoformat(),
            "model": meta.name,
            "version": meta.version,
            "window": {**window.to_json(), "label": window.label()},
            "rule": {"drift_share": verdict.drift_share, "n_features": len(features)},
            "reference": {"name": inputs.reference_name, "rows": inputs.reference.height},
            "current_rows": inputs.current.height,
            "sample": {
                "current_rows": cur_s.height,
                "reference_rows": ref_s.height,
                "note": _sample_note(
                    inputs.current.height, cur_s.height, inputs.reference.height, ref_s.height
                ),
            },
            "verdict": {**asdict(verdict), "quality_alert": perf_reason is not None, "reason": reason},
            "columns": [{**asdict(r), "role": roles[r.column]} for r in results],
            "timeline": [
                {
                    "start": row.start.isoformat(),
                    "rows": row.rows,
                    "scores": row.scores,
                    "drifted": row.drifted,
                }
                for row in tl
            ],
            "drift_starts": {k: v.isoformat() for k, v in drift_starts.items()},
            "prediction_mix": slices.prediction_mix(inputs.current, window),
            "quality": quality.to_json(),
            "performance": perf,
            # what the streaming drift monitor raised meanwhile (None: the lake has no episodes table)
            "episodes": read_episodes(settings.lake(), meta.name, meta.version, window),
        }
    )
    run_dir = settings.reports_root / meta.name / run_time.strftime("%Y%m%dT%H%M%S.%fZ")
    methods = {r.column: r.method for r in results}
    labels = None
    if labelled.height and ref_labelled is not None and "label" in ref_labelled.columns:
        labels = (
            ref_labelled.select("label", "prediction").drop_nulls(),
            drift_calc.stratified_sample(labelled, settings.drift_sample_rows).select("label", "prediction"),
        )
    return Digest(
        summary,
        run_dir,
        [s for s in inputs.specs if s.name in methods],
        [str(c) for c in meta.classes],
        cur_s,
        ref_s,
        labels,
    )


@task(cache_policy=NO_CACHE)
def render(settings: FlowSettings, digest: Digest) -> tuple[Path, Path]:
    """report.html/.json (Evidently's charts from the samples) and the refreshed index."""
    summary = digest.summary
    if not summary.current_rows:
        html, js = report.write_empty_run(digest.run_dir, summary)
    else:
        assert summary.verdict.drift_share is not None  # the flow always sets it
        snap, quality_snap = report.evidently_snapshot(
            digest.reference_sample,
            digest.current_sample,
            digest.specs,
            {c.column: c.method for c in summary.columns},
            thresholds={c.column: c.threshold for c in summary.columns},
            drift_share=summary.verdict.drift_share,
            labels=digest.labels,
            classes=digest.classes,
        )
        html, js = report.write_run(digest.run_dir, summary, snap, quality_snap)
    index.refresh(settings.reports_root)
    return html, js


def _reference_with_target(settings: FlowSettings, meta: artifact.ModelMetadata) -> pl.DataFrame | None:
    """The artifact reference's target and prediction as ``label``/``prediction`` text."""
    path = artifact.resolve_dir(settings.models_dir, meta.name, meta.version) / "reference.parquet"
    if not path.is_file():
        return None
    have = pl.read_parquet_schema(path)
    if meta.target not in have or "prediction" not in have:
        return None
    ref = pl.read_parquet(path, columns=[meta.target, "prediction"])
    return ref.select(
        pl.col(meta.target).cast(pl.String).alias("label"), pl.col("prediction").cast(pl.String)
    )


# DuckDB allows one writing process: the BI load may hold the file for a moment
@task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=10)
def record_results(ws: WarehouseSettings, summary: DriftSummary, window: Window, report_url: str) -> int:
    """Results (run, column, method, score, threshold, verdict, report URL) into the warehouse."""
    if not summary.columns:
        return 0
    df = pl.DataFrame(
        [
            {
                "run_id": summary.run_id,
                "run_time": summary.run_at,
                "model_name": summary.model,
                "model_version": summary.version,
                "window_start": window.start,
                "window_end": window.end,
                "column_name": c.column,
                "role": c.role,
                "method": c.method,
                "score": float(c.score),
                "threshold": float(c.threshold),
                "drifted": bool(c.drifted),
                "run_verdict_drift": bool(summary.verdict.drift),
                "report_url": report_url,
            }
            for c in summary.columns
        ],
        schema_overrides={
            "run_time": pl.Datetime("us", "UTC"),
            "window_start": pl.Datetime("us", "UTC"),
            "window_end": pl.Datetime("us", "UTC"),
        },
    )
    base = {
        "model_name": summary.model,
        "model_version": summary.version,
        "window_start": window.start,
        "window_end": window.end,
        "run_id": summary.run_id,
        "run_time": summary.run_at,
    }
    perf_rows = performance.warehouse_rows(summary.performance, base)
    wh = open_warehouse(ws)
    try:
        with wh.transaction():
            n = wh.upsert(tables.DRIFT_RESULTS.name, df)
            if not perf_rows.is_empty():
                wh.upsert(tables.QUALITY_ESTIMATES.name, perf_rows)
        return n
    finally:
        wh.close()


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def push_scores(gateway: str, summary: DriftSummary) -> None:
    """Drift scores to the Pushgateway, for alert rules (``flows.drift_metrics``, which
    reads the summary's JSON document)."""
    push_drift(gateway, summary.to_json())


ALERTS = {
    outcomes.Outcome.DRIFT: "drift_detected",
    outcomes.Outcome.QUALITY_DROP: "quality_drop_estimated",
    outcomes.Outcome.NO_DATA: "no_data",
    outcomes.Outcome.NO_DRIFT: "no_drift",  # never sent
}


@task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[2, 10, 30])
def send_alert(url: str, summary: DriftSummary, html: Path, report_url: str) -> int:
    outcome = summary.result()
    perf = summary.performance or {}
    payload = {
        "alert": ALERTS[outcome],
        "outcome": outcome.value,
        "verdict": outcomes.LABELS[outcome],
        "rows": summary.current_rows,
        "model": summary.model,
        "version": summary.version,
        "run_id": summary.run_id,
        "run_time": summary.run_time,
        "window": summary.window.model_dump(exclude_unset=True),
        "reason": summary.verdict.reason,
        "drifted_features": summary.verdict.drifted_features,
        "prediction_drift": summary.verdict.prediction_drift,
        "columns": [
            c.model_dump(include={"column", "method", "score", "threshold"}) for c in summary.drifted_columns
        ],
        "estimated_quality_alerts": perf.get("alert_metrics", []),
        "report": str(html),
        "report_url": report_url,
    }
    return post_alert(url, payload)


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def publish(summary: DriftSummary, url: str) -> str:
    """Artifacts and the outcome's event (see ``flows.artifacts``)."""
    return artifacts.publish(summary, url).value


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


# the report folder of each drift run this process ran, by flow run id, until ``run_drift``
# (which calls the flow here) takes its own
_RUN_DIRS: dict[str, Path] = {}


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
    del inputs  # the window: Evidently's charts are drawn from the digest's samples alone
    drift_calc.release_freed_memory()
    html, _ = render(settings, digest)
    _RUN_DIRS[run_id] = digest.run_dir
    summary = digest.summary
    url = artifacts.report_url(html, settings.reports_root, settings.reports_base_url)
    record_results(ws, summary, win, url)
    if settings.pushgateway_url:
        push_scores(settings.pushgateway_url, summary)
    outcome = outcomes.Outcome(publish(summary, url))
    log.info("%s: %s; report %s", outcomes.LABELS[outcome], summary.verdict.reason, url)
    log.info("estimated quality: %s", performance.log_line(summary.performance))
    if outcome in outcomes.ALERTING and settings.drift_webhook_url:
        send_alert(settings.drift_webhook_url, summary, html, url)
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
    run_dir = _RUN_DIRS.pop(run_id, None)
    if run_dir is not None:
        summary = DriftSummary.read(run_dir)
        return DriftOutcome(
            summary.result(),
            summary.verdict.drift,
            summary.verdict.reason,
            run_dir / "report.html",
            run_dir / "report.json",
            summary,
        )
    raise RuntimeError(f"drift flow run {run_id} ended {state.type.value} without a report: {state.message}")
