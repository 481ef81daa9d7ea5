"""The lake sink's table contract (one commit per flush, offsets in the commit, one row
per event id), driven directly with records (no broker needed:
this is the sink's contract; the broker round trips are in tests/test_pipeline.py)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from aiokafka import ConsumerRecord, TopicPartition
from deltalake import DeltaTable

from common import events, lake, lakesql
from common.lakewrite import app_id
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
    con = lakesql.connect(lake_dir)
    rows = con.execute(f"SELECT kafka_offset FROM {lake.EVENTS_TABLE} ORDER BY 1").fetchall()
    return [r[0] for r in rows]


def test_flush_is_one_commit_partitioned_by_model_date_hour_with_the_next_offset(tmp_path):
    sink = LakeSink(tmp_path, group="g")
    assert sink.assigned({TP: (None, "abc123")}) == {}  # the table knows nothing yet
    sink.add(TP, _records(0, 299))  # 10:58:00 .. 11:02:59 spans two hours
    commits = sink.flush()
    assert commits == {TP: (300, "abc123")}
    dt = DeltaTable(str(tmp_path / lake.EVENTS_TABLE))
    assert dt.version() == 0  # one commit
    assert dt.metadata().partition_columns == ["model", "date", "hour"]
    assert dt.transaction_version(app_id("g", TP.topic, TP.partition, "abc123")) == 300
    assert _offsets(tmp_path) == list(range(300))
    con = lakesql.connect(tmp_path)
    hours = con.execute(
        f"SELECT hour, count(*) FROM {lake.EVENTS_TABLE} "
        "WHERE hour = 11 AND date = DATE '2026-03-01' GROUP BY 1"
    ).fetchall()
    assert hours == [(11, 300 - 120)]
    assert sink.pending_rows == 0


def test_a_new_owner_resumes_where_the_table_says_and_a_replay_lands_nothing_twice(tmp_path):
    first = LakeSink(tmp_path)
    first.assigned({TP: (None, "abc123")})
    for lo, hi in [(0, 99), (100, 149), (150, 199)]:
        first.add(TP, _records(lo, hi))
        first.flush()
    # crash after the table commits, before the group committed past offset 100
    replay = LakeSink(tmp_path)
    assert replay.assigned({TP: (100, "abc123")}) == {TP: 200}  # the table wins over the group
    # a consumer that replays anyway (e.g. fetched before the seek): nothing lands twice
    batch = _records(0, 249)[100:]
    replay.add(TP, batch)
    assert replay.flush() == {TP: (250, "abc123")}
    assert _offsets(tmp_path) == list(range(250))


def test_one_row_per_event_id_within_a_batch_and_across_batches(tmp_path):
    recs = _records(0, 9)
    copies = [dataclasses.replace(recs[3], offset=10 + i) for i in range(3)]  # written 3 more times
    sink = LakeSink(tmp_path)
    sink.assigned({TP: (None, "abc123")})
    sink.add(TP, recs + copies[:1])
    sink.flush()
    sink.add(TP, copies[1:])
    assert sink.flush() == {TP: (13, "abc123")}
    assert _offsets(tmp_path) == list(range(10))
    assert sink.duplicates == 3  # every copy, in the batch or against the table
    dt = DeltaTable(str(tmp_path / lake.EVENTS_TABLE))
    assert dt.transaction_version(app_id("lake", TP.topic, TP.partition, "abc123")) == 13


def test_a_recreated_topic_does_not_overwrite_its_previous_life(tmp_path):
    old = LakeSink(tmp_path)
    old.assigned({TP: (None, "aaaaaa")})
    old.add(TP, _records(0, 49))
    old.flush()
    new = LakeSink(tmp_path)  # same topic name, offsets from 0 again, another incarnation
    assert new.assigned({TP: (None, "bbbbbb")}) == {}
    new.add(TP, _records(0, 49))  # new events (new ids) at the same offsets
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
    con = lakesql.connect(tmp_path)
    assert con.execute(f"SELECT client_id FROM {lake.EVENTS_TABLE}").fetchall() == [("team-a",)]
