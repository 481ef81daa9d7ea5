"""The landing benchmark's client comparison: is the Kafka client what limits landing?

Beside aiokafka's raw ``getmany`` and the real lander (bench/landing.py), on the same
topic in the same run:

- raw consume with confluent-kafka's batch ``Consumer.consume(num_messages, timeout)``
  (librdkafka fetches and decompresses in its own threads, without the GIL), doing
  nothing with the messages; and again turning each message into aiokafka's
  ``ConsumerRecord``, the record the runner and its sinks take (the cost of putting
  confluent-kafka behind the runner's interface without changing the sinks);
- the landing ceiling without the runner (no group, no rebalance listener, no group
  commit, no dead-letter publish, no lag or health checks), with each client: its
  consume, records handed to the same ``LakeSink``, and the sink's ``flush`` (parse,
  dedupe against the table, Parquet, one Delta commit) in a worker thread every
  ``BATCH_ROWS`` records, one flush at a time, as the runner pipelines it.

Every measure is wall time and this process's CPU time (``time.process_time``: all its
threads, librdkafka's included; the broker runs in another process), taken at the same
two points: on a shared machine the CPU per event moves much less than the wall rate.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message
from confluent_kafka import TopicPartition as ConfluentPartition

from common import lake
from consumers.lake import LakeSink

BATCH_ROWS = 50_000  # the lander's max_batch_rows in bench/landing.py
CONSUME_BATCH = 10_000  # records asked for per call, by both clients


@dataclass
class Timed:
    wall_s: float
    cpu_s: float


class _Clock:
    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def done(self) -> Timed:
        return Timed(time.perf_counter() - self.wall, time.process_time() - self.cpu)


def confluent_consumer(bootstrap: str) -> Consumer:
    """A consumer reading assigned partitions from their beginning, fetch sizes as the
    aiokafka raw consume's; its group id is never joined (``assign``) nor committed."""
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-raw-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": 16 * 1024 * 1024,
            "queued.max.messages.kbytes": 256 * 1024,
        }
    )


def as_record(m: Message) -> ConsumerRecord[bytes, bytes]:
    """A confluent-kafka message as the record the runner's sinks take."""
    topic = m.topic()
    partition, offset = m.partition(), m.offset()
    assert topic is not None and partition is not None and offset is not None
    _, timestamp = m.timestamp()
    key, value = m.key(), m.value()
    return ConsumerRecord(topic, partition, offset, timestamp, 0, key, value, None, -1, -1, ())


def _batches(consumer: Consumer) -> list[Message]:
    out = consumer.consume(num_messages=CONSUME_BATCH, timeout=1.0)
    for m in out:
        if m.error() is not None:
            raise RuntimeError(f"consume: {m.error()}")
    return out


def raw_consume_confluent(bootstrap: str, topic: str, partitions: int, n: int, *, wrap: bool) -> Timed:
    """``n`` records consumed and dropped (``wrap``: each made a ``ConsumerRecord`` first)."""
    consumer = confluent_consumer(bootstrap)
    try:
        consumer.assign([ConfluentPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        seen = 0
        clock = _Clock()
        while seen < n:
            msgs = _batches(consumer)
            if wrap:
                seen += len([as_record(m) for m in msgs])
            else:
                seen += len(msgs)
        return clock.done()
    finally:
        consumer.close()


class _Flusher:
    """The sink's flush in a worker thread, one at a time (the runner's pipelining)."""

    def __init__(self, sink: LakeSink) -> None:
        self.sink = sink
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            self.sink.flush()
        except BaseException as exc:  # surfaced by wait()
            self.error = exc

    def start(self) -> None:
        self.wait()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def wait(self) -> None:
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        if self.error is not None:
            raise self.error


def _new_sink(where: lake.Lake, topic: str, partitions: int) -> tuple[LakeSink, list[TopicPartition]]:
    sink = LakeSink(where, group=f"bench-ceiling-{uuid.uuid4().hex[:8]}")
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    sink.assigned({tp: (None, "") for tp in tps})  # read from the beginning: the table is new
    return sink, tps


def land_confluent(bootstrap: str, topic: str, partitions: int, n: int, where: lake.Lake) -> Timed:
    """The landing ceiling with confluent-kafka: consume → ``LakeSink`` → flush, no runner."""
    sink, tps = _new_sink(where, topic, partitions)
    flusher = _Flusher(sink)
    consumer = confluent_consumer(bootstrap)
    try:
        consumer.assign([ConfluentPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        seen = pending = 0
        clock = _Clock()
        while seen < n:
            by_partition: dict[int, list[ConsumerRecord[bytes, bytes]]] = {}
            for m in _batches(consumer):
                rec = as_record(m)
                by_partition.setdefault(rec.partition, []).append(rec)
            for p, records in by_partition.items():
                sink.add(tps[p], records)
                seen += len(records)
                pending += len(records)
            if pending >= BATCH_ROWS:
                flusher.start()
                pending = 0
        flusher.wait()
        sink.flush()
        return clock.done()
    finally:
        consumer.close()


def reader(bootstrap: str) -> AIOKafkaConsumer:
    """An aiokafka consumer of no group, from the earliest offsets, with the runner's fetch sizes."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )


async def land_aiokafka(bootstrap: str, topic: str, partitions: int, n: int, where: lake.Lake) -> Timed:
    """The landing ceiling with aiokafka: ``getmany`` → ``LakeSink`` → flush, no runner."""
    sink, tps = _new_sink(where, topic, partitions)
    consumer = reader(bootstrap)
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = pending = 0
        flush: asyncio.Task[object] | None = None
        clock = _Clock()
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=CONSUME_BATCH)
            for tp, records in batch.items():
                sink.add(tp, records)
                seen += len(records)
                pending += len(records)
            if pending >= BATCH_ROWS:
                if flush is not None:
                    await flush
                flush = asyncio.create_task(asyncio.to_thread(sink.flush))
                pending = 0
        if flush is not None:
            await flush
        await asyncio.to_thread(sink.flush)
        return clock.done()
    finally:
        await consumer.stop()


@dataclass
class Comparison:
    """The client comparison's measures on one topic (raw consume, landing ceiling)."""

    confluent_raw: Timed
    confluent_wrapped: Timed
    aiokafka_ceiling: Timed
    confluent_ceiling: Timed
    rows: dict[str, int]  # rows landed by each ceiling run


def compare(bootstrap: str, topic: str, partitions: int, n: int) -> Comparison:
    """All four measures on ``topic`` (``n`` records already produced), file:// only."""
    raw = raw_consume_confluent(bootstrap, topic, partitions, n, wrap=False)
    wrapped = raw_consume_confluent(bootstrap, topic, partitions, n, wrap=True)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench-ceiling-") as tmp:
        where = lake.Lake(f"{tmp}/aiokafka")
        aio = asyncio.run(land_aiokafka(bootstrap, topic, partitions, n, where))
        rows["aiokafka"] = _rows(where)
        where = lake.Lake(f"{tmp}/confluent")
        conf = land_confluent(bootstrap, topic, partitions, n, where)
        rows["confluent"] = _rows(where)
    return Comparison(raw, wrapped, aio, conf, rows)


def _rows(where: lake.Lake) -> int:
    size = lake.table_size(where, lake.EVENTS_TABLE)
    return size.rows if size is not None else 0
