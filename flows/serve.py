"""``inferstream flows serve``: the deployments of ``prefect.yaml`` served by one local
process (Prefect's ``serve``), for machines without a work pool and worker. The YAML
stays the one place where schedules and parameters are written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

PREFECT_YAML = Path(__file__).resolve().parent.parent / "prefect.yaml"


def deployment_specs(path: Path = PREFECT_YAML) -> list[dict[str, Any]]:
    doc = yaml.safe_load(path.read_text())
    return list(doc.get("deployments") or [])


def runner_deployments(path: Path = PREFECT_YAML) -> list[Any]:
    """One runner deployment per entry of ``path``: same names, parameters, schedules."""
    from prefect.flows import load_flow_from_entrypoint

    root = path.parent
    runners = []
    for spec in deployment_specs(path):
        file, func = spec["entrypoint"].split(":")
        flow = load_flow_from_entrypoint(f"{root / file}:{func}")
        crons = [s["cron"] for s in spec.get("schedules") or []]
        runners.append(
            flow.to_deployment(
                name=spec["name"],
                cron=crons[0] if crons else None,
                parameters=spec.get("parameters") or {},
                tags=spec.get("tags") or [],
                description=spec.get("description"),
            )
        )
    return runners


def serve(path: Path = PREFECT_YAML) -> None:
    """Block serving every deployment in ``path`` on their cron schedules."""
    from prefect import serve as prefect_serve

    prefect_serve(*runner_deployments(path))
