"""``inferstream flows serve``: the deployments of ``prefect.yaml`` served by one local
process (Prefect's ``serve``), for machines without a work pool and worker. The YAML
stays the one place where schedules and parameters are written.

Which Prefect server: the one at ``PREFECT_API_URL`` when it is set (runs, logs and the
UI stay there after this process stops). Without it, ``serve`` starts a local one,
``prefect server start`` with its UI on 127.0.0.1:``server_port`` (its database is
Prefect's own, under ``PREFECT_HOME``, so history is kept), and stops it on the way
out. That server runs in its own session: a terminal's Ctrl-C reaches this process
only, which pauses the deployments, then stops the server. (Prefect's own temporary
server is a child in the terminal's process group: Ctrl-C killed it first, and the
shutdown that followed printed tracebacks and hung.)"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import yaml

from common.errors import ConfigError, DependencyUnavailable

if TYPE_CHECKING:
    from prefect import Flow

log = logging.getLogger(__name__)

PREFECT_YAML = Path(__file__).resolve().parent.parent / "prefect.yaml"


def deployment_specs(path: Path = PREFECT_YAML) -> list[dict[str, Any]]:
    doc = yaml.safe_load(path.read_text())
    return list(doc.get("deployments") or [])


def runner_deployments(path: Path = PREFECT_YAML) -> list[Any]:
    """One runner deployment per entry of ``path``: same names, parameters, schedules."""
    from prefect.flows import load_flow_from_entrypoint

    root = path.parent
    runners = []
    for spec in deployment_specs(path):
        file, func = spec["entrypoint"].split(":")
        flow: Flow[..., Any] = load_flow_from_entrypoint(f"{root / file}:{func}")
        crons = [s["cron"] for s in spec.get("schedules") or []]
        runners.append(
            flow.to_deployment(
                name=spec["name"],
                cron=crons[0] if crons else None,
                parameters=spec.get("parameters") or {},
                tags=spec.get("tags") or [],
                description=spec.get("description"),
            )
        )
    return runners


def serve(path: Path = PREFECT_YAML, *, server_port: int = 4200, log_dir: Path | None = None) -> None:
    """Block serving every deployment in ``path`` on their cron schedules, on the
    server at ``PREFECT_API_URL``, or on a local one started here (see the module)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = PREFECT_API_URL.value()  # the environment, or the active Prefect profile
    with contextlib.ExitStack() as stack:
        if url:
            log.info("serving on the Prefect server at %s (PREFECT_API_URL)", url)
        else:
            # SIGTERM (a service manager) takes Ctrl-C's path: the server is stopped too
            signal.signal(signal.SIGTERM, _interrupt)
            url = stack.enter_context(local_server(server_port, log_dir or Path(".")))
            os.environ["PREFECT_API_URL"] = url  # for the flow-run processes
            stack.enter_context(temporary_settings(updates={PREFECT_API_URL: url}))
        from prefect import serve as prefect_serve

        prefect_serve(*runner_deployments(path))


@contextlib.contextmanager
def local_server(port: int, log_dir: Path, timeout_s: float = 300.0) -> Iterator[str]:
    """``prefect server start`` on 127.0.0.1:``port`` in its own session, until exit."""
    api = f"http://127.0.0.1:{port}/api"
    if _healthy(api):
        raise ConfigError(
            f"a Prefect server already answers at {api}: serve on it with PREFECT_API_URL={api}, "
            "or pick another --server-port"
        )
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "prefect-server.log"
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    try:
        log.info("PREFECT_API_URL is not set: starting a local Prefect server on %s (log %s)", api, log_path)
        deadline = time.monotonic() + timeout_s
        while not _healthy(api):
            if proc.poll() is not None:
                raise DependencyUnavailable(
                    f"the local Prefect server exited with {proc.returncode} (see {log_path}); "
                    f"is port {port} free? (--server-port)"
                )
            if time.monotonic() > deadline:
                raise DependencyUnavailable(f"the local Prefect server did not answer in {timeout_s:.0f} s")
            time.sleep(0.5)
        log.info("Prefect server ready: UI http://127.0.0.1:%d, API %s", port, api)
        yield api
    finally:
        _stop(proc)
        log.info("Prefect server on port %d stopped", port)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _healthy(api: str) -> bool:
    try:
        return httpx.get(f"{api}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's whole session (uvicorn and its services), then SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
