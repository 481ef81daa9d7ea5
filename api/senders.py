"""The Kafka clients behind the publisher: one batch in, the records not acknowledged out.

A sender is opened by the publisher's probe (connect and fetch the topic's metadata;
failure means "broker down, keep spooling"), asked to ``send`` one batch at a time,
and closed after any failure (the next probe opens a fresh one).

- ``AiokafkaSender``: pure-Python aiokafka, one ``create_batch``/``send_batch`` per
  partition.
- ``ConfluentSender``: confluent-kafka (librdkafka, C). ``produce`` only queues in C;
  ``flush`` runs in a worker thread, where librdkafka does the network I/O and the
  delivery callbacks without holding the GIL most of the time. Measured here at ~15x
  aiokafka's producer throughput (see docs/brokers.md).

Partitioning: "key" hashes each event's key (murmur2); "sticky" sends each batch whole to
one partition, rotating between batches (the keys are random ids that promise no
co-location, and one big batch is much cheaper for a client than many small ones).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, defaultdict
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from common.errors import InferstreamError

Record = tuple[str, bytes, bytes, float]  # (topic, key, value, monotonic time offered)


def _not_bootstrap_failure(record: logging.LogRecord) -> bool:
    """aiokafka logs an ERROR for each failed bootstrap, i.e. each failed probe; the
    publisher reports those itself, with backoff (see :meth:`EventPublisher._probe`)."""
    return record.msg != 'Unable connect to "%s:%s": %s'


_AIOKAFKA_LOG = logging.getLogger("aiokafka")


def _not_rdkafka_bootstrap_failure(record: logging.LogRecord) -> bool:
    """librdkafka's ERROR for each failed connection to a bootstrap address (several a
    second while a probe waits): the publisher reports those itself, with backoff."""
    return not (record.levelno >= logging.ERROR and "/bootstrap: Connect to" in record.getMessage())


# librdkafka's log, through Python's logging (it printed to stderr on its own)
_RDKAFKA_LOG = logging.getLogger("librdkafka")
_RDKAFKA_LOG.addFilter(_not_rdkafka_bootstrap_failure)


class SenderUnavailable(InferstreamError):
    """The broker cannot be reached or the topic's metadata is missing."""


class Sender(Protocol):
    async def open(self) -> None: ...

    async def send(self, records: list[Record]) -> tuple[list[Record], BaseException | None]: ...

    async def close(self) -> None: ...


class _Partitions:
    def __init__(self, sticky: bool) -> None:
        self.sticky = sticky
        self.rotation = 0
        self._murmur = DefaultPartitioner()

    def choose(self, key: bytes, partitions: list[int]) -> int:
        if self.sticky:
            return partitions[self.rotation % len(partitions)]
        return int(self._murmur(key, partitions, partitions))


class AiokafkaSender:
    def __init__(
        self,
        *,
        topic: str,
        partitioning: str,
        timeout_s: float,
        open_timeout_s: float | None = None,
        **producer_kwargs: Any,
    ) -> None:
        """``open_timeout_s``: how long ``open`` waits for the broker (default
        ``timeout_s``); short, so that a hung broker is told from a slow one quickly."""
        self.topic = topic
        self._kwargs = producer_kwargs
        self._timeout_s = timeout_s
        self._open_timeout_s = open_timeout_s or timeout_s
        self._parts = _Partitions(partitioning == "sticky")
        if _not_bootstrap_failure not in _AIOKAFKA_LOG.filters:
            _AIOKAFKA_LOG.addFilter(_not_bootstrap_failure)
        # constructed now: a bad setting (a compression codec whose library is missing)
        # fails the API's start-up instead of the background task
        self._producer = AIOKafkaProducer(**self._kwargs)

    async def open(self) -> None:
        try:
            await asyncio.wait_for(self._producer.start(), self._open_timeout_s)
            await asyncio.wait_for(self._producer.partitions_for(self.topic), self._open_timeout_s)
        except (KafkaError, TimeoutError, OSError) as exc:
            raise SenderUnavailable(repr(exc)) from exc

    async def close(self) -> None:
        # Abandon what the producer still holds, as ConfluentSender purges: the publisher
        # spooled those records, and a producer left retrying them in the background
        # (stop() only waits 5 s, its sender task outlives a cancelled stop) writes them a
        # second time once the broker is back. Measured on a 3-node cluster with two
        # nodes down for 30 s: each of 8 timed-out replays of an 847-event batch landed
        # again later, 6,777 duplicates on the topic.
        sender = self._producer._sender  # aiokafka has no public abort
        task = sender.sender_task if sender is not None else None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=5)  # unlike awaiting it, never raises its cancellation
        with contextlib.suppress(KafkaError, TimeoutError, OSError):
            await asyncio.wait_for(self._producer.stop(), 5)

    async def send(self, records: list[Record]) -> tuple[list[Record], BaseException | None]:
        producer = self._producer
        by_tp: dict[tuple[str, int], list[Record]] = defaultdict(list)
        parts: dict[str, list[int]] = {}
        for rec in records:
            topic = rec[0]
            if topic not in parts:
                parts[topic] = sorted(await producer.partitions_for(topic))
            by_tp[(topic, self._parts.choose(rec[1], parts[topic]))].append(rec)
        self._parts.rotation += 1
        sent: list[tuple[asyncio.Future[object], list[Record]]] = []
        for (topic, p), recs in by_tp.items():
            batch = producer.create_batch()
            members: list[Record] = []
            for rec in recs:
                if batch.append(key=rec[1], value=rec[2], timestamp=None) is None:
                    sent.append((await producer.send_batch(batch, topic, partition=p), members))
                    batch, members = producer.create_batch(), []
                    batch.append(key=rec[1], value=rec[2], timestamp=None)
                members.append(rec)
            sent.append((await producer.send_batch(batch, topic, partition=p), members))
        results = await asyncio.gather(*(f for f, _ in sent), return_exceptions=True)
        failed: list[Record] = []
        error: BaseException | None = None
        for result, (_, members) in zip(results, sent, strict=True):
            if isinstance(result, BaseException):
                failed.extend(members)
                error = result
        return failed, error


class ConfluentSender:
    def __init__(
        self,
        *,
        topic: str,
        partitioning: str,
        timeout_s: float,
        bootstrap_servers: str,
        client_id: str,
        acks: str | int,
        enable_idempotence: bool,
        compression_type: str | None,
        linger_ms: int,
        open_timeout_s: float | None = None,
        **_: Any,
    ) -> None:
        from confluent_kafka import Producer

        self.topic = topic
        self._timeout_s = timeout_s
        self._open_timeout_s = min(open_timeout_s or timeout_s, 5.0)
        self._parts = _Partitions(partitioning == "sticky")
        self._partitions: dict[str, list[int]] = {}
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap_servers,
                "client.id": client_id,
                "acks": str(acks),
                "enable.idempotence": enable_idempotence,
                "compression.type": compression_type or "none",
                "linger.ms": linger_ms,
                "batch.size": 1_000_000,
                "message.timeout.ms": int(timeout_s * 1000),
                "queue.buffering.max.messages": 1_000_000,
            },
            logger=_RDKAFKA_LOG,
        )

    async def open(self) -> None:
        from confluent_kafka import KafkaException

        try:
            md = await asyncio.to_thread(self._producer.list_topics, self.topic, self._open_timeout_s)
        except KafkaException as exc:
            raise SenderUnavailable(repr(exc)) from exc
        t = md.topics.get(self.topic)
        if t is None or t.error is not None or not t.partitions:
            raise SenderUnavailable(f"no metadata for topic {self.topic}: {t.error if t else 'missing'}")
        self._partitions[self.topic] = sorted(t.partitions)

    async def _partitions_for(self, topic: str) -> list[int]:
        if topic not in self._partitions:
            md = await asyncio.to_thread(self._producer.list_topics, topic, min(self._timeout_s, 5.0))
            t = md.topics.get(topic)
            if t is None or t.error is not None or not t.partitions:
                raise SenderUnavailable(f"no metadata for topic {topic}")
            self._partitions[topic] = sorted(t.partitions)
        return self._partitions[topic]

    async def close(self) -> None:
        # anything still queued in C was reported failed (and spooled) by send()
        self._producer.purge()
        await asyncio.to_thread(self._producer.flush, 0)

    async def send(self, records: list[Record]) -> tuple[list[Record], BaseException | None]:
        failures: Counter[tuple[str, bytes]] = Counter()
        errors: list[Any] = []

        def on_delivery(err: Any, msg: Any) -> None:  # runs in the flush thread
            if err is not None:
                failures[(msg.topic(), msg.key())] += 1
                errors.append(err)

        produce = self._producer.produce
        for i, (topic, key, value, _) in enumerate(records):
            partitions = await self._partitions_for(topic)
            try:
                produce(
                    topic, value, key, partition=self._parts.choose(key, partitions), on_delivery=on_delivery
                )
            except BufferError as exc:  # librdkafka's queue is full: the rest is not sent
                failed_now = records[i:]
                await self._settle()
                return self._failed(records[:i], failures) + failed_now, exc
        self._parts.rotation += 1
        await self._settle()
        error = errors[0] if errors else None
        return self._failed(records, failures), None if error is None else RuntimeError(str(error))

    async def _settle(self) -> None:
        """Wait for every queued message's delivery report; past the timeout, purge so
        that the undelivered ones are reported failed rather than sent later."""
        remaining = await asyncio.to_thread(self._producer.flush, self._timeout_s + 1)
        if remaining:
            self._producer.purge()
            await asyncio.to_thread(self._producer.flush, 1)

    @staticmethod
    def _failed(records: list[Record], failures: Counter[tuple[str, bytes]]) -> list[Record]:
        if not failures:
            return []
        out = []
        for rec in records:
            k = (rec[0], rec[1])
            if failures[k] > 0:
                failures[k] -= 1
                out.append(rec)
        return out


def make_sender(client: str, **kwargs: Any) -> Sender:
    if client == "aiokafka":
        return AiokafkaSender(**kwargs)
    if client == "confluent":
        return ConfluentSender(**kwargs)
    raise ValueError(f"kafka client must be 'aiokafka' or 'confluent', not {client!r}")
