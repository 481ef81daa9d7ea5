"""Every environment variable that compose.yaml or deployments/k8s/ hands to an
inferstream container is one the app reads, with a value its settings class accepts.

The settings classes are discovered by import (every BaseSettings subclass in every
top-level ``*/settings.py``), so new services' settings are picked up as they appear.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import AliasChoices, AliasPath
from pydantic_settings import BaseSettings

REPO = Path(__file__).resolve().parents[2]
INFERSTREAM_IMAGES = ("inferstream:",)

# Read by something other than inferstream's settings classes, on purpose.
ALLOWED = {
    "PREFECT_API_URL": "read by the Prefect client inside `inferstream flows serve`",
}
# Settings the deployment needs that another issue adds. Remove an entry when its
# setting exists (test_planned_settings_are_still_planned fails until you do).
PLANNED: dict[str, str] = {}
# Third-party images configure themselves from these prefixes.
FOREIGN_IMAGE_PREFIXES = {
    "apache/kafka:": ("KAFKA_", "CLUSTER_ID"),
    "postgres:": ("POSTGRES_",),
    "prefecthq/prefect:": ("PREFECT_",),
    "chrislusf/seaweedfs:": ("AWS_",),  # weed mini: the initial S3 credentials
    # Grafana's own settings, and the password its provisioned data source reads
    "grafana/grafana-oss:": ("GF_", "POSTGRES_PASSWORD"),
}
# Which settings class a command reads; other commands may read any of them.
COMMAND_MODULE = {"api": "api.settings", "consume": "consumers.settings"}


def settings_classes() -> dict[str, list[type[BaseSettings]]]:
    """{module: [BaseSettings subclasses it defines or re-exports]} for */settings.py."""
    found: dict[str, list[type[BaseSettings]]] = {}
    for path in sorted(REPO.glob("*/settings.py")):
        if path.parent.name.startswith((".", "tests")):
            continue
        module = importlib.import_module(f"{path.parent.name}.settings")
        found[module.__name__] = [
            obj
            for obj in vars(module).values()
            if inspect.isclass(obj) and issubclass(obj, BaseSettings) and obj is not BaseSettings
        ]
    return found


def env_names(cls: type[BaseSettings]) -> set[str]:
    """Upper-cased names pydantic-settings reads for each field of ``cls``."""
    prefix = cls.model_config.get("env_prefix", "")
    names = set()
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias or field.alias
        if isinstance(alias, AliasChoices):
            names |= {c.upper() for c in alias.choices if isinstance(c, str)}
        elif isinstance(alias, str):
            names.add(alias.upper())
        elif alias is None or isinstance(alias, AliasPath):
            names.add(f"{prefix}{field_name}".upper())
    return names


def accepted(command: str) -> tuple[set[str], list[type[BaseSettings]]]:
    classes = settings_classes()
    module = COMMAND_MODULE.get(command)
    chosen = classes[module] if module else [c for cs in classes.values() for c in cs]
    names = set().union(*(env_names(c) for c in chosen))
    return names | set(ALLOWED) | set(PLANNED), chosen


def env_problems(where: str, image: str, command: list[str], env: dict[str, str]) -> list[str]:
    for prefix, allowed in FOREIGN_IMAGE_PREFIXES.items():
        if image.startswith(prefix):
            if prefix == "apache/kafka:" and "TOPICS" in env:
                return []  # topic-init: its own script's variables, checked in test_deploy_compose
            return [f"{where}: {k} is not a {prefix} setting" for k in env if not k.startswith(allowed)]
    names, _ = accepted(command[0] if command else "api")
    return [f"{where}: {k} is read by no settings class" for k in env if k.upper() not in names]


def compose_containers(model: dict[str, Any]) -> list[tuple[str, str, list[str], dict[str, str]]]:
    return [
        (f"compose {name}", svc.get("image", ""), svc.get("command") or [], svc.get("environment") or {})
        for name, svc in model["services"].items()
    ]


def k8s_containers(
    docs: list[dict[str, Any]], container_env: Any, workloads: Any
) -> list[tuple[str, str, list[str], dict[str, str]]]:
    out = []
    for w in workloads(docs):
        for c in w["spec"]["template"]["spec"]["containers"]:
            out.append(
                (f"k8s {w['metadata']['name']}", c["image"], c.get("args", []), container_env(docs, c))
            )
    return out


# ---------------------------------------------------------------- discovery


def test_discovery_finds_the_known_settings_classes() -> None:
    classes = {c.__name__ for cs in settings_classes().values() for c in cs}
    assert {"CommonSettings", "ApiSettings", "ConsumerSettings"} <= classes
    names, _ = accepted("api")
    assert {"KAFKA_BOOTSTRAP_SERVERS", "INFERSTREAM_MODEL_NAME", "INFERSTREAM_KAFKA_ACKS"} <= names
    assert "INFERSTREAM_GROUP_ID" not in names  # a consumer setting, not the API's


def test_planned_settings_are_still_planned() -> None:
    real = set().union(*(env_names(c) for cs in settings_classes().values() for c in cs))
    assert not set(PLANNED) & real, "now a real setting: remove it from PLANNED"


# ---------------------------------------------------------------- names and values


@pytest.mark.parametrize("profile", ["cluster", "single"])
def test_compose_env_names_are_settings(rendered: dict[str, Any], profile: str) -> None:
    problems = [p for c in compose_containers(rendered[profile]) for p in env_problems(*c)]
    assert problems == []


def test_k8s_env_names_are_settings(k8s_docs: list[dict[str, Any]], k8s_env: Any, k8s_workloads: Any) -> None:
    problems = [p for c in k8s_containers(k8s_docs, k8s_env, k8s_workloads) for p in env_problems(*c)]
    assert problems == []


def test_env_check_rejects_unknown_names(
    rendered: dict[str, Any], k8s_docs: list[dict[str, Any]], k8s_env: Any, k8s_workloads: Any
) -> None:
    model = copy.deepcopy(rendered["cluster"])
    model["services"]["api"]["environment"]["INFERSTREAM_MODEL_NAM"] = "typo"
    model["services"]["api"]["environment"]["INFERSTREAM_GROUP_ID"] = "not the API's"
    model["services"]["postgres"]["environment"]["PGDATA"] = "/elsewhere"
    problems = [p for c in compose_containers(model) for p in env_problems(*c)]
    assert any("INFERSTREAM_MODEL_NAM " in p for p in problems), problems
    assert any("INFERSTREAM_GROUP_ID" in p for p in problems), problems
    assert any("PGDATA" in p for p in problems), problems
    docs = copy.deepcopy(k8s_docs)
    for d in docs:
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "inferstream-common":
            d["data"]["INFERSTREAM_LAKE_DIRR"] = "/data/lake"
    problems = [p for c in k8s_containers(docs, k8s_env, k8s_workloads) for p in env_problems(*c)]
    assert sum("INFERSTREAM_LAKE_DIRR" in p for p in problems) >= 4, problems


def _inferstream(containers: list[tuple[str, str, list[str], dict[str, str]]]) -> list[Any]:
    return [c for c in containers if c[1].startswith(INFERSTREAM_IMAGES)]


def all_inferstream_containers(
    rendered: dict[str, Any], k8s_docs: list[dict[str, Any]], k8s_env: Any, k8s_workloads: Any
) -> list[Any]:
    """Every container running the inferstream image, in compose (3-node profile) and k8s."""
    return _inferstream(
        compose_containers(rendered["cluster"]) + k8s_containers(k8s_docs, k8s_env, k8s_workloads)
    )


def use_only(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """Make ``env`` the whole of the process's inferstream and Kafka environment."""
    for key in list(os.environ):
        if key.startswith(("INFERSTREAM_", "KAFKA_")):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))


def settings_errors(
    monkeypatch: pytest.MonkeyPatch, where: str, command: list[str], env: dict[str, str]
) -> list[str]:
    """Instantiate the command's settings classes from exactly this environment."""
    from pydantic import ValidationError

    use_only(monkeypatch, env)
    _, classes = accepted(command[0] if command else "api")
    errors = []
    for cls in classes:
        try:
            cls()
        except ValidationError as exc:
            errors.append(f"{where} {cls.__name__}: {exc}")
    return errors


def test_env_values_are_accepted_by_the_settings(
    monkeypatch: pytest.MonkeyPatch,
    rendered: dict[str, Any],
    k8s_docs: list[dict[str, Any]],
    k8s_env: Any,
    k8s_workloads: Any,
) -> None:
    containers = all_inferstream_containers(rendered, k8s_docs, k8s_env, k8s_workloads)
    assert len(containers) >= 12
    errors = []
    for where, _image, command, env in containers:
        with monkeypatch.context() as m:
            errors += settings_errors(m, where, command, env)
    assert errors == []


def test_value_check_rejects_a_bad_value(monkeypatch: pytest.MonkeyPatch, rendered: dict[str, Any]) -> None:
    env = dict(rendered["cluster"]["services"]["api"]["environment"])
    env["INFERSTREAM_KAFKA_ENABLE_IDEMPOTENCE"] = "sometimes"
    errors = settings_errors(monkeypatch, "api", ["api"], env)
    assert any("kafka_enable_idempotence" in e for e in errors), errors


def test_api_containers_start_with_authentication(
    monkeypatch: pytest.MonkeyPatch,
    rendered: dict[str, Any],
    k8s_docs: list[dict[str, Any]],
    k8s_env: Any,
    k8s_workloads: Any,
) -> None:
    """The API refuses to start with auth on and no key: every API container must bring one."""
    from api.app import _key_store
    from api.settings import ApiSettings

    containers = [
        c
        for c in all_inferstream_containers(rendered, k8s_docs, k8s_env, k8s_workloads)
        if (c[2][0] if c[2] else "api") == "api"
    ]
    assert len(containers) >= 2  # compose and Kubernetes
    for where, _image, _command, env in containers:
        with monkeypatch.context() as m:
            use_only(m, env)
            settings = ApiSettings()
            assert settings.auth_enabled, f"{where}: auth is off"
            assert _key_store(settings) is not None, where
