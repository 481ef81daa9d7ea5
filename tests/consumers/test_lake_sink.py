"""The lake sink's file discipline, driven directly with records (no broker needed:
this is the sink's contract; the broker round trips are in tests/test_pipeline.py)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import duckdb
from aiokafka import ConsumerRecord, TopicPartition

from common import events, lake
from consumers.lake import LakeSink

TP = TopicPartition("inference-events", 2)
T0 = datetime(2026, 3, 1, 10, 58, tzinfo=UTC)


def _records(first: int, last: int, tp: TopicPartition = TP) -> list[ConsumerRecord]:
    out = []
    for off in range(first, last + 1):
        ev = events.build_event(
            event_id=events.uuid7(),
            event_time=T0 + timedelta(seconds=off),
            model_name="m",
            model_version="1",
            features={"x": float(off), "c": "a"},
            prediction=off % 2,
            scores={"0": 0.5, "1": 0.5},
            latency_ms=0.1,
        )
        out.append(
            ConsumerRecord(
                tp.topic,
                tp.partition,
                off,
                1_700_000_000_000 + off,
                0,
                events.event_key(ev["event_id"]),
                events.encode(ev),
                None,
                16,
                0,
                (),
            )
        )
    return out


def _offsets(lake_dir) -> list[int]:
    con = duckdb.connect()
    rows = con.execute(f"SELECT kafka_offset FROM {lake.duckdb_source(lake_dir)} ORDER BY 1").fetchall()
    return [r[0] for r in rows]


def test_flush_writes_hive_partitions_and_returns_commit_offsets(tmp_path):
    sink = LakeSink(tmp_path)
    sink.assigned({TP: (None, "abc123")})
    sink.add(TP, _records(0, 299))  # 10:58:00 .. 11:02:59 spans two hours
    commits = sink.flush()
    assert commits == {TP: (300, "abc123")}
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet"))
    assert files == [
        "inference_events/model=m/date=2026-03-01/hour=10/inference-events+abc123+2+00000000000000000000.parquet",
        "inference_events/model=m/date=2026-03-01/hour=11/inference-events+abc123+2+00000000000000000000.parquet",
    ]
    assert _offsets(tmp_path) == list(range(300))
    con = duckdb.connect()
    hours = con.execute(
        f"SELECT hour, count(*) FROM {lake.duckdb_source(tmp_path)} WHERE hour = 11 GROUP BY 1"
    ).fetchall()
    assert hours == [(11, 300 - 120)]  # hive types: hour is an integer
    assert sink.pending_rows == 0


def test_replay_after_crash_removes_uncommitted_files_and_lands_each_row_once(tmp_path):
    first = LakeSink(tmp_path)
    first.assigned({TP: (None, "abc123")})
    for lo, hi in [(0, 99), (100, 149), (150, 199)]:
        first.add(TP, _records(lo, hi))
        first.flush()
    # crash: only offset 100 was committed. The replay batches differently.
    replay = LakeSink(tmp_path)
    replay.assigned({TP: (100, "abc123")})
    batch = _records(0, 199)[100:]
    replay.add(TP, batch)
    assert replay.flush() == {TP: (200, "abc123")}
    assert _offsets(tmp_path) == list(range(200))


def test_temp_files_are_removed_at_start_and_never_read(tmp_path):
    sink = LakeSink(tmp_path)
    sink.assigned({TP: (None, "abc123")})
    sink.add(TP, _records(0, 9))
    sink.flush()
    stray = next(tmp_path.rglob("*.parquet")).parent / f".crashed{lake.TMP_SUFFIX}"
    stray.write_bytes(b"half a parquet file")
    assert _offsets(tmp_path) == list(range(10))  # readers' globs skip temp files
    LakeSink(tmp_path)
    assert not stray.exists()


def test_a_recreated_topic_does_not_overwrite_its_previous_life(tmp_path):
    old = LakeSink(tmp_path)
    old.assigned({TP: (None, "aaaaaa")})
    old.add(TP, _records(0, 49))
    old.flush()
    new = LakeSink(tmp_path)  # same topic name, offsets from 0 again, another incarnation
    new.assigned({TP: (None, "bbbbbb")})
    new.add(TP, _records(0, 49))
    new.flush()
    assert _offsets(tmp_path) == sorted(list(range(50)) * 2)


def test_poison_messages_are_counted_and_skipped(tmp_path):
    sink = LakeSink(tmp_path)
    sink.assigned({TP: (None, "abc123")})
    recs = _records(0, 4)
    recs[2] = dataclasses.replace(recs[2], value=b"not json")
    sink.add(TP, recs)
    assert sink.flush() == {TP: (5, "abc123")}
    assert sink.poison == 1
    assert _offsets(tmp_path) == [0, 1, 3, 4]


def test_the_client_id_lands_as_a_column(tmp_path):
    ev = events.build_event(
        event_id=events.uuid7(),
        event_time=T0,
        model_name="m",
        model_version="1",
        features={"x": 1.0},
        prediction=1,
        scores=None,
        latency_ms=0.1,
        client_id="team-a",
    )
    rec = ConsumerRecord(TP.topic, TP.partition, 0, 0, 0, None, events.encode(ev), None, 0, 0, ())
    sink = LakeSink(tmp_path)
    sink.assigned({TP: (None, "abc123")})
    sink.add(TP, [rec])
    sink.flush()
    con = duckdb.connect()
    assert con.execute(f"SELECT client_id FROM {lake.duckdb_source(tmp_path)}").fetchall() == [("team-a",)]
