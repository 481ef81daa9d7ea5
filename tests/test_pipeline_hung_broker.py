"""A hung broker under load, end to end: the API (``inferstream api``), the broker and
the lake lander (``inferstream consume lake``) as real processes; the broker is frozen
with SIGSTOP for 15 s (the fault campaign's scenario) and resumed.

While it hangs the API spools; batches the broker had in fact received before it froze
are written when it resumes *and* replayed from the spool, so the topic may hold some
events twice. The lake holds one row per event id: every acknowledged event lands,
exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from common import events
from common.broker import EmbeddedBroker, free_port
from common.topics import ensure_topics
from inferstream.lakecheck import landing
from inferstream.procs import Child, wait_ready

from .support import api_env, consumer_env, read_values, wait_committed, wait_for_log, wait_landed

TOPIC = "inference-events"
HANG_S = float(os.environ.get("INFERSTREAM_TEST_HANG_S", "15"))
pytestmark = pytest.mark.slow


class _Load(threading.Thread):
    """Posts predictions from a few clients until stopped; keeps every acknowledged id."""

    def __init__(self, base: str, rows: list[dict]) -> None:
        super().__init__(daemon=True)
        self.base, self.rows = base, rows
        self.acked: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        def client(offset: int) -> None:
            with httpx.Client(base_url=self.base, timeout=10) as c:
                i = offset
                while not self.done.is_set():
                    r = c.post("/v1/predict", json={"features": self.rows[i % len(self.rows)]})
                    if r.status_code == 200:
                        self.acked.append(r.json()["prediction_id"])
                    i += 7
                    time.sleep(0.002)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


@pytest.mark.parametrize("broker", ["tansu", "kafka"])
def test_a_broker_hung_for_15s_under_load_leaves_one_lake_row_per_event(
    broker, tmp_path: Path, trained_model, request
):
    if broker == "tansu":
        tansu = EmbeddedBroker(port=free_port(), log_path=tmp_path / "tansu.log").start()
        bootstrap, pids = tansu.bootstrap_servers, [tansu.pid]
        idempotence = "false"
    else:
        cluster = request.getfixturevalue("kafka_cluster")
        bootstrap, pids = cluster.bootstrap_servers, [n.proc.pid for n in cluster.nodes]
        idempotence = "true"
    asyncio.run(ensure_topics(bootstrap, {TOPIC: 4, f"{TOPIC}.dlq": 1}))
    api_port = free_port()
    env = api_env(trained_model, bootstrap, TOPIC, api_port)
    env["INFERSTREAM_KAFKA_ENABLE_IDEMPOTENCE"] = idempotence
    env["INFERSTREAM_SPOOL_DIR"] = str(tmp_path / "spool")
    api = Child("api", ["api"], env, tmp_path / "api.log")
    lander = Child(
        "lander",
        ["consume", "lake"],
        consumer_env(
            bootstrap, TOPIC, tmp_path, "lake-hung", INFERSTREAM_KAFKA_ENABLE_IDEMPOTENCE=idempotence
        ),
        tmp_path / "lander.log",
    )
    hung = False
    try:
        base = f"http://127.0.0.1:{api_port}"
        wait_ready(f"{base}/readyz", api)
        wait_for_log(lander, "assigned group=", timeout_s=90)
        load = _Load(base, trained_model.rows)
        load.start()
        time.sleep(3)  # the scenario: load on a healthy broker first
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        hung, acked_at_hang = True, len(load.acked)
        time.sleep(HANG_S)  # the scenario: the broker hangs this long under load
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        hung = False
        time.sleep(5)  # the scenario: the load goes on while the API replays its spool
        load.done.set()
        load.join(timeout=30)
        acked = list(load.acked)
        assert len(acked) - acked_at_hang > 100, "the API did not answer while the broker hung"
        wait_landed(tmp_path / "lake", acked, [lander], timeout_s=120)
        # every copy the topic holds now is landed (the lander commits after the lake)
        wait_committed(bootstrap, "lake-hung", TOPIC, [lander], timeout_s=120)
        result = landing(tmp_path / "lake", acked)
        copies = Counter(events.decode(v)["event_id"] for v in read_values(bootstrap, TOPIC, len(acked)))
    finally:
        if hung:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        api.terminate()
        lander.terminate()
        if broker == "tansu":
            tansu.stop()
    twice = sum(1 for n in copies.values() if n > 1)
    print(
        f"hung {broker} {HANG_S:g}s: acked={len(acked)} (during the hang {len(acked) - acked_at_hang}) "
        f"events_in_topic_more_than_once={twice} lake_rows={result.rows} distinct={result.distinct} "
        f"missing={result.missing}"
    )
    assert set(acked) <= copies.keys(), "an acknowledged event is not in the topic"
    assert result.missing == 0, f"{result.missing} acknowledged events never landed"
    assert result.rows == result.distinct == len(set(acked)), "an event landed twice"
