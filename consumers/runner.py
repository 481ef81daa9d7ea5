"""One consumer runner for every consumer group; a sink only makes batches durable.

Loop: ``getmany`` → ``sink.add`` → when the batch is big or old enough, ``sink.flush``
(durable) → commit the offsets after it. A rebalance flushes and commits before
partitions are revoked. SIGTERM flips ``running``; the loop ends with one final flush
and commit. Auto-commit is off; nothing is committed that the sink has not made durable.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Iterable
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

log = logging.getLogger(__name__)


class Sink(Protocol):
    def assigned(self, partitions: dict[TopicPartition, tuple[int | None, str]]) -> None:
        """Partitions now owned, with their committed offset and commit metadata."""

    def add(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None: ...

    @property
    def pending_rows(self) -> int: ...

    def flush(self) -> dict[TopicPartition, tuple[int, str]]:
        """Make everything added durable, then clear it. On failure raise OSError and keep
        the batch (the runner retries with backoff and commits nothing meanwhile).
        Returns, per partition, the next offset to commit and the commit metadata."""

    def revoked(self, partitions: Iterable[TopicPartition]) -> None:
        """Forget pending work of partitions no longer owned."""


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: ConsumerRunner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        if revoked:
            await self.runner.flush_and_commit()
            self.runner.sink.revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        committed = await self.runner.committed(assigned)
        self.runner.sink.assigned(committed)
        log.info("assigned %s", sorted((tp.topic, tp.partition) for tp in assigned))


def incarnation_of(first: ConsumerRecord[bytes, bytes]) -> str:
    """A stable id for one life of a topic partition, from its earliest record."""
    h = hashlib.blake2b(digest_size=6)
    h.update(str(first.offset).encode())
    h.update(str(first.timestamp).encode())
    h.update(first.key or b"")
    h.update(first.value or b"")
    return h.hexdigest()


class ConsumerRunner:
    def __init__(
        self,
        *,
        bootstrap_servers: str,
        topics: list[str],
        group_id: str,
        sink: Sink,
        max_batch_rows: int = 50_000,
        max_batch_age_s: float = 2.0,
        poll_timeout_ms: int = 500,
        session_timeout_ms: int = 6_000,
        client_id: str = "inferstream-consumer",
        pause_before_commit_s: float = 0.0,
    ) -> None:
        self.sink = sink
        # fault injection only: widens the window between "durable" and "committed"
        # so that crash tests can land in it (a real crash there is rare but possible)
        self.pause_before_commit_s = pause_before_commit_s
        self.topics = topics
        self.group_id = group_id
        self.max_batch_rows = max_batch_rows
        self.max_batch_age_s = max_batch_age_s
        self.poll_timeout_ms = poll_timeout_ms
        self.running = True
        self.records = 0
        self.batches = 0
        self._oldest: float | None = None
        self._consumer_kwargs: dict[str, Any] = dict(
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=max(1000, session_timeout_ms // 3),
            max_poll_interval_ms=300_000,
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=16 * 1024 * 1024,
        )
        self._consumer: AIOKafkaConsumer | None = None

    @property
    def consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("the runner is not running")
        return self._consumer

    async def committed(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, tuple[int | None, str]]:
        """Committed offset and incarnation of each partition.

        The incarnation (see ``common.lake``) is the commit metadata where the broker
        keeps it (Kafka does); otherwise (Tansu drops commit metadata) a hash of the
        partition's earliest record, or "" for an empty partition (the sink then takes
        it from the first record it sees, which is then the earliest)."""
        # aiokafka's public committed() drops the commit metadata; the coordinator keeps it
        coordinator = self.consumer._coordinator  # noqa: SLF001
        found = await coordinator.fetch_committed_offsets(partitions)
        out: dict[TopicPartition, tuple[int | None, str]] = {}
        for tp in partitions:
            oam = found.get(tp)
            if oam is not None and oam.offset >= 0:
                out[tp] = (oam.offset, oam.metadata or "")
            else:
                out[tp] = (None, "")
        unknown = [tp for tp, (_, inc) in out.items() if not inc]
        if unknown:
            earliest = await self._earliest_incarnations(unknown)
            for tp in unknown:
                out[tp] = (out[tp][0], earliest.get(tp, ""))
        return out

    async def _earliest_incarnations(self, partitions: list[TopicPartition]) -> dict[TopicPartition, str]:
        reader = AIOKafkaConsumer(
            bootstrap_servers=self._consumer_kwargs["bootstrap_servers"],
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await reader.start()
        found: dict[TopicPartition, str] = {}
        try:
            reader.assign(partitions)
            await reader.seek_to_beginning(*partitions)
            deadline = time.monotonic() + 2.0
            while len(found) < len(partitions) and time.monotonic() < deadline:
                pending = [tp for tp in partitions if tp not in found]
                batch = await reader.getmany(*pending, timeout_ms=300, max_records=len(pending) * 50)
                for tp, msgs in batch.items():
                    if msgs:
                        found[tp] = incarnation_of(msgs[0])
        finally:
            await reader.stop()
        return found

    async def flush_and_commit(self) -> None:
        if not self.sink.pending_rows:
            self._oldest = None
            return
        start = time.perf_counter()
        offsets = self.sink.flush()
        self._oldest = None
        if self.pause_before_commit_s:
            await asyncio.sleep(self.pause_before_commit_s)
        if offsets:
            await self.consumer.commit({tp: (off, meta) for tp, (off, meta) in offsets.items()})
        self.batches += 1
        log.debug("flushed and committed %s in %.3fs", offsets, time.perf_counter() - start)

    def stop(self) -> None:
        """Ask the loop to end (signal-handler safe)."""
        self.running = False

    async def run(self) -> None:
        # aiokafka binds a consumer to the running loop: create it here, not in __init__
        self._consumer = AIOKafkaConsumer(**self._consumer_kwargs)
        await self.consumer.start()
        self.consumer.subscribe(self.topics, listener=_Listener(self))
        try:
            while self.running:
                batch = await self.consumer.getmany(timeout_ms=self.poll_timeout_ms, max_records=10_000)
                for tp, msgs in batch.items():
                    if msgs:
                        self.sink.add(tp, msgs)
                        self.records += len(msgs)
                        if self._oldest is None:
                            self._oldest = time.monotonic()
                due = self._oldest is not None and time.monotonic() - self._oldest >= self.max_batch_age_s
                if self.sink.pending_rows >= self.max_batch_rows or due:
                    await self._flush_with_backoff()
            await self._flush_with_backoff()
        finally:
            try:
                await self.consumer.stop()
            except KafkaError as exc:
                log.warning("consumer stop: %r", exc)

    async def _flush_with_backoff(self) -> None:
        delay = 0.2
        while True:
            try:
                await self.flush_and_commit()
                return
            except OSError as exc:
                # the sink could not make the batch durable: nothing was committed; the
                # sink still holds the batch, so try again
                log.error("sink flush failed (%r); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                if not self.running:
                    raise
