"""The lake sink's fast path (one NDJSON parse per batch with a cached schema) keeps
every field when a batch mixes models or an event has another shape."""

from __future__ import annotations

from datetime import UTC, datetime

from aiokafka import ConsumerRecord, TopicPartition

from common import events, lake, lakesql
from consumers.lake import LakeSink

TP = TopicPartition("inference-events", 0)


def _rec(offset: int, model: str, features: dict[str, object]) -> ConsumerRecord:
    ev = events.build_event(
        event_id=events.uuid7(),
        event_time=datetime(2026, 3, 1, 9, tzinfo=UTC),
        model_name=model,
        model_version="1",
        features=features,
        prediction=1,
        scores=None,
        latency_ms=0.1,
    )
    return ConsumerRecord(TP.topic, 0, offset, 0, 0, None, events.encode(ev), None, 0, 0, ())


def test_mixed_models_and_an_extra_feature_keep_every_value(tmp_path):
    sink = LakeSink(tmp_path)
    sink.assigned({TP: (None, "abc")})
    sink.add(TP, [_rec(i, "a", {"x": float(i), "y": "k"}) for i in range(100)])  # caches a's shape
    sink.flush()
    batch = []
    for i in range(100, 200):
        batch.append(_rec(i, "a", {"x": float(i), "y": "k"}) if i % 2 else _rec(i, "b", {"p": i, "q": True}))
    batch.append(_rec(200, "a", {"x": 200.0, "y": "k", "z": 7.5}))  # a new feature of model a
    sink.add(TP, batch)
    sink.flush()
    con = lakesql.connect(tmp_path)
    src = lake.EVENTS_TABLE
    got = con.execute(
        f"SELECT model, count(*), count(features.x), sum(features.x) FROM {src} WHERE model = 'a' GROUP BY 1"
    ).fetchall()
    assert got == [("a", 151, 151, float(sum(range(100)) + sum(range(101, 200, 2)) + 200))]
    b = con.execute(
        f"SELECT count(*), sum(features.p), bool_and(features.q) FROM {src} WHERE model = 'b'"
    ).fetchall()
    assert b == [(50, sum(range(100, 200, 2)), True)]
    z = con.execute(f"SELECT features.z FROM {src} WHERE kafka_offset = 200").fetchall()
    assert z == [(7.5,)]


def test_same_version_other_keys_same_quote_count_keeps_every_key(tmp_path):
    """The shape cache is keyed by model, version and quote count: an event of a known
    version whose keys differ but whose quote count is the same (a renamed feature, or
    one more key of another type) must not be read with the cached shape."""
    sink = LakeSink(tmp_path)
    sink.assigned({TP: (None, "abc")})
    sink.add(TP, [_rec(i, "a", {"x": float(i), "y": 1.0}) for i in range(50)])  # caches the shape
    sink.flush()
    # same quote count as the cached shape: "y" renamed to "w", or a non-null value moved
    sink.add(TP, [_rec(50 + i, "a", {"x": float(i), "w": 2.5}) for i in range(50)])
    sink.flush()
    con = lakesql.connect(tmp_path)
    got = con.execute(
        f"SELECT count(*), count(features.w), sum(features.w), count(features.y) FROM {lake.EVENTS_TABLE} "
        "WHERE kafka_offset >= 50"
    ).fetchall()
    assert got == [(50, 50, 125.0, 0)]
