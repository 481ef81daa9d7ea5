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


# -- `python -m inferstream`, exactly as a user runs it --------------------------------


def _cli(*args: str, tmp: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m inferstream ARGS`` in a clean environment (no Kafka, no Prefect server)."""
    return subprocess.run(
        [sys.executable, "-m", "inferstream", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "PATH": "/usr/bin:/bin",
            "PREFECT_HOME": str(tmp / "prefect"),
            "INFERSTREAM_DATA_DIR": str(tmp),
            **env,
        },
        check=False,
    )


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and subcommand of the parser, as argv prefixes."""
    out = []
    for action in parser._actions:  # argparse has no public listing of its actions
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.append((*path, name))
                out += _commands(sub, (*path, name))
    return out


def _error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    """The lines of stderr that speak to the user (not a library's log line)."""
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("inferstream")]


def test_module_help_and_version(tmp_path: Path) -> None:
    helped = _cli("--help", tmp=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("usage: inferstream") and "flows" in helped.stdout
    versioned = _cli("--version", tmp=tmp_path)
    assert (versioned.returncode, versioned.stdout.strip()) == (0, f"inferstream {version('inferstream')}")


@pytest.mark.parametrize("command", _commands(build_parser()), ids=" ".join)
def test_every_subcommand_has_help_that_exits_0(command: tuple[str, ...], tmp_path: Path) -> None:
    proc = _cli(*command, "--help", tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: inferstream {' '.join(command)}"), proc.stdout[:300]
    assert proc.stderr == ""


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ((), "the following arguments are required: command"),
        (("nonsense",), "invalid choice: 'nonsense'"),
        (("flows", "run", "drift", "--bogus"), "unrecognized arguments: --bogus"),
        (("kafka",), "the following arguments are required: kafka_command"),
        (("compact", "--retention-days", "-1"), "argument --retention-days: -1 is negative: give 0 or more"),
    ],
    ids=["no-command", "unknown-command", "unknown-option", "missing-subcommand", "negative-retention"],
)
def test_bad_usage_exits_2_with_one_error_line(args: tuple[str, ...], says: str, tmp_path: Path) -> None:
    proc = _cli(*args, tmp=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = [ln for ln in proc.stderr.splitlines() if ": error: " in ln]
    assert line.startswith("inferstream") and says in line, proc.stderr
    assert "Traceback" not in proc.stderr


def test_unset_kafka_bootstrap_servers_is_one_line_naming_it(tmp_path: Path) -> None:
    proc = _cli("kafka", "status", tmp=tmp_path)
    assert proc.returncode == 2, proc.stderr
    (line,) = _error_lines(proc)
    assert line.startswith("inferstream: KAFKA_BOOTSTRAP_SERVERS is not set"), line
    assert "`inferstream broker`" in line  # and how to get one
    assert "Traceback" not in proc.stderr


def test_unreachable_kafka_bootstrap_servers_is_one_line_naming_it(tmp_path: Path) -> None:
    from common.broker import free_port

    wrong = f"127.0.0.1:{free_port()}"  # nothing listens there
    proc = _cli("kafka", "status", tmp=tmp_path, KAFKA_BOOTSTRAP_SERVERS=wrong)
    assert proc.returncode == 2, proc.stderr
    (line,) = _error_lines(proc)
    assert line == f"inferstream: cannot reach Kafka at {wrong}: check KAFKA_BOOTSTRAP_SERVERS", line
    assert "Traceback" not in proc.stderr


def test_malformed_kafka_bootstrap_servers_is_one_line_naming_it(tmp_path: Path) -> None:
    proc = _cli("kafka", "status", tmp=tmp_path, KAFKA_BOOTSTRAP_SERVERS="broker:nine")
    assert proc.returncode == 2, proc.stderr
    (line,) = _error_lines(proc)
    assert "KAFKA_BOOTSTRAP_SERVERS" in line, line
    assert "Traceback" not in proc.stderr


def test_flows_run_mistakes_name_the_fix_through_the_module_too(data_dir: Path) -> None:
    model = _cli("flows", "run", "drift", "--model", "nope", tmp=data_dir)
    assert model.returncode == 2
    (line,) = _error_lines(model)
    assert line.startswith("inferstream: --model nope: no such model"), line
    assert "models there: car-loan, fraud" in line and "(or --data-dir)" in line, line
    start = _cli("flows", "run", "drift", "--start", "yesterday", "--end", "2026-03-02T00:00Z", tmp=data_dir)
    assert start.returncode == 2
    (line,) = _error_lines(start)
    assert line.startswith("inferstream: --start: not an ISO-8601 time"), line


@pytest.mark.parametrize("servers", ["127.0.0.1:9092", "a:1, b:65535", "[::1]:9092"])
def test_well_formed_bootstrap_servers_pass(servers: str) -> None:
    from common.settings import check_bootstrap

    assert check_bootstrap(servers) == servers


@pytest.mark.parametrize("servers", ["broker:nine", "broker", ":9092", "host:0", "a:1,,b:2", "host:70000"])
def test_malformed_bootstrap_servers_name_the_setting_and_the_entry(servers: str) -> None:
    from common.errors import ConfigError
    from common.settings import check_bootstrap

    with pytest.raises(ConfigError, match="KAFKA_BOOTSTRAP_SERVERS=.*is not host:port"):
        check_bootstrap(servers)
