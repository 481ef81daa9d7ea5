"""The lake lander as a real process against the real broker, on the Delta table: an
event written several times to the topic lands once, and compaction running while it
lands loses and duplicates nothing."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaProducer

from common import events, lake, lakemaint
from inferstream.lakecheck import landing
from inferstream.procs import Child

from ..support import consumer_env, make_event, wait_committed, wait_for_log, wait_landed


async def _produce(
    bootstrap: str, topic: str, values: list[tuple[bytes, bytes]], pause_s: float = 0.0
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for i in range(0, len(values), 50):
            futures = [await producer.send(topic, v, key=k) for k, v in values[i : i + 50]]
            await asyncio.gather(*futures)
            await asyncio.sleep(pause_s)
    finally:
        await producer.stop()


@pytest.mark.slow
def test_an_event_written_three_times_to_the_topic_lands_as_one_row(kafka_bootstrap, topic, tmp_path):
    evs = [make_event() for _ in range(300)]
    values = [(events.event_key(e["event_id"]), events.encode(e)) for e in evs]
    env = consumer_env(kafka_bootstrap, topic, tmp_path, "lake-thrice")
    lander = Child("lander", ["consume", "lake"], env, tmp_path / "lander.log")
    try:
        wait_for_log(lander, "assigned group=", timeout_s=90)
        # the same record three times: in one batch, and in batches seconds apart
        # (a publisher's retry after a timeout, then a spool replay)
        asyncio.run(_produce(kafka_bootstrap, topic, values + values[:100]))
        time.sleep(1.5)  # the scenario: the third copies come seconds later
        asyncio.run(_produce(kafka_bootstrap, topic, values[100:] + values[:100]))
        ids = [str(e["event_id"]) for e in evs]
        result = wait_landed(tmp_path / "lake", ids, [lander])
        # every copy in the topic is landed (the lander commits after the lake)
        wait_committed(kafka_bootstrap, "lake-thrice", topic, [lander])
        result = landing(tmp_path / "lake", ids)
        assert (result.rows, result.distinct, result.missing) == (300, 300, 0)
        size = lake.table_size(tmp_path / "lake", lake.EVENTS_TABLE)
        assert size is not None and size.rows == 300  # not only the expected ids: nothing else either
    finally:
        lander.terminate()


@pytest.mark.slow
def test_landing_while_compaction_runs_loses_and_duplicates_nothing(
    kafka_bootstrap, topic, tmp_path, lake_at
):
    n = 2000
    where = lake_at.where
    env = consumer_env(kafka_bootstrap, topic, tmp_path, "lake-compact", **lake_at.env)
    lander = Child("lander", ["consume", "lake"], env, tmp_path / "lander.log")
    evs = [make_event() for _ in range(n)]
    values = [(events.event_key(e["event_id"]), events.encode(e)) for e in evs]
    try:
        wait_for_log(lander, "assigned group=", timeout_s=90)
        producing = threading.Thread(
            target=lambda: asyncio.run(_produce(kafka_bootstrap, topic, values, pause_s=0.25))
        )
        producing.start()
        compactions = removed = 0
        # the current hour counts as closed for this test: compact it while it is written
        deadline = time.monotonic() + 180
        while producing.is_alive() or compactions < 3:
            assert time.monotonic() < deadline, f"producing not done in 180 s ({compactions} compactions)"
            r, _ = lakemaint.compact(where, lake.EVENTS_TABLE, datetime.now(UTC) + timedelta(hours=2))
            removed += r
            compactions += 1
            time.sleep(0.3)  # pacing the compactions
        producing.join()
        ids = [str(e["event_id"]) for e in evs]
        result = wait_landed(where, ids, [lander], timeout_s=120)
        r, _ = lakemaint.compact(where, lake.EVENTS_TABLE, datetime.now(UTC) + timedelta(hours=2))
        removed += r
        result = landing(where, ids)
        assert (result.rows, result.distinct, result.missing) == (n, n, 0)
        assert removed >= 10, f"compaction merged {removed} files: it did not overlap the landing"
    finally:
        lander.terminate()
    assert "Traceback" not in lander.log_path.read_text()
