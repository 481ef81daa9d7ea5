"""Drift scan: one drift run (``flows.drift.drift_flow``, a subflow with its own name,
tags, artifacts, report and state) for every model and version that had traffic in the
window. This is what the hourly deployment runs.

``models`` narrows the scan: entries ``name`` (every version of it with traffic) or
``name@version``. A named model without traffic is still run, and ends "No data": asking
for a model and getting silence is a finding.

The scan's own state sums its runs up: any failed run → Failed (the message names
them); else any drift → Completed "Drift detected"; else, when no model had traffic at
all or a named one had none, Failed "No data"; else Completed "No drift".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import State, flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Failed

from common.errors import ConfigError
from flows import outcome as outcomes
from flows.drift import drift_flow, window_span
from flows.settings import FlowSettings
from flows.traffic import models_with_traffic
from flows.window import resolve


def scan_name() -> str:
    p = flow_run.get_parameters()
    try:
        span = window_span(resolve(str(p.get("window", "last_hour")), p.get("start"), p.get("end")))
    except ConfigError:
        span = str(p.get("window", ""))
    models = p.get("models")
    return f"{', '.join(models) if models else 'all models'} {span}"


def plan(traffic: list[tuple[str, str, int]], models: list[str] | None) -> list[tuple[str, str]]:
    """The (model, version) pairs to run: every one with traffic, or those ``models``
    names (``name`` or ``name@version``; a named one without traffic runs anyway)."""
    seen = [(m, v) for m, v, _ in traffic]
    if not models:
        return seen
    out: list[tuple[str, str]] = []
    for entry in models:
        name, _, version = entry.partition("@")
        if not name:
            raise ConfigError(f"models: {entry!r} is not 'name' or 'name@version'")
        hits = [(m, v) for m, v in seen if m == name and (not version or v == version)]
        out.extend(hits or [(name, version or "latest")])
    return list(dict.fromkeys(out))


@flow(name="drift-all", flow_run_name=scan_name)
def drift_all_flow(
    window: str = "last_hour",
    start: str | None = None,
    end: str | None = None,
    models: list[str] | None = None,
    reference: str = "artifact",
    reference_start: str | None = None,
    reference_end: str | None = None,
    include_synthetic: bool = False,
    drift_share: float = 0.5,
    data_dir: str | None = None,
) -> State[Any]:
    """One drift run per model and version with traffic; see the module docstring."""
    log = get_run_logger()
    settings = FlowSettings(**({"data_dir": Path(data_dir)} if data_dir else {}))  # type: ignore[arg-type]
    win = resolve(window, start, end)
    traffic = models_with_traffic(settings.lake(), win, include_synthetic=include_synthetic)
    pairs = plan(traffic, models)
    log.info("window %s: traffic %s; running %s", window_span(win), traffic, pairs)
    if not pairs:
        return outcomes.state(
            outcomes.Outcome.NO_DATA, f"no data: no model had traffic in {window_span(win)}"
        )
    names: dict[str, list[str]] = {}
    for model, version in pairs:
        state = drift_flow(
            model_name=model,
            model_version=version,
            start=win.start.isoformat(),
            end=win.end.isoformat(),
            reference=reference,
            reference_start=reference_start,
            reference_end=reference_end,
            include_synthetic=include_synthetic,
            drift_share=drift_share,
            data_dir=data_dir,
            return_state=True,
        )
        known = state.name in outcomes.STATE_NAMES.values() and (
            state.is_completed() or state.name == "No data"
        )
        names.setdefault(state.name if known and state.name else "failed", []).append(f"{model} v{version}")
    summary = "; ".join(f"{k}: {', '.join(v)}" for k, v in names.items())
    if "failed" in names:
        return Failed(message=f"{len(names['failed'])} of {len(pairs)} drift runs failed; {summary}")
    # a silent model outweighs quiet ones: the scan is green only when every run is
    for outcome in (outcomes.Outcome.DRIFT, outcomes.Outcome.QUALITY_DROP, outcomes.Outcome.NO_DATA):
        if outcomes.STATE_NAMES[outcome] in names:
            return outcomes.state(outcome, summary)
    return outcomes.state(outcomes.Outcome.NO_DRIFT, summary)
