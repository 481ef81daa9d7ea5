"""The walking skeleton end to end, with real processes and the real broker:
HTTP predictions → API → Kafka → lake lander → Delta table → DuckDB counts."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import httpx
import pytest

from common import lake
from common.broker import free_port
from inferstream.lakecheck import landing
from inferstream.procs import Child, wait_ready

from .support import Stream, api_counter, api_env, consumer_env, wait_for_log, wait_landed, wait_until


def _lander_env(bootstrap: str, topic: str, data_dir: Path, group: str) -> dict[str, str]:
    return consumer_env(
        bootstrap, topic, data_dir, group, INFERSTREAM_MAX_BATCH_ROWS="250", INFERSTREAM_MAX_BATCH_AGE_S="0.3"
    )


def _wait_assigned(child: Child) -> None:
    """Tansu rebalances slowly (a killed member's session must expire first)."""
    wait_for_log(child, "consumers.runner: assigned", timeout_s=90)


@pytest.mark.slow
def test_http_predictions_land_in_the_lake_exactly_once(trained_model, kafka_bootstrap, topic, tmp_path):
    port = free_port()
    api = Child("api", ["api"], api_env(trained_model, kafka_bootstrap, topic, port), tmp_path / "api.log")
    lander = Child(
        "lander",
        ["consume", "lake"],
        _lander_env(kafka_bootstrap, topic, tmp_path, "lake-e2e"),
        tmp_path / "lander.log",
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", api)
        n = 600
        rows = [trained_model.rows[i % len(trained_model.rows)] for i in range(n)]

        async def send_all() -> list[str]:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                sem = asyncio.Semaphore(16)

                async def one(row: dict) -> str:
                    async with sem:
                        r = await client.post("/v1/predict", json={"features": row})
                        assert r.status_code == 200, r.text
                        return str(r.json()["prediction_id"])

                return list(await asyncio.gather(*(one(r) for r in rows)))

        ids = asyncio.run(send_all())
        assert len(set(ids)) == n
        result = wait_landed(tmp_path / "lake", ids, [lander])
        assert (result.rows, result.distinct, result.missing, result.duplicates) == (n, n, 0, 0)
    finally:
        api.terminate()
        lander.terminate()


@pytest.mark.slow
def test_lander_killed_with_sigkill_mid_stream_still_lands_exactly_n(kafka_bootstrap, topic, tmp_path, seed):
    n = 5000
    lake_dir = tmp_path / "lake"
    env = _lander_env(kafka_bootstrap, topic, tmp_path, "lake-sigkill")
    # widen the window between a durable file and its commit, so that kills can land
    # there (files written, offsets not committed) and the replay path is exercised
    env["INFERSTREAM_FAULT_PAUSE_BEFORE_COMMIT_S"] = "0.3"
    lander = Child("lander-0", ["consume", "lake"], env, tmp_path / "lander-0.log")
    _wait_assigned(lander)
    stream = Stream(kafka_bootstrap, topic, n, burst=25, pause_s=0.1)  # ~25 s of stream
    stream.start()
    rng = random.Random(seed)
    try:
        landed = 0
        for kill in range(1, 3):
            wait_until(
                lambda: landing(lake_dir, list(stream.ids)).distinct > landed,  # noqa: B023 - called at once
                60,
                f"a batch landing before kill {kill}",
                interval_s=0.1,
                on_timeout=lander.tail,
            )
            time.sleep(rng.uniform(0.1, 0.7))  # the scenario: a seeded moment of the landing
            landed = landing(lake_dir, list(stream.ids)).distinct
            lander.kill()
            assert 0 < landed < n, f"kill {kill} was not mid-stream: {landed} of {n} landed"
            lander = Child(f"lander-{kill}", ["consume", "lake"], env, tmp_path / f"lander-{kill}.log")
            _wait_assigned(lander)
        stream.join(timeout=120)
        assert stream.error is None, stream.error
        assert len(stream.ids) == n
        result = wait_landed(lake_dir, stream.ids, [lander], timeout_s=120)
        assert (result.distinct, result.missing, result.duplicates) == (n, 0, 0)
    finally:
        lander.terminate()


@pytest.mark.slow
def test_sigterm_makes_the_lander_flush_and_commit(kafka_bootstrap, topic, tmp_path, lake_at):
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    n = 500
    env = {**_lander_env(kafka_bootstrap, topic, tmp_path, "lake-sigterm"), **lake_at.env}
    env["INFERSTREAM_MAX_BATCH_AGE_S"] = "600"  # no flush by age: only SIGTERM will flush
    env["INFERSTREAM_MAX_BATCH_ROWS"] = "1000000"
    port = free_port()
    env["INFERSTREAM_METRICS_PORT"] = str(port)
    lander = Child("lander", ["consume", "lake"], env, tmp_path / "lander.log")
    try:
        _wait_assigned(lander)
        stream = Stream(kafka_bootstrap, topic, n, burst=250, pause_s=0.0)
        stream.run()
        assert stream.error is None and len(stream.ids) == n
        # consumed, but held in the batch
        wait_until(
            lambda: api_counter(port, "inferstream_consumer_records_total") >= n,
            60,
            f"the lander consuming {n} records",
            on_timeout=lander.tail,
        )
        assert not lake.has_rows(lake_at.where), "flushed before SIGTERM: the test proves nothing"
        assert lander.terminate(timeout_s=30) == 0
    finally:
        lander.kill()
    result = landing(lake_at.where, stream.ids)
    assert (result.distinct, result.duplicates) == (n, 0)

    async def committed_total() -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(
                "lake-sigterm", partitions=[TopicPartition(topic, p) for p in range(4)]
            )
        finally:
            await admin.close()
        return sum(max(o.offset, 0) for o in offsets.values())

    assert asyncio.run(committed_total()) == n
