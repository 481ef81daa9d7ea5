"""deployments/Dockerfile, parsed by BuildKit's own parser (the `dockerfile` wheel):
multi-stage, slim, non-root, with a healthcheck on the API's port, copying only what
exists and what the build context (Dockerfile.dockerignore) sends."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path
from typing import Any

import pytest

dockerfile = pytest.importorskip("dockerfile", reason="pip install dockerfile (dev tool)")

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deployments" / "Dockerfile"
INSTRUCTIONS = {
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
    "MAINTAINER",
}


def stages(text: str) -> list[list[Any]]:
    out: list[list[Any]] = []
    for cmd in dockerfile.parse_string(text):
        if cmd.cmd == "FROM":
            out.append([])
        if out:
            out[-1].append(cmd)
    return out


def dockerfile_problems(text: str) -> list[str]:
    problems = []
    commands = dockerfile.parse_string(text)
    problems += [
        f"line {c.start_line}: unknown instruction {c.cmd}" for c in commands if c.cmd not in INSTRUCTIONS
    ]
    found = stages(text)
    if len(found) < 2:
        problems.append("not multi-stage")
        return problems
    final = found[-1]
    args = {
        c.value[0].split("=", 1)[0]: c.value[0].split("=", 1)[1]
        for c in commands
        if c.cmd == "ARG" and "=" in c.value[0]
    }
    base = final[0].value[0]
    base = args.get(base.strip("${}"), base)
    if "slim" not in base:
        problems.append(f"final base {base} is not a slim image")
    users = [c.value[0] for c in final if c.cmd == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("the final stage runs as root")
    if not any(c.cmd == "HEALTHCHECK" for c in final):
        problems.append("the final stage has no HEALTHCHECK")
    if any(c.cmd == "COPY" and not any(f.startswith("--from") for f in c.flags) for c in final):
        problems.append("the final stage copies from the context: only the build stage should")
    return problems


def test_dockerfile_is_multistage_slim_nonroot_with_healthcheck() -> None:
    assert dockerfile_problems(DOCKERFILE.read_text()) == []


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("USER ${UID}:${UID}", "USER root", "runs as root"),
        ("HEALTHCHECK --interval", "# HEALTHCHECK --interval", "no HEALTHCHECK"),
        ("STOPSIGNAL SIGTERM", "STOPSIGNAL SIGTERM\nCOPYY . /app", "unknown instruction COPYY"),
    ],
    ids=["root", "no-healthcheck", "typo"],
)
def test_dockerfile_check_rejects_a_broken_file(old: str, new: str, problem: str) -> None:
    text = DOCKERFILE.read_text()
    assert old in text
    problems = dockerfile_problems(text.replace(old, new))
    assert any(problem in p for p in problems), problems


def _ignored(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; '!' re-includes."""
    ignored = False
    for raw in (REPO / "deployments" / "Dockerfile.dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate, pattern = line.startswith("!"), line.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path, pattern.removeprefix("**/")):
            ignored = not negate
    return ignored


def test_copied_sources_exist_and_reach_the_build() -> None:
    copies = [c for c in dockerfile.parse_string(DOCKERFILE.read_text()) if c.cmd == "COPY"]
    sources = [
        src for c in copies if not any(f.startswith("--from") for f in c.flags) for src in c.value[:-1]
    ]
    assert sources
    for src in sources:
        assert (REPO / src).exists(), src
        assert not _ignored(src.rstrip("/")), f"{src} is excluded by Dockerfile.dockerignore"
    # every package pyproject installs is copied
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= {s.rstrip("/") for s in sources}


def test_image_runs_the_console_script_on_the_api_port() -> None:
    commands = dockerfile.parse_string(DOCKERFILE.read_text())
    final = stages(DOCKERFILE.read_text())[-1]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    (entry,) = [c.value for c in final if c.cmd == "ENTRYPOINT"]
    assert entry[0] in project["project"]["scripts"]
    env = {}
    for c in commands:
        if c.cmd == "ENV":
            env.update(zip(c.value[::2], c.value[1::2], strict=True))
    (expose,) = [c.value[0] for c in final if c.cmd == "EXPOSE"]
    assert env["INFERSTREAM_PORT"] == expose == "8000"
    (health,) = [c for c in final if c.cmd == "HEALTHCHECK"]
    assert "/healthz" in " ".join(health.value) and "INFERSTREAM_PORT" in " ".join(health.value)
