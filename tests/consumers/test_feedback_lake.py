"""Feedback events land in their own lake table, read by flows.quality, beside the
inference events of the same lake consumer group."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition

from common import events
from common.topics import ensure_topics
from consumers.feedback import FeedbackLakeSink
from flows.quality import read_feedback
from inferstream.lakecheck import landing
from inferstream.procs import Child

from ..support import consumer_env, make_event


def _feedback(prediction_id: str, label: object, model: str | None = "m") -> bytes:
    return orjson.dumps(
        {
            "schema_version": 1,
            "feedback_id": str(events.uuid7()),
            "prediction_id": prediction_id,
            "event_time": events.utcnow().strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "label": label,
            "model_name": model,
        }
    )


def test_feedback_sink_writes_the_table_flows_read(tmp_path):
    tp = TopicPartition("inference-feedback", 0)
    ids = [str(events.uuid7()) for _ in range(4)]
    values = [
        _feedback(ids[0], True),
        _feedback(ids[1], 0),
        _feedback(ids[2], "yes", None),
        b"{}",
        _feedback(ids[3], 1.5),
    ]
    recs = [ConsumerRecord(tp.topic, 0, i, 0, 0, None, v, None, 0, 0, ()) for i, v in enumerate(values)]
    sink = FeedbackLakeSink(tmp_path)
    sink.assigned({tp: (None, "abc")})
    sink.add(tp, recs)
    assert sink.flush() == {tp: (5, "abc")}
    assert [(d.offset, d.reason) for d in sink.take_dead_letters()] == [(3, "unknown schema_version None")]
    fb = read_feedback(tmp_path).sort("event_id")
    assert dict(zip(fb["event_id"], fb["label"], strict=True)) == {
        ids[0]: "true",
        ids[1]: "0",
        ids[2]: "yes",
        ids[3]: "1.5",
    }
    dirs = sorted(p.parent.parent.parent.name for p in tmp_path.rglob("*.parquet"))
    assert dirs == ["model=m", "model=unknown"]


@pytest.mark.slow
def test_the_lake_consumer_lands_feedback_in_its_own_table(kafka_bootstrap, topic, tmp_path):
    feedback_topic = f"{topic}.feedback"
    asyncio.run(ensure_topics(kafka_bootstrap, {feedback_topic: 2}))
    evs = [make_event() for _ in range(50)]

    async def produce() -> None:
        p = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await p.start()
        try:
            futs = [await p.send(topic, events.encode(e), key=events.event_key(e["event_id"])) for e in evs]
            futs += [
                await p.send(
                    feedback_topic, _feedback(e["event_id"], i % 2), key=events.event_key(e["event_id"])
                )
                for i, e in enumerate(evs[:20])
            ]
            await asyncio.gather(*futs)
        finally:
            await p.stop()

    asyncio.run(produce())
    env = consumer_env(kafka_bootstrap, topic, tmp_path, "lake-fb", INFERSTREAM_FEEDBACK_TOPIC=feedback_topic)
    lander = Child("lander", ["consume", "lake"], env, tmp_path / "lander.log")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (
            read_feedback(tmp_path / "lake").height < 20
            or landing(tmp_path / "lake", [e["event_id"] for e in evs]).distinct < 50
        ):
            assert lander.alive(), lander.tail()
            time.sleep(0.3)
    finally:
        lander.terminate()
    fb = read_feedback(tmp_path / "lake")
    assert sorted(fb["event_id"]) == sorted(e["event_id"] for e in evs[:20])
    assert landing(tmp_path / "lake", [e["event_id"] for e in evs]).rows == 50
