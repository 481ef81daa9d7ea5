"""The command line as a user meets it (real subprocesses): help, --version, exit codes,
and one clear line, before any Prefect start-up, for each mistake in ``flows run``."""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from inferstream.cli import build_parser

# runs the CLI's main and then reports whether Prefect was ever imported
PROBE = (
    "import sys; from inferstream.cli import main; rc = main(sys.argv[1:]); "
    "print('PREFECT_IMPORTED' if 'prefect' in sys.modules else 'PREFECT_NOT_IMPORTED', file=sys.stderr); "
    "sys.exit(rc)"
)


def _run(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PREFECT_HOME": str(tmp / "prefect"), "INFERSTREAM_DATA_DIR": str(tmp)},
        check=False,
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    for name, v in (("car-loan", "1"), ("car-loan", "2"), ("fraud", "1")):
        d = tmp_path / "models" / name / v
        d.mkdir(parents=True)
        (d / "metadata.json").write_text("{}")
    return tmp_path


def _lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    out = (proc.stdout + proc.stderr).splitlines()
    return [line for line in out if not line.startswith("PREFECT_")]


def test_unknown_model_is_one_line_listing_the_models_without_starting_prefect(data_dir: Path) -> None:
    proc = _run("flows", "run", "drift", "--model", "nope", tmp=data_dir)
    assert proc.returncode == 2
    (line,) = _lines(proc)
    assert line.startswith("inferstream: --model nope: no such model")
    assert "models there: car-loan, fraud" in line
    assert "PREFECT_NOT_IMPORTED" in proc.stderr


def test_unknown_version_names_the_versions(data_dir: Path) -> None:
    proc = _run("flows", "run", "drift", "--version", "7", tmp=data_dir)
    assert proc.returncode == 2
    assert _lines(proc) == ["inferstream: --version 7: model car-loan has versions 1, 2"]
    assert "PREFECT_NOT_IMPORTED" in proc.stderr


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--start", "yesterday", "--end", "2026-03-02T00:00Z"], "--start: not an ISO-8601 time"),
        (["--start", "2026-03-02T00:00Z"], "--window: give both start and end"),
        (["--start", "2026-03-02T00:00Z", "--end", "2026-03-01T00:00Z"], "--window: end"),
    ],
)
def test_a_bad_window_is_one_line_before_prefect(data_dir: Path, args: list[str], names: str) -> None:
    proc = _run("flows", "run", "drift", *args, tmp=data_dir)
    assert proc.returncode == 2
    (line,) = _lines(proc)
    assert line.startswith(f"inferstream: {names}"), line
    assert "PREFECT_NOT_IMPORTED" in proc.stderr


def test_version(tmp_path: Path) -> None:
    proc = _run("--version", tmp=tmp_path)
    assert (proc.returncode, proc.stdout.strip()) == (0, f"inferstream {version('inferstream')}")


def test_help_is_plain_text_and_every_option_explains_itself(tmp_path: Path) -> None:
    proc = _run("--help", tmp=tmp_path)
    assert proc.returncode == 0 and "``" not in proc.stdout and "flows" in proc.stdout
    missing = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:  # argparse has no public listing of its actions
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "inferstream")
    assert missing == []


def test_a_usage_error_exits_2_with_argparse_message(tmp_path: Path) -> None:
    proc = _run("flows", "run", "nonsense", tmp=tmp_path)
    assert proc.returncode == 2 and "invalid choice: 'nonsense'" in proc.stderr
