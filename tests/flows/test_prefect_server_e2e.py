"""The real thing, once: `prefect server start` (with its UI) on a free port, the drift
automation created by `inferstream flows automation` with a local HTTP receiver as
webhook, `prefect deploy --all` from prefect.yaml, a process worker, and the hourly
drift deployment (its cron on the server) run on a drifted lake. Checked through the
server's API: the scan and the model's run end Completed "Drift detected", the run is
named after model, version and window, is tagged, and has its four artifacts; the
webhook receives the drift event. Then the one-model deployment on an empty hour: Failed
"No data", named and tagged the same way, the no-data event at the webhook, and the
artifacts under the same keys (one per run, the newest NO DATA). No run's logs (read
from the API) nor the worker's hold a traceback. Each run page, rendered by headless
Chromium from the server's own UI, shows its verdict. Bounded: every wait has a
deadline."""

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
T2, T3 = "2026-03-01T12:00:00+00:00", "2026-03-01T13:00:00+00:00"  # no traffic
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
        time.sleep(0.5)
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


class _Prefect:
    """A running ``prefect server`` (and, once started, a process worker) in ``project``:
    its CLI, its flow runs and their logs, read through the server's API."""

    def __init__(self, tmp_path: Path, data_dir: Path) -> None:
        self.port = _free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        env = {
            **os.environ,
            "PREFECT_HOME": str(tmp_path / "prefect-home"),
            "PREFECT_API_URL": self.api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "true",
            "PREFECT_LOGGING_LEVEL": "INFO",
            # the worker asks for due runs every second, not every 10 s: the empty hour's
            # run, created while the worker runs, waited out most of a 10 s poll
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "INFERSTREAM_DATA_DIR": str(data_dir),
            "INFERSTREAM_REPORTS_BASE_URL": REPORTS_URL,
            # the worker's flow processes run in the project dir: this checkout's packages, not
            # whichever one the environment's editable install points at
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
        }
        env.pop("PREFECT_API_KEY", None)
        env.pop("INFERSTREAM_DRIFT_WEBHOOK_URL", None)  # the notification must come from the automation
        self.env = env
        self.project = tmp_path / "project"
        self.project.mkdir()
        shutil.copy(ROOT / "prefect.yaml", self.project / "prefect.yaml")
        (self.project / "flows").symlink_to(ROOT / "flows")
        self.logs = {name: tmp_path / f"{name}.log" for name in ("server", "worker")}
        self.server: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None

    def tail(self, name: str) -> Callable[[], str]:
        return lambda: f"{name} log:\n" + self.logs[name].read_text(errors="replace")[-4000:]

    def start_server(self) -> None:
        self.server = _start(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            self.env,
            self.project,
            self.logs["server"],
        )

        def healthy() -> bool:
            assert self.server is not None and self.server.poll() is None, self.tail("server")()
            try:
                return httpx.get(f"{self.api}/health", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        _until("prefect server health", 300, healthy, self.tail("server"))

    def start_worker(self) -> None:
        self.worker = _start(
            [PREFECT, "worker", "start", "--pool", "inferstream", "--type", "process"],
            self.env,
            self.project,
            self.logs["worker"],
        )

    def stop(self) -> None:
        for proc in (self.worker, self.server):
            if proc is not None:
                _stop(proc)

    def cli(self, *args: str, exe: str = PREFECT) -> str:
        out = subprocess.run(
            [exe, *args], env=self.env, cwd=self.project, capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        return out.stdout

    def run_deployment(self, name: str, params: dict[str, str]) -> None:
        out = self.cli(
            "--no-prompt",
            "deployment",
            "run",
            name,
            *[a for k, v in params.items() for a in ("--param", f"{k}={v}")],
        )
        assert "Created flow run" in out

    def post(self, path: str, body: dict) -> Any:
        return httpx.post(f"{self.api}{path}", json=body, timeout=10).json()

    def runs(self) -> list[dict]:
        return self.post("/flow_runs/filter", {})

    def final_run(self, what: str, pick: Callable[[dict], bool]) -> dict:
        """The first run ``pick`` accepts, once it is in a final state."""

        def probe() -> dict | None:
            got = [r for r in self.runs() if pick(r)]
            if got and got[0]["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                return got[0]
            return None

        return _until(what, 420, probe, self.tail("worker"))

    def run_logs(self, *runs: dict) -> list[list[str]]:
        """Each run's logs as the UI shows them, read again a moment after the last
        run's last line ("Finished in state <name>(...)") arrived, so anything the engine
        logs after it (Prefect's traceback of a failed state) has arrived as well."""

        def read(r: dict) -> list[str]:
            got = self.post(
                "/logs/filter",
                {"logs": {"flow_run_id": {"any_": [r["id"]]}}, "sort": "TIMESTAMP_ASC"},
            )
            return [f"{g['level']} {g['message']}" for g in got if g["task_run_id"] is None]

        for r in runs:
            last = f"20 Finished in state {r['state']['name']}("
            _until(
                f"{r['name']}'s last log line",
                60,
                lambda r=r, last=last: last in "\n".join(read(r)),
                self.tail("worker"),
            )
        # not a wait for a condition: a traceback that may follow the last line has no
        # condition of its own to wait on, so it is given a fixed 5 s to show up (once,
        # after the last run's last line: the earlier runs' lines are older)
        time.sleep(5)
        return [read(r) for r in runs]

    def artifacts(self, flow_run_id: str) -> dict[str, dict]:
        arts = self.post("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}})
        return {a["key"]: a for a in arts}


def _no_traceback(text: str) -> None:
    assert "Traceback" not in text and "Engine execution exited" not in text, text[-3000:]


def _check_drifted_hour(pf: _Prefect, m: Any, hook: Webhook) -> tuple[dict, dict]:
    """The hourly scan of the drifted hour and its model's run: verdicts, names, tags,
    the webhook call and the four artifacts. Returns (scan, run)."""
    scan = pf.final_run("the scan's final state", lambda r: r["parent_task_run_id"] is None)
    assert (scan["state"]["type"], scan["state"]["name"]) == ("COMPLETED", "Drift detected"), scan
    assert scan["name"] == "all models 2026-03-01 10:00-11:00Z"
    (run,) = [r for r in pf.runs() if r["parent_task_run_id"] is not None]
    assert run["name"] == f"{m.name} v{m.version} 2026-03-01 10:00-11:00Z"
    assert (run["state"]["type"], run["state"]["name"]) == ("COMPLETED", "Drift detected")
    assert {f"model:{m.name}", f"version:{m.version}"} <= set(run["tags"])

    # the notification: the automation calls the webhook block with the event
    received = _until("the webhook call", 120, lambda: list(hook.received), pf.tail("server"))
    body = received[0]["body"]
    assert body["event"] == "inferstream.drift.detected"
    assert body["resource"] == f"inferstream.model.{m.name}.v{m.version}"
    assert (body["payload"]["model"], body["payload"]["verdict"]) == (m.name, "DRIFT")
    assert "mean_radius" in body["payload"]["drifted_columns"]

    by_key = pf.artifacts(run["id"])
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
    return scan, run


def _check_empty_hour(pf: _Prefect, m: Any, hook: Webhook, scan: dict) -> dict:
    """An empty hour, run on demand through the one-model deployment: "No data", a
    failed run, and the no-data webhook call (that it is not an error, no traceback in
    its logs, is read with the other runs' logs)."""
    pf.run_deployment("drift/drift-model", {"model_name": m.name, "start": T2, "end": T3})
    empty = pf.final_run(
        "the empty hour's final state",
        lambda r: r["parent_task_run_id"] is None and r["id"] != scan["id"],
    )
    assert (empty["state"]["type"], empty["state"]["name"]) == ("FAILED", "No data"), empty
    assert empty["state"]["message"].startswith("no data: the window holds no rows"), empty
    assert empty["name"] == f"{m.name} v{m.version} 2026-03-01 12:00-13:00Z"
    assert {f"model:{m.name}", f"version:{m.version}"} <= set(empty["tags"])
    silent = _until(
        "the no-data webhook call",
        120,
        lambda: [r["body"] for r in hook.received if r["body"]["event"].endswith(".no-data")],
        pf.tail("server"),
    )
    assert (silent[0]["payload"]["verdict"], silent[0]["payload"]["rows"]) == ("NO DATA", 0)
    assert silent[0]["resource"] == f"inferstream.model.{m.name}.v{m.version}"
    return empty


def _check_run_pages(pf: _Prefect, tmp_path: Path, run: dict, empty: dict) -> None:
    """The run pages in the server's UI, as a user opens them."""
    for r, verdict in ((run, "Drift detected"), (empty, "No data")):
        page_url = f"http://127.0.0.1:{pf.port}/runs/flow-run/{r['id']}"
        dom = _chromium(page_url, tmp_path, "--dump-dom")
        text = re.sub(
            r"\s+",
            " ",
            re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)),
        )
        assert verdict in text and r["name"] in text, text[:3000]
    shot = tmp_path / "run-page.png"
    _chromium(f"http://127.0.0.1:{pf.port}/runs/flow-run/{run['id']}", tmp_path, f"--screenshot={shot}")
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one


@pytest.mark.slow
@pytest.mark.timeout(1200)  # a loaded 2-core machine: the server alone can take minutes
def test_hourly_drift_in_a_real_prefect_server(tmp_path, model_lake, write_lake):
    m = model_lake
    write_lake(m.data_dir / "lake", m.name, m.version, m.drifted(), m.features)
    pf = _Prefect(tmp_path, m.data_dir)
    try:
        pf.start_server()
        with Webhook() as hook:
            made = pf.cli("flows", "automation", "--webhook-url", hook.url, exe=str(BIN / "inferstream"))
            assert "inferstream: notify on drift" in made
            pf.cli("--no-prompt", "work-pool", "create", "inferstream", "--type", "process")
            pf.start_worker()  # it starts while the deployments are made: nothing is due yet
            pf.cli("--no-prompt", "deploy", "--all")
            hourly = httpx.get(f"{pf.api}/deployments/name/drift-all/drift-hourly", timeout=10).json()
            assert [s["schedule"]["cron"] for s in hourly["schedules"]] == ["5 * * * *"], hourly
            pf.run_deployment("drift-all/drift-hourly", {"start": T0, "end": T1})
            scan, run = _check_drifted_hour(pf, m, hook)
            empty = _check_empty_hour(pf, m, hook, scan)
        # no run's logs hold a traceback; the empty hour's end with its verdict
        *drifted, lines = pf.run_logs(scan, run, empty)
        for got in drifted:
            _no_traceback("\n".join(got))
        assert lines[-1].startswith("20 Finished in state No data('no data"), lines[-3:]
        _no_traceback("\n".join(lines))

        # stable keys: each key holds one artifact per run, the newest the empty hour's
        prefix = f"drift-{m.name}-v{m.version}"
        for kind in ("summary", "report"):
            versions = pf.post(
                "/artifacts/filter",
                {"artifacts": {"key": {"any_": [f"{prefix}-{kind}"]}}, "sort": "CREATED_DESC"},
            )
            assert [a["flow_run_id"] for a in versions] == [empty["id"], run["id"]], kind
        latest = pf.post("/artifacts/latest/filter", {"artifacts": {"key": {"any_": [f"{prefix}-summary"]}}})
        assert "**Verdict:** NO DATA" in latest[0]["data"], latest
        _no_traceback(pf.logs["worker"].read_text(errors="replace"))
        _check_run_pages(pf, tmp_path, run, empty)
    finally:
        pf.stop()
