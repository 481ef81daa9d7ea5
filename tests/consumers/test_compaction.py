"""Compaction of a lake hour: readers never see a row twice or miss one while it runs,
it is idempotent, and a replay afterwards neither duplicates nor loses rows."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import duckdb
from aiokafka import ConsumerRecord, TopicPartition

from common import lake
from consumers.compaction import COMPACTED_PREFIX, compact_hour, hour_dirs
from consumers.lake import LakeSink

from ..support import lake_records

TP = TopicPartition("inference-events", 3)
T0 = datetime(2026, 3, 1, 10, 5, tzinfo=UTC)


def _records(first: int, last: int) -> list[ConsumerRecord]:
    return lake_records(TP, first, last, lambda off: T0 + timedelta(seconds=off % 3000))


def _counts(lake_dir) -> tuple[int, int]:
    con = duckdb.connect()
    try:
        row = con.execute(
            f"SELECT count(*), count(DISTINCT event_id) FROM {lake.duckdb_source(lake_dir)}"
        ).fetchone()
    finally:
        con.close()
    assert row is not None
    return int(row[0]), int(row[1])


def test_compaction_is_atomic_for_readers_idempotent_and_safe_for_replays(tmp_path):
    records = _records(0, 699)
    sink = LakeSink(tmp_path)
    sink.assigned({TP: (None, "abc123")})
    for lo in range(0, 600, 50):  # 12 small files in one hour
        sink.add(TP, records[lo : lo + 50])
        sink.flush()
    (hour,) = hour_dirs(tmp_path)
    assert len(list(hour.glob("*.parquet"))) == 12
    committed = {(TP.topic, TP.partition): 500}  # the last two batches are not committed yet

    seen: list[tuple[int, int]] = []
    errors: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.append(_counts(tmp_path))
            except duckdb.IOException as exc:  # listed before the swap, opened after: retryable
                errors.append(str(exc))

    def queried() -> None:  # let the reader overlap every step
        target = len(seen) + len(errors) + 2
        while len(seen) + len(errors) < target and t.is_alive():
            stop.wait(0.005)

    t = threading.Thread(target=reader)
    t.start()
    try:
        queried()
        results = []
        for _ in range(3):
            results.append(compact_hour(tmp_path, hour, committed))
            queried()
        # new batch files keep arriving; a round compacts again what became committed
        sink.add(TP, records[600:650])
        sink.flush()
        results.append(compact_hour(tmp_path, hour, {(TP.topic, TP.partition): 650}))
        sink.add(TP, records[650:700])  # written, then the lander crashes before committing
        sink.flush()
        results.append(compact_hour(tmp_path, hour, {(TP.topic, TP.partition): 650}))
    finally:
        stop.set()
        t.join()
    assert len(seen) >= 8, "the reader did not overlap the compactions"
    assert all(rows == distinct for rows, distinct in seen), "a reader saw a row twice"
    assert {rows for rows, _ in seen} <= {600, 650, 700}, "a reader missed rows"
    assert len(errors) <= len(seen)
    assert [r.changed for r in results[:3]] == [True, False, False]  # idempotent
    assert results[0].merged_files == 10 and results[0].kept_files == 2
    assert results[3].changed and not results[4].changed  # the uncommitted file is left alone
    names = sorted(p.name for p in hour.glob("*.parquet"))
    assert len(names) == 2 and names[0].startswith(COMPACTED_PREFIX), names
    assert names[1] == lake.file_name(TP.topic, "abc123", TP.partition, 650)
    assert _counts(tmp_path) == (700, 700)

    # the partition's next owner resumes at the committed 650: it removes the orphan
    # (and only it: the compacted file has no batch coordinates) and rewrites it
    replay = LakeSink(tmp_path)
    replay.assigned({TP: (650, "abc123")})
    replay.add(TP, records[650:680])  # batched differently this time
    replay.flush()
    replay.add(TP, records[680:700])
    replay.flush()
    assert _counts(tmp_path) == (700, 700)


def test_compact_command_merges_only_what_the_lake_group_committed(kafka_bootstrap, topic, tmp_path):
    import asyncio
    import os
    import subprocess
    import sys

    from aiokafka import AIOKafkaConsumer

    tp = TopicPartition(topic, 1)
    sink = LakeSink(tmp_path / "lake")
    sink.assigned({tp: (None, "abc123")})
    for lo in range(0, 40, 10):
        batch = [
            ConsumerRecord(topic, 1, r.offset, 0, 0, None, r.value, None, 0, 0, ())
            for r in _records(lo, lo + 9)
        ]
        sink.add(tp, batch)
        sink.flush()

    async def commit() -> None:
        c = AIOKafkaConsumer(
            bootstrap_servers=kafka_bootstrap, group_id=f"lake-{topic}", enable_auto_commit=False
        )
        await c.start()
        try:
            c.assign([tp])
            await c.commit({tp: 30})
        finally:
            await c.stop()

    asyncio.run(commit())
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "INFERSTREAM_DATA_DIR": str(tmp_path),
        "INFERSTREAM_GROUP_ID": f"lake-{topic}",
    }
    for expected in ("compacted 1 hour(s)", "compacted 0 hour(s)"):  # the second run has nothing to do
        out = subprocess.run(
            [sys.executable, "-m", "inferstream", "compact"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert expected in out.stdout
    names = sorted(p.name for p in (tmp_path / "lake").rglob("*.parquet"))
    assert len(names) == 2 and names[0].startswith(COMPACTED_PREFIX)
    assert names[1] == lake.file_name(topic, "abc123", 1, 30)  # not committed: left for a replay
    assert _counts(tmp_path / "lake") == (40, 40)
