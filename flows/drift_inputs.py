"""The drift run's inputs (``flows.drift``): the model's metadata and column specs, the
current window from the lake and the reference (the artifact's or a past window), and the
per-column tests on all rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from common import artifact
from common.errors import ConfigError
from flows import drift_calc
from flows.lake_reader import read_window
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
from flows.window import Window
from monitoring.stats import ColumnData, ColumnDrift


@dataclass
class Inputs:
    meta: artifact.ModelMetadata
    specs: list[ColumnSpec]
    current: pl.DataFrame
    reference: pl.DataFrame
    reference_stats: dict[str, ColumnData]
    reference_name: str

    def release(self) -> None:
        """Drop the window and the reference frames. ``del`` of the flow's name is not
        enough: Prefect keeps this object reachable for a while after the tasks that
        returned or took it ended (their run contexts, copied into timers its client's
        event loop has pending, hold their return values and parameters)."""
        self.current = self.current.clear()
        self.reference = self.reference.clear()
        self.reference_stats = {}


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
