"""The real thing, once: `prefect server start` on a free port, `prefect deploy --all`
from prefect.yaml, a process worker, and the drift deployment run on a drifted lake ends
in the "Drift detected" state. Bounded: every wait has a deadline (about 3 minutes in all)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))
T0 = "2026-03-01T10:00:00+00:00"
T1 = "2026-03-01T11:00:00+00:00"


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


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_drift_deployment_runs_on_a_worker_and_ends_drift_detected(tmp_path, model_lake, write_lake):
    m = model_lake
    write_lake(m.data_dir / "lake", m.name, m.version, m.drifted(), m.features)
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "INFERSTREAM_DATA_DIR": str(m.data_dir),
    }
    env.pop("PREFECT_API_KEY", None)
    # deploy from a copy of the project file; flows/ is linked so entrypoints resolve
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "prefect.yaml", project / "prefect.yaml")
    (project / "flows").symlink_to(ROOT / "flows")
    server = _start(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env,
        project,
        tmp_path / "server.log",
    )
    worker = None
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "prefect server did not become healthy in 90 s"
            time.sleep(1)

        def cli(*args: str) -> str:
            out = subprocess.run(
                [PREFECT, "--no-prompt", *args],
                env=env,
                cwd=project,
                capture_output=True,
                text=True,
                timeout=90,
            )
            assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
            return out.stdout

        cli("work-pool", "create", "inferstream", "--type", "process")
        cli("deploy", "--all")
        params = {"model_name": m.name, "start": T0, "end": T1}
        run_out = cli(
            "deployment",
            "run",
            "drift/drift-hourly",
            *[a for k, v in params.items() for a in ("--param", f"{k}={v}")],
        )
        assert "Created flow run" in run_out
        worker = _start(
            [PREFECT, "worker", "start", "--pool", "inferstream", "--type", "process"],
            env,
            project,
            tmp_path / "worker.log",
        )
        deadline = time.monotonic() + 120
        state = None
        while time.monotonic() < deadline:
            runs = httpx.post(f"{api}/flow_runs/filter", json={}, timeout=5).json()
            drift_runs = [r for r in runs if r["parameters"].get("model_name") == m.name]
            if drift_runs and drift_runs[0]["state"]["type"] in (
                "COMPLETED",
                "FAILED",
                "CRASHED",
                "CANCELLED",
            ):
                state = drift_runs[0]["state"]
                break
            time.sleep(2)
        assert state is not None, (
            "no final state in 120 s; worker log:\n" + (tmp_path / "worker.log").read_text()[-3000:]
        )
        assert (state["type"], state["name"]) == ("FAILED", "Drift detected"), state
        (summary,) = list((m.data_dir / "reports" / m.name).glob("*/summary.json"))
        assert orjson.loads(summary.read_bytes())["verdict"]["drift"] is True
    finally:
        if worker is not None:
            _stop(worker)
        _stop(server)
