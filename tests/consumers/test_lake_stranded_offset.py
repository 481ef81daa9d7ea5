"""A group offset that names no life of its log (committed without the lander's commit
metadata: the embedded in-memory broker drops it, so an offset committed into a
restarted broker's group for the log it lost looks like any other) is no place for the
lander to resume: the lake table is the truth, and a partition it does not know is read
from its start.

Before, the lander resumed at such an offset: one inside the new log skipped its first
records (on every broker), one past its end stranded the partition on the in-memory
broker, which answers a fetch there with nothing, for ever (Kafka answers
OFFSET_OUT_OF_RANGE and the consumer resets). A broker-restart fault test lost a
partition's whole new log that way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from common.broker import EmbeddedBroker
from common.topics import ensure_topics
from inferstream.procs import Child

from ..support import Stream, consumer_env, wait_landed

PARTITIONS = 4
PAST_THE_END = 10_000


@pytest.fixture(params=["kafka", "tansu"])
def bootstrap(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    if request.param == "kafka":
        yield request.getfixturevalue("kafka_bootstrap")
        return
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as broker:
        yield broker.bootstrap_servers


def _commit(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    async def commit() -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = {TopicPartition(topic, p): off for p, off in offsets.items()}
            consumer.assign(list(tps))
            await consumer.commit(tps)
        finally:
            await consumer.stop()

    asyncio.run(commit())


@pytest.mark.slow
def test_a_group_offset_past_the_log_end_does_not_strand_the_partition(bootstrap, tmp_path, request):
    topic = f"stranded-{request.node.callspec.id}-{tmp_path.name}".replace("_", "-")[:60]
    asyncio.run(ensure_topics(bootstrap, {topic: PARTITIONS, f"{topic}.dlq": 1}))
    stream = Stream(bootstrap, topic, 400, burst=400, pause_s=0)
    stream.run()
    assert stream.error is None, stream.error
    group = "lake-stranded"
    # partition 0: an offset past its log's end; 1: one inside it; 2 and 3: none
    _commit(bootstrap, group, topic, {0: PAST_THE_END, 1: 20})
    env = consumer_env(bootstrap, topic, tmp_path, group, INFERSTREAM_KAFKA_ENABLE_IDEMPOTENCE="false")
    lander = Child("lander", ["consume", "lake"], env, tmp_path / "lander.log")
    try:
        result = wait_landed(tmp_path / "lake", stream.ids, [lander], timeout_s=60)
    finally:
        lander.terminate()
    assert not result.missing, f"{result.missing} of {len(stream.ids)} never landed\n{lander.tail()}"
    assert result.rows == result.distinct == len(stream.ids)
