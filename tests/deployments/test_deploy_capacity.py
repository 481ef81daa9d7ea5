"""The capacity table in deployments/README.md is what deployments/capacity.py computes,
and its inputs match the manifests they describe."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

DEPLOYMENTS = Path(__file__).resolve().parents[2] / "deployments"
BEGIN, END = "<!-- capacity:begin -->\n", "<!-- capacity:end -->"


@pytest.fixture(scope="module")
def capacity() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_capacity", DEPLOYMENTS / "capacity.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    return module


def readme_table(text: str) -> str:
    return text.split(BEGIN, 1)[1].split(END, 1)[0]


def test_readme_table_is_the_computed_one(capacity: ModuleType) -> None:
    assert readme_table((DEPLOYMENTS / "README.md").read_text()) == capacity.render()


def test_a_stale_readme_table_is_detected(capacity: ModuleType) -> None:
    stale = (DEPLOYMENTS / "README.md").read_text().replace("| 113 GB/day |", "| 90 GB/day |")
    assert readme_table(stale) != capacity.render()


def test_the_arithmetic(capacity: ModuleType) -> None:
    result = {q: r for q, _, r in capacity.rows()}
    assert result["mean / peak rate"] == "34,722 events/s"  # 1e9 / 86,400 x 3
    assert result["lake consumer processes"] == "1"  # ceil(69,444 / 77,000)
    assert result["lake growth per day"] == "113 GB/day"
    assert result["drift flow, whole day, Evidently"].startswith("19.4 h")  # 1,000 x 70 s


def test_inputs_match_the_manifests(capacity: ModuleType, k8s_docs: list[dict[str, Any]]) -> None:
    inputs = capacity.INPUTS
    topics = {d["metadata"]["name"]: d for d in k8s_docs if d["kind"] == "KafkaTopic"}
    events = topics["inference-events"]["spec"]
    assert events["config"]["retention.ms"] == inputs["retention_days"].value * 86_400_000
    assert events["replicas"] == inputs["replication_factor"].value
    result = {q: r for q, _, r in capacity.rows()}
    assert int(result["partitions of inference-events"]) == events["partitions"]
    for name, item in inputs.items():
        assert item.source.split(":")[0] in {
            "target",
            "assumption",
            "prototype",
            "measured here",
            "bench",
        } or (item.source.startswith("deployments/")), name
