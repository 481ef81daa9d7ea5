"""The maintenance flow compacts closed lake hours that the lake group has committed,
against the real broker's committed offsets."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import duckdb
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from common import events, lake
from consumers.compaction import COMPACTED_PREFIX, hour_dirs
from consumers.lake import LakeSink
from flows.maintenance import maintenance_flow


def _records(tp: TopicPartition, first: int, last: int, when: datetime) -> list[ConsumerRecord]:
    out = []
    for off in range(first, last + 1):
        ev = events.build_event(
            event_id=events.uuid7(),
            event_time=when,
            model_name="m",
            model_version="1",
            features={"x": float(off)},
            prediction=1,
            scores=None,
            latency_ms=0.1,
        )
        out.append(ConsumerRecord(tp.topic, tp.partition, off, 0, 0, None, events.encode(ev), None, 0, 0, ()))
    return out


async def _commit(bootstrap: str, group: str, tp: TopicPartition, offset: int) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.commit({tp: offset})
    finally:
        await consumer.stop()


def test_maintenance_compacts_committed_closed_hours(
    prefect_harness, kafka_bootstrap, topic, tmp_path, monkeypatch
):
    tp = TopicPartition(topic, 0)
    closed_hour = datetime.now(UTC).replace(minute=10, second=0, microsecond=0) - timedelta(hours=3)
    sink = LakeSink(tmp_path / "lake")
    sink.assigned({tp: (None, "abc123")})
    records = _records(tp, 0, 299, closed_hour)
    for lo in range(0, 300, 50):  # six small files in one hour
        sink.add(tp, records[lo : lo + 50])
        sink.flush()
    group = f"lake-{uuid.uuid4().hex[:8]}"
    asyncio.run(_commit(kafka_bootstrap, group, tp, 250))  # the last file is not committed yet

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("INFERSTREAM_LAKE_GROUP_ID", group)
    result = maintenance_flow(retention_days=30, data_dir=str(tmp_path))

    assert result.compacted_hours == 1 and result.removed == []
    (hour,) = hour_dirs(tmp_path / "lake")
    names = sorted(p.name for p in hour.glob("*.parquet"))
    assert len(names) == 2 and names[0].startswith(COMPACTED_PREFIX)  # merged + the uncommitted one
    con = duckdb.connect()
    rows, distinct = con.execute(
        f"SELECT count(*), count(DISTINCT event_id) FROM {lake.duckdb_source(tmp_path / 'lake')}"
    ).fetchone()
    assert (rows, distinct) == (300, 300)
    # idempotent: a second run changes nothing
    assert maintenance_flow(retention_days=30, data_dir=str(tmp_path)).compacted_hours == 0
