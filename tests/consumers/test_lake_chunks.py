"""The lake sink parses a partition's records in chunks as they arrive (a parse thread),
not all at ``prepare``: what lands, and which records become dead letters, must be what
one parse of the whole batch gives."""

from __future__ import annotations

import polars as pl
import pytest
from aiokafka import ConsumerRecord, TopicPartition

from common import events, lake
from consumers.lake import LakeSink

from ..support import make_event

TP = TopicPartition("inference-events", 0)
TP2 = TopicPartition("inference-events", 1)


def _rec(tp: TopicPartition, offset: int, features: dict[str, object]) -> ConsumerRecord:
    ev = make_event()
    ev["features"] = features
    return ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, None, events.encode(ev), None, 0, 0, ())


def _landed(where) -> pl.DataFrame:
    return pl.from_arrow(lake.dataset(where, lake.EVENTS_TABLE).to_table()).sort(
        "kafka_partition", "kafka_offset"
    )


def _sink(tmp_path, chunk: int) -> LakeSink:
    sink = LakeSink(tmp_path)
    sink.parse_chunk = chunk
    sink.assigned({TP: (None, "abc"), TP2: (None, "def")})
    return sink


def test_chunks_parsed_while_records_arrive_land_as_one_parse_does(tmp_path):
    good = [_rec(TP, i, {"num": float(i), "cat": "x"}) for i in range(8)]
    # a later chunk whose feature holds a text where the batch has numbers: alone it
    # parses, beside the batch it would turn the column into text for every row
    junk = [_rec(TP, i, {"num": "not a number", "cat": "x"}) for i in (8, 9)]
    other = [_rec(TP2, i, {"num": float(i), "cat": "y"}) for i in range(5)]
    chunked = _sink(tmp_path / "chunked", 4)
    for part in (good[:4], good[4:], junk):
        chunked.add(TP, part)
    chunked.add(TP2, other)
    state = chunked._parts[TP]
    assert len(state.chunks) == 2, "two full chunks handed to the parse thread before prepare"
    assert all(c.parsed.result(timeout=30)[0].height == 4 for c in state.chunks)
    dead = chunked.prepare()
    assert chunked.flush_prepared() == {TP: (10, "abc"), TP2: (5, "def")}

    whole = _sink(tmp_path / "whole", 10_000)
    whole.add(TP, good + junk)
    whole.add(TP2, other)
    dead_whole = whole.prepare()
    whole.flush_prepared()

    assert sorted(d.offset for d in dead) == [8, 9]
    assert all("conflicting" in d.reason for d in dead)
    assert sorted(d.offset for d in dead_whole) == [8, 9]
    got, expected = _landed(tmp_path / "chunked"), _landed(tmp_path / "whole")
    assert got.schema["features"] == pl.Struct({"num": pl.Float64, "cat": pl.String})
    assert got.height == 13
    cols = ["kafka_partition", "kafka_offset", "event_id", "features"]
    assert got.select(cols).equals(expected.select(cols))
    assert chunked.pending_rows == 0
    chunked.close()
    whole.close()


def test_a_chunk_whose_parse_failed_is_parsed_again_and_lands_once(tmp_path, monkeypatch):
    sink = _sink(tmp_path, 3)
    real = sink._frame
    calls = {"n": 0}

    def failing_once(tp, records, dead):
        calls["n"] += 1
        if calls["n"] == 1:
            raise MemoryError("the first chunk's parse fails")
        return real(tp, records, dead)

    monkeypatch.setattr(sink, "_frame", failing_once)
    sink.add(TP, [_rec(TP, i, {"num": float(i)}) for i in range(7)])  # 7 >= 3: one chunk of 7
    sink.add(TP, [_rec(TP, 7, {"num": 7.0})])
    with pytest.raises(MemoryError):
        sink.prepare()
    assert sink.pending_rows == 8, "nothing taken is dropped by the failure"
    sink.add(TP, [_rec(TP, 8, {"num": 8.0})])
    assert sink.prepare() == []
    assert sink.flush_prepared() == {TP: (9, "abc")}
    assert _landed(tmp_path)["kafka_offset"].to_list() == list(range(9))
    sink.close()


def test_a_revoked_partitions_chunks_in_flight_land_nothing(tmp_path):
    sink = _sink(tmp_path, 2)
    sink.add(TP, [_rec(TP, i, {"num": float(i)}) for i in range(4)])
    sink.add(TP2, [_rec(TP2, i, {"num": float(i)}) for i in range(3)])
    sink.revoked([TP])
    assert sink.pending_rows == 3
    sink.prepare()
    assert sink.flush_prepared() == {TP2: (3, "def")}
    landed = _landed(tmp_path)
    assert landed["kafka_partition"].unique().to_list() == [1]
    assert landed.height == 3
    sink.close()
