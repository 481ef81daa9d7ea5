"""The drift run's summary and report (``flows.drift``): everything that reads the window
(samples, quality, estimated performance, the prediction mix) becomes a ``Digest``, then
the report is written from it, after the window is dropped (into the local reports
folder; ``flows.drift_deliver.store_report`` publishes it and refreshes the index)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from common import artifact
from flows import drift_calc, performance, report, slices
from flows import outcome as outcomes
from flows.drift_inputs import Inputs
from flows.episodes import read_episodes
from flows.quality import classification_quality, join_labels, read_feedback
from flows.reference import (
    ColumnSpec,
    score_label,
)
from flows.settings import FlowSettings
from flows.summary import DriftSummary
from flows.window import Window
from monitoring.stats import ColumnDrift


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
def render(digest: Digest) -> tuple[Path, Path]:
    """report.html/.json (Evidently's charts from the samples) and summary.json."""
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
