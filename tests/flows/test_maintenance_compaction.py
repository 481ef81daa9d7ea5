"""The maintenance flow compacts closed lake hours that the lake group has committed,
against the real broker's committed offsets."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import duckdb
from aiokafka import AIOKafkaConsumer, TopicPartition

from common import lake
from consumers.compaction import COMPACTED_PREFIX, hour_dirs
from consumers.lake import LakeSink
from flows.maintenance import maintenance_flow

from ..support import lake_records


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
    records = lake_records(tp, 0, 299, lambda _: closed_hour)
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
