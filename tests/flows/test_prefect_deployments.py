"""prefect.yaml: every entrypoint imports and is a flow; schedules and pool are what the
docs promise; the maintenance flow's retention removes only expired partitions."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from prefect import Flow
from prefect.flows import load_flow_from_entrypoint

from flows.serve import PREFECT_YAML, deployment_specs, runner_deployments

ROOT = Path(__file__).resolve().parents[2]


def test_prefect_yaml_is_the_project_file_and_uses_anchors():
    assert PREFECT_YAML == ROOT / "prefect.yaml"
    text = PREFECT_YAML.read_text()
    assert "&process" in text and "*process" in text  # one pool definition, shared


@pytest.mark.parametrize("spec", deployment_specs(), ids=lambda s: s["name"])
def test_every_entrypoint_imports_as_a_flow(spec):
    file, func = spec["entrypoint"].split(":")
    assert (ROOT / file).is_file()
    flow = load_flow_from_entrypoint(f"{ROOT / file}:{func}")
    assert isinstance(flow, Flow)
    assert spec["work_pool"]["name"] == "inferstream"
    # the parameters the YAML passes are parameters the flow accepts
    assert set(spec.get("parameters") or {}) <= set(flow.parameters.properties)


def test_schedules():
    crons = {
        s["entrypoint"].split(":")[1]: [x["cron"] for x in s.get("schedules") or []]
        for s in deployment_specs()
    }
    assert crons == {
        "drift_all_flow": ["5 * * * *"],  # every model with traffic
        "drift_flow": [],  # one model, on demand
        "bi_load_flow": ["*/15 * * * *"],
        "maintenance_flow": ["30 3 * * *"],
    }
    doc = yaml.safe_load(PREFECT_YAML.read_text())
    assert {s["work_pool"]["name"] for s in doc["deployments"]} == {"inferstream"}


def test_flows_serve_builds_the_yaml_deployments():
    deps = runner_deployments()
    assert sorted(d.name for d in deps) == sorted(s["name"] for s in deployment_specs())
    by_name = {d.name: d for d in deps}
    assert by_name["drift-hourly"].parameters == {"window": "last_hour"}
    assert by_name["drift-model"].parameters == {"model_name": "car-loan", "window": "last_hour"}
    assert by_name["bi-every-15-min"].schedules[0].schedule.cron == "*/15 * * * *"
