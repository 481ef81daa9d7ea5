"""``inferstream kafka status`` against the real broker: end offsets and lag computed
from what the test produced and committed, the lake's size, and the same figures as
Prometheus gauges."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from common import lake
from consumers.lake import LakeSink

from ..support import lake_records

T0 = datetime(2026, 3, 1, 10, 5, tzinfo=UTC)


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inferstream", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow  # `kafka status` processes against the broker: 35 s in a full `make test` run
def test_status_reports_end_offsets_lag_and_lake_size(kafka_bootstrap, topic, tmp_path):
    group = f"status-{topic}"

    async def prepare() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for _ in range(5):  # several batches: Tansu's ListOffsets then answers 81, not 100
                futures = [await producer.send(topic, b"x", partition=0) for _ in range(20)]
                await asyncio.gather(*futures)
            await (await producer.send(topic, b"y", partition=1))
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
            await consumer.commit({TopicPartition(topic, 0): 30, TopicPartition(topic, 1): 1})
        finally:
            await consumer.stop()

    asyncio.run(prepare())
    sink = LakeSink(tmp_path / "lake")
    sink.assigned({TopicPartition(topic, 0): (None, "abc")})
    sink.add(TopicPartition(topic, 0), lake_records(TopicPartition(topic, 0), 0, 99, lambda _: T0))
    sink.flush()
    size = lake.table_size(tmp_path / "lake", lake.EVENTS_TABLE)
    assert size is not None and size.files == 1
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "INFERSTREAM_DATA_DIR": str(tmp_path)}

    out = _run(["kafka", "status", "--json"], env)
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    mine = next(t for t in status["topics"] if t["name"] == topic)
    assert [p["end_offset"] for p in mine["partitions"]] == [100, 1, 0, 0]
    assert all(p["leader"] >= 0 and p["isr"] for p in mine["partitions"])
    lags = {(g["partition"]): (g["committed"], g["lag"]) for g in status["groups"] if g["group"] == group}
    assert lags == {0: (30, 70), 1: (1, 0)}
    assert status["lake"] == [
        {"table": "inference_events", "files": 1, "bytes": size.bytes, "rows": 100, "version": 0}
    ]

    prom = _run(["kafka", "status", "--prometheus"], env)
    assert prom.returncode == 0, prom.stderr
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(prom.stdout)
        for s in fam.samples
    }
    assert (
        samples[("inferstream_kafka_group_lag", (("group", group), ("partition", "0"), ("topic", topic)))]
        == 70
    )
    assert samples[("inferstream_kafka_end_offset", (("partition", "0"), ("topic", topic)))] == 100
    assert samples[("inferstream_lake_bytes", (("table", "inference_events"),))] == size.bytes

    text = _run(["kafka", "status"], env)
    assert f"{group}=70" in text.stdout


def test_status_names_the_setting_when_kafka_is_unreachable(tmp_path):
    out = _run(
        ["kafka", "status"], {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "INFERSTREAM_DATA_DIR": str(tmp_path)}
    )
    assert out.returncode == 2
    assert "KAFKA_BOOTSTRAP_SERVERS" in out.stderr
