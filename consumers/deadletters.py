"""Dead letters: records no sink can store, routed to ``inference-events.dlq``.

The dead letter keeps the original key and value untouched; its source coordinates,
the reason and the consumer group travel as headers (``dlq.topic``, ``dlq.partition``,
``dlq.offset``, ``dlq.reason``, ``dlq.group``), so a replay tool can put it back.

Durability: :meth:`DeadLetterProducer.publish` returns only when every dead letter is
acknowledged by the in-sync replicas (acks=all); the runner commits the source offsets
after that. A crash between the two republishes them: dead letters are at least once,
keyed by their coordinates for deduplication.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from consumers.errors import SinkUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str

    def headers(self, group: str) -> list[tuple[str, bytes]]:
        return [
            ("dlq.topic", self.topic.encode()),
            ("dlq.partition", str(self.partition).encode()),
            ("dlq.offset", str(self.offset).encode()),
            ("dlq.reason", self.reason.encode()[:1000]),
            ("dlq.group", group.encode()),
        ]


def coordinates(
    headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...],
) -> tuple[str, int, int, str]:
    """(topic, partition, offset, reason) of a record read back from the DLQ topic."""
    h = {k: v.decode() for k, v in headers}
    return h["dlq.topic"], int(h["dlq.partition"]), int(h["dlq.offset"]), h["dlq.reason"]


class DeadLetterProducer:
    """Publishes dead letters durably. ``start``/``stop`` are safe to call twice."""

    def __init__(self, *, bootstrap_servers: str, topic: str, group: str, client_id: str) -> None:
        self.topic = topic
        self.group = group
        self._kwargs = dict(
            bootstrap_servers=bootstrap_servers,
            client_id=f"{client_id}-dlq",
            acks="all",
            linger_ms=5,
            request_timeout_ms=15_000,
        )
        self._producer: AIOKafkaProducer | None = None
        self.published = 0

    async def start(self) -> None:
        if self._producer is None:
            self._producer = AIOKafkaProducer(**self._kwargs)
            await self._producer.start()

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await producer.stop()
            except KafkaError as exc:
                log.warning("dead-letter producer stop: %r", exc)

    async def publish(self, letters: list[DeadLetter]) -> None:
        """Every letter acknowledged, or SinkUnavailable (then publish all again)."""
        if not letters:
            return
        records = [(self.topic, letter.value, letter.key, letter.headers(self.group)) for letter in letters]
        await self._send_all(records, f"dead-letter topic {self.topic}")
        self.published += len(letters)
        for letter in letters:
            log.warning(
                "dead letter %s[%d]@%d: %s", letter.topic, letter.partition, letter.offset, letter.reason
            )

    async def publish_outputs(self, outputs: list[Any]) -> None:
        """A sink's own output records (``topic``, ``key``, ``value``, ``headers``),
        acknowledged, or SinkUnavailable (then publish all again)."""
        if not outputs:
            return
        await self._send_all([(o.topic, o.value, o.key, list(o.headers)) for o in outputs], "output topic")

    async def _send_all(self, records: list[tuple[str, bytes | None, bytes | None, Any]], what: str) -> None:
        """Send (topic, value, key, headers) records and wait for every acknowledgement."""
        if self._producer is None:
            await self.start()
        assert self._producer is not None
        try:
            futures = [
                await self._producer.send(topic, value, key=key, headers=headers)
                for topic, value, key, headers in records
            ]
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise SinkUnavailable(f"{what} unreachable: {exc!r}") from exc
