"""On Apache Kafka the lake's incarnation travels as the group's commit metadata (Tansu
drops commit metadata; there the lander hashes each partition's earliest record again):
the lander commits it, and it names the offset transactions in the Delta table."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from common import lake
from common.lakewrite import app_id, incarnation_of
from common.topics import start_admin
from inferstream.lakecheck import landing
from inferstream.procs import Child

from ..support import consumer_env, wait_for_log

pytestmark = pytest.mark.skipif(
    os.environ.get("INFERSTREAM_TEST_BROKER") == "tansu", reason="Tansu drops commit metadata"
)


def _earliest(bootstrap: str, topic: str, partitions: int) -> dict[int, str]:
    async def read() -> dict[int, str]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            found: dict[int, str] = {}
            deadline = time.monotonic() + 30
            while len(found) < partitions and time.monotonic() < deadline:
                for tp, msgs in (await consumer.getmany(timeout_ms=500)).items():
                    if msgs and tp.partition not in found:
                        found[tp.partition] = incarnation_of(msgs[0])
            return found
        finally:
            await consumer.stop()

    return asyncio.run(read())


def _committed_metadata(
    bootstrap: str, group: str, topic: str, partitions: int
) -> dict[int, tuple[int, str]]:
    async def read() -> dict[int, tuple[int, str]]:
        admin = await start_admin(bootstrap)
        try:
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            found = await admin.list_consumer_group_offsets(group, partitions=tps)
        finally:
            await admin.close()
        return {
            tp.partition: (m.offset, m.metadata) for tp, m in found.items() if m is not None and m.offset >= 0
        }

    return asyncio.run(read())


def test_the_incarnation_is_kept_in_commit_metadata_and_names_the_table_offsets(
    kafka_bootstrap, topic, tmp_path, stream_factory
):
    n, group = 800, "lake-incarnation"
    lander = Child(
        "lander",
        ["consume", "lake"],
        consumer_env(kafka_bootstrap, topic, tmp_path, group),
        tmp_path / "l.log",
    )
    try:
        wait_for_log(lander, "assigned group=", timeout_s=120)
        stream = stream_factory(topic, n, burst=100, pause_s=0.01)
        stream.start()
        stream.join(timeout=120)
        assert stream.error is None, stream.error
        deadline = time.monotonic() + 120
        while landing(tmp_path / "lake", stream.ids).distinct < n and time.monotonic() < deadline:
            time.sleep(0.3)
    finally:
        assert lander.terminate() == 0  # SIGTERM: a final flush and commit
    assert landing(tmp_path / "lake", stream.ids).missing == 0
    earliest = _earliest(kafka_bootstrap, topic, 4)
    committed = _committed_metadata(kafka_bootstrap, group, topic, 4)
    assert set(committed) == set(earliest) == {0, 1, 2, 3}
    where = lake.Lake(str(tmp_path / "lake"))
    table = where.open(lake.EVENTS_TABLE)
    assert table is not None
    for p, (offset, metadata) in committed.items():
        assert metadata == earliest[p]  # the broker kept what the lander committed
        assert table.transaction_version(app_id(group, topic, p, metadata)) == offset
