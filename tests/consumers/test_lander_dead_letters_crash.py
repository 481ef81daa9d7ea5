"""The lake lander publishes a batch's dead letters, acknowledged, before the table
commit that moves past them (the table is where a restart resumes): the sink's two
phases driven directly; the runner in-process against the real broker with a dead-letter
producer that checks the table at each publish; and the lander as a real process
SIGKILLed right after the dead letters are acknowledged and right after the table
commit: no dead letter is lost, no valid event lands twice, dead letters are at least
once (dedupe by their coordinates)."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from deltalake import DeltaTable

from common import events, lake
from common.topics import ensure_topics
from consumers.deadletters import DeadLetter
from consumers.errors import NotAcknowledged
from consumers.feedback import FeedbackLakeSink, RoutingSink
from consumers.lake import LakeSink
from consumers.metrics import ConsumerMetrics
from consumers.runner import ConsumerRunner
from inferstream.lakecheck import landing
from inferstream.procs import Child

from ..support import (
    consumer_env,
    dlq_coordinates,
    lake_records,
    make_event,
    poison_value,
    read_dlq,
    wait_landed,
    wait_until,
)

TP = TopicPartition("inference-events", 1)
T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def _table_offsets(table: Path) -> dict[int, int]:
    """The highest landed offset of each Kafka partition in the table ({} if none yet)."""
    if not (table / "_delta_log").is_dir():
        return {}
    rows = DeltaTable(str(table)).to_pyarrow_table(columns=["kafka_partition", "kafka_offset"]).to_pylist()
    out: dict[int, int] = {}
    for row in rows:
        p = row["kafka_partition"]
        out[p] = max(out.get(p, -1), row["kafka_offset"])
    return out


def test_prepare_hands_out_dead_letters_before_the_commit_and_a_failed_commit_not_again(tmp_path):
    sink = LakeSink(tmp_path, group="g")
    table = tmp_path / lake.EVENTS_TABLE
    sink.assigned({TP: (None, "abc123")})
    recs = lake_records(TP, 0, 9, lambda off: T0 + timedelta(seconds=off))
    recs[4] = dataclasses.replace(recs[4], value=b"not json {")
    sink.add(TP, recs)
    assert sink.dead_letters_before_durable
    dead = sink.prepare()
    assert [(d.partition, d.offset) for d in dead] == [(1, 4)]
    assert not table.exists()  # nothing durable before the dead letters are published
    assert sink.pending_rows == 10  # prepared records still wait for the table
    table.write_bytes(b"")  # the table commit fails: a file where its directory goes
    with pytest.raises(OSError):
        sink.flush_prepared()
    table.unlink()
    more = lake_records(TP, 10, 14, lambda off: T0 + timedelta(seconds=off))
    more[0] = dataclasses.replace(more[0], value=b"[1, 2, 3]")
    sink.add(TP, more)  # arrived meanwhile: joins the prepared batch
    assert [(d.partition, d.offset) for d in sink.prepare()] == [(1, 10)]  # not offset 4 again
    assert sink.prepare() == []  # nothing new
    assert sink.flush_prepared() == {TP: (15, "abc123")}
    assert sink.pending_rows == 0 and sink.take_dead_letters() == []
    assert sorted(DeltaTable(str(table)).to_pyarrow_table()["kafka_offset"].to_pylist()) == [
        o for o in range(15) if o not in (4, 10)
    ]
    # revoked partitions' prepared records are dropped, not landed by a later commit
    sink.add(TP, lake_records(TP, 15, 19, lambda off: T0 + timedelta(seconds=off)))
    sink.prepare()
    sink.revoked([TP])
    assert sink.pending_rows == 0 and sink.flush_prepared() == {}


class _FeedbackFailingOnce(FeedbackLakeSink):
    """Feedback whose first parse fails (as a bug in a parser would)."""

    failed = False

    def _frame(self, tp, records, dead):  # type: ignore[no-untyped-def]
        if not self.failed:
            self.failed = True
            raise RuntimeError("the test's parse failure")
        return super()._frame(tp, records, dead)


def test_routing_hands_out_each_dead_letter_once_when_a_later_sink_fails_to_prepare(tmp_path):
    events_tp, feedback_tp = TopicPartition("ev", 0), TopicPartition("fb", 0)
    sink = RoutingSink({"ev": LakeSink(tmp_path), "fb": _FeedbackFailingOnce(tmp_path)})
    assert sink.dead_letters_before_durable
    sink.assigned({events_tp: (None, "e1"), feedback_tp: (None, "f1")})
    recs = lake_records(events_tp, 0, 4, lambda off: T0 + timedelta(seconds=off))
    recs[1] = dataclasses.replace(recs[1], value=b"not json {")
    sink.add(events_tp, recs)
    bad = dataclasses.replace(recs[0], topic="fb", offset=0, value=b"{}")
    sink.add(feedback_tp, [bad])
    with pytest.raises(RuntimeError):
        sink.prepare()  # the events were prepared, the feedback was not
    # the events' dead letter comes with the next call, and only then
    assert sorted((d.topic, d.offset) for d in sink.prepare()) == [("ev", 1), ("fb", 0)]
    assert sink.prepare() == []
    assert sink.flush_prepared() == {events_tp: (5, "e1"), feedback_tp: (1, "f1")}
    assert sink.pending_rows == 0


class CheckingDeadLetters:
    """A dead-letter producer (the runner's ``dead_letter_producer`` argument) that
    acknowledges in memory and records, at each publish, letters the table had already
    moved past. Its first publish acknowledges only the first letter (NotAcknowledged for
    the rest) and puts a file where the table's directory goes, so that the next table
    commit fails until the test removes it."""

    def __init__(self, table: Path) -> None:
        self.table = table
        self.acknowledged: list[tuple[int, int]] = []
        self.table_ahead: list[tuple[int, int, int]] = []  # (partition, offset, table's highest)
        self.calls = 0

    async def start(self) -> None:
        return

    async def stop(self) -> None:
        return

    async def publish(self, letters: list[DeadLetter]) -> None:
        self.calls += 1
        landed = _table_offsets(self.table)
        for d in letters:
            if landed.get(d.partition, -1) > d.offset:
                self.table_ahead.append((d.partition, d.offset, landed[d.partition]))
        if self.calls == 1:
            if not self.table.exists():
                self.table.parent.mkdir(parents=True, exist_ok=True)
                self.table.write_bytes(b"")
            self.acknowledged.append((letters[0].partition, letters[0].offset))
            raise NotAcknowledged("the test acknowledges one letter", letters[1:])
        self.acknowledged += [(d.partition, d.offset) for d in letters]


def _produce(bootstrap: str, topic: str, values: list[bytes], partition: int) -> list[int]:
    async def produce() -> list[int]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            futures = [await producer.send(topic, v, partition=partition) for v in values]
            return [(await f).offset for f in futures]
        finally:
            await producer.stop()

    return asyncio.run(produce())


def test_the_runner_publishes_dead_letters_before_the_table_commit_and_once_despite_failures(
    kafka_bootstrap, topic, tmp_path
):
    # partition 0: 15 valid events, a poison record, ... so a poison record sits mid-batch
    values, ids, poison_at = [], [], []
    for i in range(160):
        if i % 16 == 15:
            poison_at.append(i)
            values.append(poison_value(i) or b"")
        else:
            ev = make_event()
            ids.append(str(ev["event_id"]))
            values.append(events.encode(ev))
    assert _produce(kafka_bootstrap, topic, values, partition=0) == list(range(160))
    lake_dir = tmp_path / "lake"
    table = lake_dir / lake.EVENTS_TABLE
    dlq = CheckingDeadLetters(table)
    metrics = ConsumerMetrics(f"order-{topic}")
    runner = ConsumerRunner(
        bootstrap_servers=kafka_bootstrap,
        topics=[topic],
        group_id=f"order-{topic}",
        sink=LakeSink(lake_dir),
        max_batch_rows=40,
        max_batch_age_s=0.3,
        dead_letter_producer=dlq,  # type: ignore[arg-type]
        metrics=metrics,
    )

    def failures() -> float:
        v = metrics.registry.get_sample_value(
            "inferstream_consumer_flush_failures_total", {"group": metrics.group}
        )
        return 0.0 if v is None else v

    def land() -> None:
        # the partial acknowledgement, then table commits failing: let it retry, then heal
        wait_until(lambda: failures() >= 3 or table.is_dir(), 90, "3 failed flushes")
        if table.is_file():
            table.unlink()
        wait_until(lambda: landing(lake_dir, ids).distinct == len(ids), 90, "every valid event landed")

    async def main() -> None:
        task = asyncio.create_task(runner.run())
        try:
            await asyncio.to_thread(land)
        finally:
            runner.stop()
            await task

    asyncio.run(main())
    assert failures() >= 3  # one partial acknowledgement, then failed table commits, retried
    assert dlq.table_ahead == []  # no letter published after the table moved past it
    assert sorted(dlq.acknowledged) == [(0, o) for o in poison_at]  # each once, none lost
    result = landing(lake_dir, ids)
    assert (result.rows, result.distinct, result.missing) == (len(ids), len(ids), 0)
    assert runner.dead_letters == len(poison_at)


@pytest.mark.slow
def test_lander_sigkilled_after_its_dead_letters_and_after_its_table_commit_loses_none(
    kafka_bootstrap, topic, tmp_path, stream_factory, lake_at
):
    n = 2000
    asyncio.run(ensure_topics(kafka_bootstrap, {f"{topic}.dlq": 4}))
    stream = stream_factory(topic, n, burst=25, pause_s=0.5, poison_every=50)  # ~45 s, 40 poison
    stream.start()
    # each faulted life SIGKILLs itself at its first flush with dead letters: right after
    # they are acknowledged (the table not committed: the next life publishes them again),
    # or right after the table commit (the group not committed)
    steps = ["dead_letters_published", "batch_durable", "dead_letters_published", "batch_durable"]
    lives = []
    for i, step in enumerate(steps):
        env = consumer_env(
            kafka_bootstrap, topic, tmp_path, "lake-dlq-crash", INFERSTREAM_FAULT_KILL_AT=step, **lake_at.env
        )
        life = Child(f"lander-{i}", ["consume", "lake"], env, tmp_path / f"lander-{i}.log")
        lives.append(life)
        try:
            life.proc.wait(timeout=120)
        finally:
            life.kill()
        log = life.log_path.read_text(errors="replace")
        assert life.proc.returncode == -9, log[-3000:]
        assert f"fault injection: SIGKILL at {step}" in log, log[-3000:]
    env = consumer_env(kafka_bootstrap, topic, tmp_path, "lake-dlq-crash", **lake_at.env)
    last = Child("lander-last", ["consume", "lake"], env, tmp_path / "lander-last.log")
    try:
        stream.hurry()  # the faulted lives are over: the rest of the stream at once
        stream.join(timeout=120)
        assert stream.error is None, stream.error
        assert len(stream.poison) == n // 50
        result = wait_landed(lake_at.where, stream.ids, [last], timeout_s=150)
        assert (result.rows, result.distinct, result.missing) == (n, n, 0)  # each exactly once
        records = read_dlq(kafka_bootstrap, f"{topic}.dlq", expected=len(stream.poison) + 2)
    finally:
        last.terminate()
    found = dlq_coordinates(records)
    assert set(found) == set(stream.poison)  # every one, nothing else
    for coords, value in stream.poison.items():
        assert found[coords][1] == value
    # the kills after the publish and before the table commit sent some twice
    assert len(records) >= len(found) + 2, len(records)
