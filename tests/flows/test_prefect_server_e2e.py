"""The real thing, once: `prefect server start` (with its UI) on a free port, the drift
automation created by `inferstream flows automation` with a local HTTP receiver as
webhook, `prefect deploy --all` from prefect.yaml, a process worker, and the hourly
drift deployment run on a drifted lake. Checked through the server's API: the scan and
the model's run end Completed "Drift detected", the run is named after model, version
and window, is tagged, and has its four artifacts; the webhook receives the drift
event; the worker logged no traceback; the run page, rendered by headless Chromium from
the server's own UI, shows the verdict. Bounded: every wait has a deadline."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from .test_drift_flow import Webhook

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PREFECT = str(BIN / "prefect")
T0 = "2026-03-01T10:00:00+00:00"
T1 = "2026-03-01T11:00:00+00:00"
REPORTS_URL = "https://reports.example/drift"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        args, env=env, cwd=cwd, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def _until(what: str, timeout_s: float, probe: Callable[[], Any], on_fail: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = probe()
        if got:
            return got
        time.sleep(2)
    raise AssertionError(f"{what}: nothing within {timeout_s:.0f} s\n{on_fail()}")


def _chromium(url: str, tmp: Path, *extra: str) -> str:
    exe = shutil.which("chromium")
    assert exe, "chromium is not installed: run .ci/ensure-chromium (make test does)"
    out = subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            f"--user-data-dir={tmp / 'chromium-profile'}",
            "--window-size=1400,1000",
            "--virtual-time-budget=30000",  # the UI is an SPA: let it fetch and render
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=150,
        check=True,
    )
    return out.stdout


@pytest.mark.slow
@pytest.mark.timeout(1200)  # a loaded 2-core machine: the server alone can take minutes
def test_hourly_drift_in_a_real_prefect_server(tmp_path, model_lake, write_lake):
    m = model_lake
    write_lake(m.data_dir / "lake", m.name, m.version, m.drifted(), m.features)
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "true",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "INFERSTREAM_DATA_DIR": str(m.data_dir),
        "INFERSTREAM_REPORTS_BASE_URL": REPORTS_URL,
    }
    env.pop("PREFECT_API_KEY", None)
    env.pop("INFERSTREAM_DRIFT_WEBHOOK_URL", None)  # the notification must come from the automation
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "prefect.yaml", project / "prefect.yaml")
    (project / "flows").symlink_to(ROOT / "flows")
    logs = {name: tmp_path / f"{name}.log" for name in ("server", "worker")}

    def tail(name: str) -> Callable[[], str]:
        return lambda: f"{name} log:\n" + logs[name].read_text(errors="replace")[-4000:]

    server = _start(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, project, logs["server"]
    )
    worker = None
    try:

        def healthy() -> bool:
            assert server.poll() is None, tail("server")()
            try:
                return httpx.get(f"{api}/health", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        _until("prefect server health", 300, healthy, tail("server"))

        def cli(*args: str, exe: str = PREFECT) -> str:
            out = subprocess.run(
                [exe, *args], env=env, cwd=project, capture_output=True, text=True, timeout=300
            )
            assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
            return out.stdout

        with Webhook() as hook:
            made = cli("flows", "automation", "--webhook-url", hook.url, exe=str(BIN / "inferstream"))
            assert "inferstream: notify on drift" in made
            cli("--no-prompt", "work-pool", "create", "inferstream", "--type", "process")
            cli("--no-prompt", "deploy", "--all")
            params = {"start": T0, "end": T1}
            out = cli(
                "--no-prompt",
                "deployment",
                "run",
                "drift-all/drift-hourly",
                *[a for k, v in params.items() for a in ("--param", f"{k}={v}")],
            )
            assert "Created flow run" in out
            worker = _start(
                [PREFECT, "worker", "start", "--pool", "inferstream", "--type", "process"],
                env,
                project,
                logs["worker"],
            )

            def runs() -> list[dict]:
                return httpx.post(f"{api}/flow_runs/filter", json={}, timeout=10).json()

            def scan_final() -> dict | None:
                scan = [r for r in runs() if r["parent_task_run_id"] is None]
                if scan and scan[0]["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                    return scan[0]
                return None

            scan = _until("the scan's final state", 420, scan_final, tail("worker"))
            assert (scan["state"]["type"], scan["state"]["name"]) == ("COMPLETED", "Drift detected"), scan
            assert scan["name"] == "all models 2026-03-01 10:00-11:00Z"
            (run,) = [r for r in runs() if r["parent_task_run_id"] is not None]
            assert run["name"] == f"{m.name} v{m.version} 2026-03-01 10:00-11:00Z"
            assert (run["state"]["type"], run["state"]["name"]) == ("COMPLETED", "Drift detected")
            assert {f"model:{m.name}", f"version:{m.version}"} <= set(run["tags"])

            # the notification: the automation calls the webhook block with the event
            received = _until("the webhook call", 120, lambda: list(hook.received), tail("server"))
        body = received[0]["body"]
        assert body["event"] == "inferstream.drift.detected"
        assert body["resource"] == f"inferstream.model.{m.name}.v{m.version}"
        assert (body["payload"]["model"], body["payload"]["verdict"]) == (m.name, "DRIFT")
        assert "mean_radius" in body["payload"]["drifted_columns"]

        arts = httpx.post(
            f"{api}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run["id"]]}}}, timeout=10
        ).json()
        by_key = {a["key"]: a for a in arts}
        prefix = f"drift-{m.name}-v{m.version}"
        assert set(by_key) == {
            f"{prefix}-summary",
            f"{prefix}-report",
            f"{prefix}-columns",
            f"{prefix}-quality",
        }
        (run_dir,) = [p.parent for p in (m.data_dir / "reports" / m.name).glob("*/summary.json")]
        url = f"{REPORTS_URL}/{m.name}/{run_dir.name}/report.html"
        # Prefect stores a link artifact as markdown: [text](url)
        assert by_key[f"{prefix}-report"]["data"] == f"[drift report]({url})"
        md = by_key[f"{prefix}-summary"]["data"]
        assert "**Verdict:** DRIFT" in md and "2026-03-01 10:00 – 11:00 UTC (1 h)" in md
        table = orjson.loads(by_key[f"{prefix}-columns"]["data"])
        row = next(r for r in table if r["column"] == "mean_radius")
        assert (row["method"], row["verdict"]) == ("ks", "DRIFT")
        summary = orjson.loads((run_dir / "summary.json").read_bytes())
        assert row["score"] == pytest.approx(
            next(c["score"] for c in summary["columns"] if c["column"] == "mean_radius")
        )

        worker_log = logs["worker"].read_text(errors="replace")
        assert "Traceback" not in worker_log and "Engine execution exited" not in worker_log, worker_log[
            -4000:
        ]

        # the run page in the server's UI, as a user opens it
        page_url = f"http://127.0.0.1:{port}/runs/flow-run/{run['id']}"
        dom = _chromium(page_url, tmp_path, "--dump-dom")
        text = re.sub(
            r"\s+", " ", re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S))
        )
        assert "Drift detected" in text and run["name"] in text, text[:3000]
        shot = tmp_path / "run-page.png"
        _chromium(page_url, tmp_path, f"--screenshot={shot}")
        assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    finally:
        if worker is not None:
            _stop(worker)
        _stop(server)


SERVED = {"drift-hourly", "drift-model", "bi-every-15-min", "maintenance-daily"}


def _serve_env(tmp_path: Path, api_url: str | None) -> dict[str, str]:
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "INFERSTREAM_DATA_DIR": str(tmp_path / "data"),
    }
    env.pop("PREFECT_API_KEY", None)
    env.pop("PREFECT_API_URL", None)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def _deployments(api: str) -> set[str]:
    try:
        r = httpx.post(f"{api}/deployments/filter", json={}, timeout=10)
    except httpx.TransportError:
        return set()
    return {d["name"] for d in r.json()} if r.status_code == 200 else set()


def _ctrl_c(proc: subprocess.Popen, log: Path) -> int:
    """SIGINT to the process group, as a terminal's Ctrl-C sends it; the return code."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        return proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        _stop(proc)
        text = log.read_text(errors="replace")[-4000:]
        raise AssertionError(f"still running 90 s after Ctrl-C:\n{text}") from None


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_flows_serve_on_a_real_prefect_server_and_ctrl_c_exits_cleanly(tmp_path):
    """PREFECT_API_URL points `inferstream flows serve` at a running `prefect server`:
    the deployments of prefect.yaml appear there; Ctrl-C ends serve at once, without a
    traceback, and leaves the server up."""
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = _serve_env(tmp_path, api)
    logs = {name: tmp_path / f"{name}.log" for name in ("server", "serve")}
    env_server = {**env, "PREFECT_UI_ENABLED": "false"}
    server = _start(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env_server,
        tmp_path,
        logs["server"],
    )
    serve = None
    try:
        tail = lambda name: lambda: logs[name].read_text(errors="replace")[-4000:]  # noqa: E731

        def healthy() -> bool:
            assert server.poll() is None, tail("server")()
            try:
                return httpx.get(f"{api}/health", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        _until("prefect server health", 300, healthy, tail("server"))
        serve = _start([sys.executable, "-m", "inferstream", "flows", "serve"], env, ROOT, logs["serve"])

        def served() -> bool:
            assert serve.poll() is None, tail("serve")()
            return "being served" in logs["serve"].read_text(errors="replace")

        _until("flows serve", 300, served, tail("serve"))
        assert _deployments(api) >= SERVED, tail("serve")()
        rc = _ctrl_c(serve, logs["serve"])
        assert rc in (0, 130), (rc, tail("serve")())
        assert server.poll() is None and healthy()  # someone else's server: left running
    finally:
        if serve is not None:
            _stop(serve)
        _stop(server)
    text = logs["serve"].read_text(errors="replace")
    assert f"serving on the Prefect server at {api} (PREFECT_API_URL)" in text
    assert "Traceback" not in text and "Starting temporary server" not in text, text


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_flows_serve_without_a_server_starts_one_with_its_ui_and_ctrl_c_stops_both(tmp_path):
    """Without PREFECT_API_URL, `flows serve` starts `prefect server start` (UI on) in its
    own session; a terminal's Ctrl-C (SIGINT to serve's process group) reaches serve only,
    which pauses the deployments and stops the server: no traceback, nothing left behind.
    (Prefect's temporary server died first, and the shutdown printed tracebacks and hung.)"""
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    log = tmp_path / "serve.log"
    serve = _start(
        [sys.executable, "-m", "inferstream", "flows", "serve", "--server-port", str(port)],
        _serve_env(tmp_path, None),
        ROOT,
        log,
    )
    try:
        tail = lambda: log.read_text(errors="replace")[-4000:]  # noqa: E731

        def served() -> bool:
            assert serve.poll() is None, tail()
            return "being served" in log.read_text(errors="replace")

        _until("flows serve", 600, served, tail)
        assert _deployments(api) >= SERVED, tail()
        ui = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert ui.status_code == 200 and "<html" in ui.text.lower()
        rc = _ctrl_c(serve, log)
        assert rc in (0, 130), (rc, tail())
    finally:
        _stop(serve)
    text = log.read_text(errors="replace")
    assert f"PREFECT_API_URL is not set: starting a local Prefect server on {api}" in text
    assert "Traceback" not in text and "Starting temporary server" not in text, text
    assert f"Prefect server on port {port} stopped" in text
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{api}/health", timeout=2)
