"""Exactly-once read-process-write: a batch's outputs, its dead letters and its
consumed offsets commit in one Kafka transaction, or none of them do.

Used by the runner for a sink whose output is Kafka records (the fraud scorer's
alerts), where the broker has transactions. Contracts:

- :meth:`TransactionalCommitter.commit` returns only when the transaction committed:
  then readers with ``isolation_level="read_committed"`` see every record of it and the
  group's committed offsets moved. On a broker error it aborts and raises
  SinkUnavailable: nothing of it is visible, the caller keeps the batch and retries.
- The transactional id is ``<prefix>.<group>.<digest of the assigned partitions>``: the
  same partition set gets the same id, so a restarted scorer (or the group member that
  takes over the same set) fences its predecessor: the predecessor's open transaction
  is aborted when the successor's producer starts, and a predecessor that wakes up
  later (a zombie) gets ProducerFenced and exits (:class:`TransactionFenced`). A dead
  scorer never commits its open transaction, whoever takes its partitions. aiokafka
  commits offsets in a transaction without the group generation (KIP-447 is not
  implemented), so a zombie whose partitions moved into a differently composed set is
  not fenced this way and could commit one more batch (see README).
- :func:`probe` tells whether the broker has transactions at all (Tansu has none).

The tree of errors (consumers.errors): SinkUnavailable (retriable) for broker errors;
TransactionFenced (not retriable) when a newer producer took the transactional id.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import InvalidProducerEpoch, KafkaConnectionError, KafkaError, ProducerFenced

from common.errors import InferstreamError
from consumers.deadletters import DEFAULT_MAX_MESSAGE_BYTES, DeadLetter
from consumers.errors import SinkUnavailable
from consumers.producers import Output

log = logging.getLogger(__name__)


class TransactionFenced(InferstreamError):
    """A newer producer with our transactional id exists: this process is a zombie and
    must stop without committing anything more."""


def transactional_id(prefix: str, group_id: str, partitions: Iterable[TopicPartition]) -> str:
    """Stable for a group's partition set (order does not matter)."""
    names = ",".join(sorted(f"{tp.topic}:{tp.partition}" for tp in partitions))
    digest = hashlib.blake2b(names.encode(), digest_size=6).hexdigest()
    return f"{prefix}.{group_id}.{digest}"


async def probe(bootstrap_servers: str, transactional_id: str, timeout_s: float = 30.0) -> str | None:
    """None when the broker grants a transactional producer id, else the broker's
    answer (e.g. Tansu's UnknownError). An unreachable broker raises SinkUnavailable:
    that says nothing about transactions."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, transactional_id=transactional_id)
    # a refusal is an answer here, not an error: keep aiokafka's traceback out of the log
    sender_log = logging.getLogger("aiokafka.producer.sender")
    was_disabled, sender_log.disabled = sender_log.disabled, True
    try:
        # start() asks for the producer id (InitProducerId) and fails if it is refused
        await asyncio.wait_for(producer.start(), timeout_s)
    except (KafkaConnectionError, TimeoutError) as exc:
        raise SinkUnavailable(f"cannot reach Kafka at {bootstrap_servers}: {exc!r}") from exc
    except KafkaError as exc:
        return repr(exc)
    finally:
        sender_log.disabled = was_disabled
        await _stop_quietly(producer)
    return None


class TransactionalCommitter:
    """One transactional producer for the current partition set. Not thread-safe: the
    runner calls it under its lock. ``stop()`` is safe to call twice."""

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        group_id: str,
        transactional_id_prefix: str,
        dlq_topic: str,
        client_id: str,
        dead_letter_limit: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.group_id = group_id
        self.prefix = transactional_id_prefix
        self.dlq_topic = dlq_topic
        self.dead_letter_limit = dead_letter_limit
        self.client_id = client_id
        self.transactional_id: str | None = None
        self._producer: AIOKafkaProducer | None = None
        self.transactions = 0
        self.fenced: TransactionFenced | None = None  # once fenced, never a producer again

    async def assigned(self, partitions: Iterable[TopicPartition]) -> None:
        """Use the producer of this partition set (started now if the set changed).
        Starting it fences the set's previous owner and aborts its open transaction, so
        the offsets fetched afterwards are the last committed ones."""
        parts = set(partitions)
        if not parts:
            return
        tid = transactional_id(self.prefix, self.group_id, parts)
        if tid != self.transactional_id:
            await self.stop()
            self.transactional_id = tid
        await self._ensure_producer()
        log.info("transactional producer ready id=%s partitions=%d", tid, len(parts))

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self.fenced is not None:
            raise self.fenced  # a new producer would fence the scorer that replaced us
        if self._producer is not None:
            return self._producer
        tid = self.transactional_id
        if tid is None:
            raise SinkUnavailable("no transactional producer: no partitions assigned yet")
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=f"{self.client_id}-txn",
            transactional_id=tid,
            linger_ms=5,
            request_timeout_ms=15_000,
        )
        try:
            await producer.start()  # InitProducerId: bumps the epoch, fencing the predecessor
        except KafkaError as exc:
            await _stop_quietly(producer)
            raise SinkUnavailable(f"transactional producer {tid} did not start: {exc!r}") from exc
        self._producer = producer
        return producer

    async def commit(
        self,
        offsets: dict[TopicPartition, tuple[int, str]],
        dead: list[DeadLetter],
        outputs: list[Output],
        *,
        pause_before_commit_s: float = 0.0,
    ) -> None:
        """Send ``outputs`` (``topic``, ``key``, ``value``, ``headers``) and ``dead`` and
        commit ``offsets`` for the group, in one transaction."""
        producer = await self._ensure_producer()
        try:
            await producer.begin_transaction()
            futures = [
                await producer.send(o.topic, o.value, key=o.key, headers=list(o.headers)) for o in outputs
            ]
            for d in dead:  # as the dead-letter producer sends them: a preview if too large
                fitted = d.fitted(self.group_id, self.dead_letter_limit)
                if fitted is None:
                    raise SinkUnavailable(
                        f"dead letter {d.topic}[{d.partition}]@{d.offset} does not fit "
                        f"{self.dead_letter_limit} bytes: raise max.message.bytes of {self.dlq_topic}"
                    )
                key, value, headers = fitted
                futures.append(await producer.send(self.dlq_topic, value, key=key, headers=list(headers)))
            await asyncio.gather(*futures)
            if offsets:
                await producer.send_offsets_to_transaction(dict(offsets), self.group_id)
            if pause_before_commit_s:  # fault injection: a crash here leaves an open transaction
                await asyncio.sleep(pause_before_commit_s)
            await producer.commit_transaction()
        except (ProducerFenced, InvalidProducerEpoch) as exc:
            await self._close_producer()
            self.fenced = TransactionFenced(
                f"transactional id {self.transactional_id} was taken over by a newer scorer: "
                "this one stops without committing"
            )
            raise self.fenced from exc
        except KafkaError as exc:
            await self._abort(exc)
            raise SinkUnavailable(f"transaction failed and was aborted: {exc!r}") from exc
        self.transactions += 1

    async def _abort(self, cause: KafkaError) -> None:
        producer = self._producer
        if producer is None:
            return
        try:
            if producer._txn_manager.is_in_transaction():  # no public state
                await producer.abort_transaction()
        except KafkaError as exc:
            # this producer is unusable: the next one (same id, higher epoch) aborts for us
            log.warning("abort after %r failed: %r; the producer starts anew", cause, exc)
            await self._close_producer()

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await _stop_quietly(producer)

    async def stop(self) -> None:
        await self._close_producer()
        self.transactional_id = None


async def _stop_quietly(producer: AIOKafkaProducer) -> None:
    try:
        await producer.stop()
    except KafkaError as exc:
        log.warning("producer stop: %r", exc)
