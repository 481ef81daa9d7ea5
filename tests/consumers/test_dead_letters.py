"""Dead letters never wedge the lake lander (a real process, a real broker): a poison
record too large for the DLQ topic goes there as a preview with its size and digest,
and what follows lands; a DLQ topic that refuses every write stops the lander with an
error after the retry bound, with no offset committed past the unsent dead letter; and
a lander that cannot commit while records wait says "stuck" on /healthz."""

from __future__ import annotations

import asyncio
import hashlib
import time

import httpx
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from common import events
from common.broker import free_port
from common.topics import ensure_topics
from consumers.deadletters import PREVIEW_BYTES, coordinates
from inferstream.lakecheck import landing
from inferstream.procs import Child

from ..support import committed, consumer_env, make_event, read_dlq, wait_for_log

BIG = 5 * 1024 * 1024


def _create(bootstrap: str, topics: dict[str, dict[str, str]]) -> None:
    """Topics with their own configs (Kafka enforces max.message.bytes per topic)."""
    for name, configs in topics.items():
        asyncio.run(ensure_topics(bootstrap, {name: 4}, configs=configs))


def _produce(
    bootstrap: str, topic: str, values: list[bytes], partition: int = 0, key: bytes | None = None
) -> list[int]:
    """Values to one partition, acknowledged; returns their offsets."""

    async def produce() -> list[int]:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", max_request_size=2 * BIG, request_timeout_ms=30_000
        )
        await producer.start()
        try:
            futures = [await producer.send(topic, v, key=key, partition=partition) for v in values]
            return [(await f).offset for f in futures]
        finally:
            await producer.stop()

    return asyncio.run(produce())


def _valid(n: int) -> tuple[list[bytes], list[str]]:
    evs = [make_event() for _ in range(n)]
    return [events.encode(ev) for ev in evs], [str(ev["event_id"]) for ev in evs]


def _committed(bootstrap: str, group: str, tp: TopicPartition) -> int | None:
    return committed(bootstrap, group, [tp]).get(tp.partition)


def _wait(predicate, what: str, child: Child, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert child.alive(), f"{child.name} exited:\n{child.tail()}"
        assert time.monotonic() < deadline, f"{what} not within {timeout_s}s:\n{child.tail()}"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_5mb_poison_record_is_dead_lettered_as_a_preview_and_the_next_50_events_land(
    kafka_bootstrap, tmp_path
):
    topic = f"t-dlq-big-{time.time_ns() % 10**9}"
    _create(kafka_bootstrap, {topic: {"max.message.bytes": str(2 * BIG)}})
    port = free_port()
    env = consumer_env(kafka_bootstrap, topic, tmp_path, "lake-big", INFERSTREAM_METRICS_PORT=str(port))
    big = b"\x00not json " + bytes(range(256)) * (BIG // 256)
    [big_offset] = _produce(kafka_bootstrap, topic, [big])
    values, ids = _valid(50)
    _produce(kafka_bootstrap, topic, values)  # behind the poison, in its partition
    lander = Child("lander", ["consume", "lake"], env, tmp_path / "lander.log")
    try:
        _wait(lambda: landing(tmp_path / "lake", ids).distinct == 50, "50 events landed", lander, 90)
        _wait(
            lambda: _committed(kafka_bootstrap, "lake-big", TopicPartition(topic, 0)) == 51, "commit", lander
        )
        dlq = read_dlq(kafka_bootstrap, f"{topic}.dlq", expected=1)
        assert len(dlq) == 1  # sent once, not once per retry
        [letter] = dlq
        h = dict(letter.headers)
        assert coordinates(letter.headers)[:3] == (topic, 0, big_offset)
        assert "not JSON" in coordinates(letter.headers)[3]
        assert h["dlq.truncated"] == b"value"
        assert int(h["dlq.size"]) == len(big)
        assert h["dlq.sha256"].decode() == hashlib.sha256(big).hexdigest()
        assert letter.value == big[:PREVIEW_BYTES]
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert (health.status_code, health.json()["status"]) == (200, "ok")
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'inferstream_consumer_dead_letters_total{group="lake-big"} 1.0' in metrics
        assert 'inferstream_consumer_stuck{group="lake-big"} 0.0' in metrics
        assert landing(tmp_path / "lake", ids).duplicates == 0
    finally:
        assert lander.terminate() == 0, lander.tail()
    assert "flush failed" not in lander.log_path.read_text()


def _dlq_refusing_writes(bootstrap: str, topic: str) -> None:
    """The events topic, and a DLQ topic with max.message.bytes 700: a dead letter of a
    small record fits, one whose key is 1 KiB does not, not even as a preview (Kafka
    refuses such a record; on a broker without limits the producer refuses it)."""
    _create(bootstrap, {topic: {}, f"{topic}.dlq": {"max.message.bytes": "700"}})


@pytest.mark.slow
def test_a_dlq_that_refuses_writes_stops_the_lander_non_zero_with_nothing_committed_past_it(
    kafka_bootstrap, tmp_path
):
    topic = f"t-dlq-refuses-{time.time_ns() % 10**9}"
    _dlq_refusing_writes(kafka_bootstrap, topic)
    tp = TopicPartition(topic, 0)
    env = consumer_env(kafka_bootstrap, topic, tmp_path, "lake-refused", INFERSTREAM_DLQ_RETRY_TIMEOUT_S="3")
    lander = Child("lander", ["consume", "lake"], env, tmp_path / "lander.log")
    try:
        wait_for_log(lander, "assigned group=", timeout_s=90)
        first, first_ids = _valid(20)
        _produce(kafka_bootstrap, topic, first)
        _wait(lambda: _committed(kafka_bootstrap, "lake-refused", tp) == 20, "first commit", lander)
        # in one batch: a dead letter the DLQ takes, then one it refuses, then valid events
        assert _produce(kafka_bootstrap, topic, [b"not json {"]) == [20]
        assert _produce(kafka_bootstrap, topic, [b"not json {"], key=b"k" * 1024) == [21]
        _produce(kafka_bootstrap, topic, _valid(20)[0])
        lander.proc.wait(timeout=60)
    finally:
        lander.kill()
    log = lander.log_path.read_text()
    assert lander.proc.returncode == 2, log[-3000:]
    assert "INFERSTREAM_DLQ_RETRY_TIMEOUT_S=3" in log  # the one-line error names the setting
    assert log.count("flush failed") >= 2  # retried with backoff before giving up
    assert _committed(kafka_bootstrap, "lake-refused", tp) == 20  # nothing past the dead letters
    assert landing(tmp_path / "lake", first_ids).distinct == 20
    # the acknowledged dead letter was not sent again by the retries
    dlq = read_dlq(kafka_bootstrap, f"{topic}.dlq", expected=2, timeout_s=3)
    assert [coordinates(r.headers)[:3] for r in dlq] == [(topic, 0, 20)]


@pytest.mark.slow
def test_health_says_stuck_when_nothing_is_committed_while_records_wait(kafka_bootstrap, tmp_path):
    topic = f"t-dlq-stuck-{time.time_ns() % 10**9}"
    _dlq_refusing_writes(kafka_bootstrap, topic)
    port = free_port()
    env = consumer_env(
        kafka_bootstrap,
        topic,
        tmp_path,
        "lake-stuck",
        INFERSTREAM_METRICS_PORT=str(port),
        INFERSTREAM_STUCK_AFTER_S="2",
        INFERSTREAM_DLQ_RETRY_TIMEOUT_S="600",
    )
    lander = Child("lander", ["consume", "lake"], env, tmp_path / "lander.log")

    def health() -> tuple[int, str]:
        r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        return r.status_code, r.json()["status"]

    try:
        wait_for_log(lander, "assigned group=", timeout_s=90)
        values, _ = _valid(20)
        _produce(kafka_bootstrap, topic, values)
        tp = TopicPartition(topic, 0)
        _wait(lambda: _committed(kafka_bootstrap, "lake-stuck", tp) == 20, "first commit", lander)
        time.sleep(4)  # idle for twice stuck_after_s with nothing to read: healthy
        assert health() == (200, "ok")
        _produce(kafka_bootstrap, topic, [b"not json {"], key=b"k" * 1024)  # its dead letter cannot be sent
        for _ in range(5):  # a wedged lander while the stream goes on
            _produce(kafka_bootstrap, topic, _valid(10)[0])
            time.sleep(1)
        _wait(lambda: health() == (503, "stuck"), "stuck", lander, 30)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'inferstream_consumer_stuck{group="lake-stuck"} 1.0' in metrics
        assert _committed(kafka_bootstrap, "lake-stuck", tp) == 20
    finally:
        lander.terminate()
    assert "stuck group=lake-stuck" in lander.log_path.read_text()
