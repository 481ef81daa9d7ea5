"""Several uvicorn workers: one spool slot each, and /metrics sums the whole service."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from common.broker import free_port
from inferstream.procs import Child, wait_ready

from ..support import api_env, wait_until

pytestmark = pytest.mark.slow
ENQUEUED = r"^inferstream_events_enqueued_total (\S+)$"


def _value(text: str, pattern: str) -> float:
    m = re.search(pattern, text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


def test_two_workers_report_the_whole_service_and_own_their_spools(
    tmp_path, trained_model, kafka_bootstrap, topic
):
    port = free_port()
    env = {
        **api_env(trained_model, kafka_bootstrap, topic, port),
        "INFERSTREAM_DATA_DIR": str(tmp_path / "data"),
        "INFERSTREAM_SPOOL_DIR": str(tmp_path / "spool"),
    }
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "models").symlink_to(trained_model.data_dir / "models")
    api = Child("api", ["api", "--workers", "2"], env, tmp_path / "api.log")
    base = f"http://127.0.0.1:{port}"
    n = 200
    try:
        wait_ready(f"{base}/readyz", api)
        # ready is one worker: wait for the other's start too (each claims a spool slot in
        # its lifespan; under load, the requests once all reached the first)
        wait_until(
            lambda: len(list((tmp_path / "spool").glob("slot-*"))) >= 2,
            60,
            "a spool slot for each of the two workers",
            on_timeout=api.tail,
        )
        # no keep-alive: every request is a new connection, so both workers get some
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=base, limits=limits, timeout=10) as c, ThreadPoolExecutor(4) as pool:
            codes = list(
                pool.map(
                    lambda r: c.post("/v1/predict", json={"features": r}).status_code, trained_model.rows[:n]
                )
            )
        assert codes == [200] * n
        # each worker copies its publisher counters into the shared files every second
        wait_until(
            lambda: _value(httpx.get(f"{base}/metrics", timeout=5).text, ENQUEUED) == n,
            30,
            f"/metrics summing {n} enqueued events",
            on_timeout=api.tail,
        )
        scrapes = [httpx.get(f"{base}/metrics", timeout=5).text for _ in range(6)]
    finally:
        api.terminate()
    pid_files = {
        p.name.split("_")[-1] for p in (tmp_path / "data" / "prometheus" / str(port)).glob("counter_*.db")
    }
    assert len(pid_files) >= 2, pid_files  # two processes wrote metrics
    for text in scrapes:  # whichever worker answered, it reports the sum
        requests = r'^inferstream_requests_total\{model="[^"]+",route="/v1/predict",status="200",'
        requests += r'version="[^"]+"\}'
        assert _value(text, requests + r" (\S+)$") == n
        assert _value(text, ENQUEUED) == n
    slots = sorted(p.name for p in (tmp_path / "spool").glob("slot-*"))
    assert slots == ["slot-0", "slot-1"]
