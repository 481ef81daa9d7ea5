"""The fraud scorer's exactly-once path, with real processes: alerts and consumed
offsets commit in one Kafka transaction, so a scorer SIGKILLed mid-stream neither loses
nor duplicates an alert for readers with ``read_committed``; on a broker without
transactions (Tansu) it says so and falls back to at least once.

Knobs of the kill test: ``INFERSTREAM_TEST_SEED`` replays a run's kill times (printed);
``INFERSTREAM_TEST_FRAUD_TRANSACTIONS=off`` runs it on the at-least-once path, where it
must fail with duplicated alerts (that is how the test was checked)."""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from common import events
from common.broker import EmbeddedBroker
from common.topics import ensure_topics
from inferstream.procs import Child

from ..support import TANSU_ADDRESSES, consumer_env, make_event, wait_for_log

OUTLIER_FEATURE = "f07"


class OutlierStream(threading.Thread):
    """``warmup`` normal events at once, then the rest of ``n`` over about
    ``duration_s`` seconds, every ``every``-th of them carrying a feature a million
    standard deviations out: the known set of outliers (``outlier_ids``) the scorer must
    alert on, once each. The scorer scores a feature once it has seen 200 values of it;
    a restarted scorer works through its backlog partition by partition, so the lead-in
    gives every partition more than 200 (about ``warmup / 4``): no outlier ever meets
    a cold scorer, restarted or not."""

    def __init__(
        self, bootstrap: str, topic: str, n: int, *, duration_s: float, warmup: int = 1200, every: int = 97
    ) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.n, self.duration_s = bootstrap, topic, n, duration_s
        self.warmup, self.every = warmup, every
        self.ids: list[str] = []
        self.outlier_ids: list[str] = []
        self.where: dict[str, tuple[int, int]] = {}  # outlier id → (partition, offset)
        self.error: BaseException | None = None
        self.hurried = threading.Event()  # set: the rest without pauses (the kills are over)

    def run(self) -> None:
        try:
            asyncio.run(self._produce())
        except BaseException as exc:
            self.error = exc

    async def _produce(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
        await producer.start()
        burst = 25
        pause = self.duration_s / max(1, (self.n - self.warmup) // burst)
        try:
            for start in range(0, self.n, burst):
                futures = []
                for i in range(start, min(start + burst, self.n)):
                    ev = make_event()
                    if i >= self.warmup and i % self.every == 0:
                        ev["features"][OUTLIER_FEATURE] = 1e6  # type: ignore[index]
                        self.outlier_ids.append(str(ev["event_id"]))
                    self.ids.append(str(ev["event_id"]))
                    futures.append(
                        await producer.send(
                            self.topic, events.encode(ev), key=events.event_key(ev["event_id"])
                        )
                    )
                for ev_id, meta in zip(self.ids[start:], await asyncio.gather(*futures), strict=True):
                    self.where[ev_id] = (meta.partition, meta.offset)
                if start >= self.warmup and not self.hurried.is_set():
                    await asyncio.sleep(pause)
        finally:
            await producer.stop()


def read_alerts(bootstrap: str, topic: str, expected: int, isolation_level: str, timeout_s: float) -> list:
    """Every record of the alerts topic, once ``expected`` are there (or the time is up),
    plus whatever arrives in a further two seconds (a duplicate would)."""

    async def read() -> list:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level=isolation_level,
        )
        await consumer.start()
        out: list = []
        try:
            deadline = time.monotonic() + timeout_s
            while len(out) < expected and time.monotonic() < deadline:
                for msgs in (await consumer.getmany(timeout_ms=500)).values():
                    out.extend(msgs)
            settle = time.monotonic() + 2.0
            while time.monotonic() < settle:
                for msgs in (await consumer.getmany(timeout_ms=500)).values():
                    out.extend(msgs)
        finally:
            await consumer.stop()
        return out

    return asyncio.run(read())


def committed_lag(bootstrap: str, topic: str, group: str) -> int:
    """Records of ``topic`` the group has not committed yet (end offsets from
    ListOffsets: right on Apache Kafka, where this runs)."""

    async def lag() -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            if not parts:
                await consumer.topics()
                parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            committed = await admin.list_consumer_group_offsets(group, partitions=parts)
            ends = await consumer.end_offsets(parts)
            return sum(ends[tp] - max(0, committed[tp].offset) for tp in parts)
        finally:
            await consumer.stop()
            await admin.close()

    return asyncio.run(lag())


def _scorer(bootstrap: str, topic: str, tmp_path: Path, group: str, life: int, **extra: str) -> Child:
    env = consumer_env(
        bootstrap,
        topic,
        tmp_path,
        group,
        INFERSTREAM_FRAUD_RATE_THRESHOLD="1000000000",  # outliers only: a known set
        INFERSTREAM_LOG_LEVEL="DEBUG",  # each alert and each commit, to explain a failure
        **extra,
    )
    return Child(f"fraud-{life}", ["consume", "fraud"], env, tmp_path / f"fraud-{life}.log")


@pytest.mark.slow
def test_a_scorer_sigkilled_mid_stream_alerts_each_outlier_exactly_once(
    kafka_bootstrap, topic, tmp_path, seed
):
    if kafka_bootstrap in TANSU_ADDRESSES:
        pytest.skip("the embedded broker has no transactions (see the fallback test)")
    rng = random.Random(seed)  # the kill moments; the seed fixture prints it
    group = "fraud-eos"
    extra = {
        "INFERSTREAM_FRAUD_TRANSACTIONS": os.environ.get("INFERSTREAM_TEST_FRAUD_TRANSACTIONS", "on"),
        # widens the window between "alerts sent" and "committed" so that kills land in it
        "INFERSTREAM_FAULT_PAUSE_BEFORE_COMMIT_S": "1.0",
    }
    lives = [_scorer(kafka_bootstrap, topic, tmp_path, group, 0, **extra)]
    stream = OutlierStream(kafka_bootstrap, topic, 7200, duration_s=40.0)
    kills: list[float] = []
    try:
        wait_for_log(lives[0], "assigned group=", timeout_s=90)
        stream.start()
        t0 = time.monotonic()
        for life in (1, 2, 3):
            # a seeded moment, then just after the next alert was scored: its batch is
            # then being sent or waits to commit (the 1 s pause), the window at stake
            time.sleep(rng.uniform(1.0, 3.0))
            scored = lives[-1].log_path.read_text().count("alert kind=")
            wait_for_log(lives[-1], "alert kind=", timeout_s=30, count=scored + 1)
            time.sleep(rng.uniform(0.4, 0.8))
            assert stream.is_alive(), "the stream ended before the kill: not mid-stream"
            kills.append(round(time.monotonic() - t0, 2))
            lives[-1].kill()
            lives.append(_scorer(kafka_bootstrap, topic, tmp_path, group, life, **extra))
            wait_for_log(lives[-1], "assigned group=", timeout_s=90)
        stream.hurried.set()  # the kills are over: the rest of the stream at once
        stream.join(timeout=120)
        assert stream.error is None, stream.error
        expected = set(stream.outlier_ids)
        committed = read_alerts(kafka_bootstrap, f"{topic}.alerts", len(expected), "read_committed", 90)
        uncommitted = read_alerts(kafka_bootstrap, f"{topic}.alerts", len(committed), "read_uncommitted", 10)
        deadline = time.monotonic() + 60
        while (lag := committed_lag(kafka_bootstrap, topic, group)) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        for child in lives:
            child.terminate()
    alerted = Counter(orjson.loads(a.value)["event_id"] for a in committed)
    lost = expected - set(alerted)
    duplicated = {k: n for k, n in alerted.items() if n > 1}
    unexpected = set(alerted) - expected
    print(
        f"seed={seed} kills_at_s={kills} events={len(stream.ids)} outliers={len(expected)} "
        f"alerts_committed={len(committed)} alerts_visible_uncommitted={len(uncommitted)} "
        f"lost={len(lost)} duplicated={sum(duplicated.values()) - len(duplicated)} "
        f"unexpected={len(unexpected)}"
    )
    assert lag == 0, f"the group did not commit everything: lag {lag}"
    assert not lost, f"lost alerts (seed {seed}): {[(i, stream.where[i]) for i in sorted(lost)[:5]]}"
    assert not duplicated, f"duplicated alerts (seed {seed}): {duplicated}"
    assert not unexpected, f"alerts on events that are not outliers (seed {seed}): {sorted(unexpected)[:5]}"
    assert all(a["kind"] == "feature_outlier" for a in map(orjson.loads, (a.value for a in committed)))
    assert "alerts exactly once" in lives[0].log_path.read_text()
    # the kills hit open transactions holding alerts (aborted: only read_uncommitted sees
    # them), so the window where at-least-once duplicates was exercised
    assert len(uncommitted) > len(committed), "no kill landed inside a transaction with alerts"


@pytest.mark.slow
def test_on_a_broker_without_transactions_the_scorer_says_so_and_falls_back(tmp_path):
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as broker:
        bootstrap = broker.bootstrap_servers
        topic = "t-fraud-fallback"
        asyncio.run(ensure_topics(bootstrap, {topic: 4, f"{topic}.alerts": 4, f"{topic}.dlq": 4}))
        # required but missing: one line naming the setting, and the process exits
        strict = _scorer(bootstrap, topic, tmp_path, "fraud-fb", 0, INFERSTREAM_FRAUD_TRANSACTIONS="on")
        assert strict.proc.wait(timeout=60) == 2
        line = strict.log_path.read_text().strip().splitlines()[-1]
        assert line.startswith("inferstream: ") and "INFERSTREAM_FRAUD_TRANSACTIONS=auto or off" in line
        scorer = _scorer(bootstrap, topic, tmp_path, "fraud-fb", 1)
        try:
            wait_for_log(scorer, "assigned group=", timeout_s=90)
            log_text = scorer.log_path.read_text()
            assert log_text.count("has no transactions") == 1, log_text
            assert "fall back to at least once" in log_text and "Traceback" not in log_text
            stream = OutlierStream(bootstrap, topic, 1600, duration_s=2.0)
            stream.run()
            assert stream.error is None, stream.error
            alerts = read_alerts(
                bootstrap, f"{topic}.alerts", len(stream.outlier_ids), "read_uncommitted", 30
            )
            assert sorted(orjson.loads(a.value)["event_id"] for a in alerts) == sorted(stream.outlier_ids)
        finally:
            scorer.terminate()
