"""Producers whose every send is waited for: a sink's output records (the fraud
scorer's and the drift monitor's alerts) and, through the subclass in
consumers/deadletters.py, dead letters. The runner commits the source offsets only
after they are acknowledged (acks=all)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from consumers.errors import NotAcknowledged

log = logging.getLogger(__name__)

BATCH_BYTES = 16 * 1024  # aiokafka's default batch size

Headers = list[tuple[str, bytes]]
T = TypeVar("T")


@dataclass(frozen=True)
class Output:
    """A record the runner publishes (acknowledged) before committing."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


class AcknowledgedProducer:
    """Sends records and waits for each acknowledgement. ``start``/``stop`` are safe to
    call twice; ``what`` names the records in logs and errors."""

    what = "records"

    def __init__(self, *, bootstrap_servers: str, client_id: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self._kwargs = dict(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            acks="all",
            linger_ms=5,
            request_timeout_ms=15_000,
        )
        self._producer: AIOKafkaProducer | None = None

    def max_batch_size(self) -> int:
        return BATCH_BYTES

    async def start(self) -> None:
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(**self._kwargs, max_batch_size=self.max_batch_size())
        await producer.start()
        self._producer = producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await producer.stop()
            except KafkaError as exc:
                log.warning("%s producer stop: %r", self.what, exc)

    async def _send_each(
        self, items: list[T], record: Callable[[T], tuple[str, bytes | None, bytes | None, Headers]]
    ) -> tuple[list[T], list[T], BaseException | None]:
        """Send every item's record and wait for each acknowledgement: (the items
        acknowledged, the others in order, the first error)."""
        if self._producer is None:
            await self.start()
        assert self._producer is not None
        pending: list[tuple[T, asyncio.Future[Any] | None, BaseException | None]] = []
        for item in items:
            try:
                topic, value, key, headers = record(item)
                future = await self._producer.send(topic, value, key=key, headers=headers)
                pending.append((item, future, None))
            except KafkaError as exc:
                pending.append((item, None, exc))
        sent: list[T] = []
        unsent: list[T] = []
        first: BaseException | None = None
        for item, future, error in pending:
            if future is not None:
                try:
                    await future
                except KafkaError as exc:
                    error = exc
            if error is None:
                sent.append(item)
            else:
                unsent.append(item)
                first = first or error
        return sent, unsent, first


class OutputProducer(AcknowledgedProducer):
    """Publishes a sink's output records (its alerts) durably."""

    what = "output"

    def __init__(self, *, bootstrap_servers: str, client_id: str) -> None:
        super().__init__(bootstrap_servers=bootstrap_servers, client_id=f"{client_id}-out")

    async def publish(self, outputs: list[Output]) -> None:
        """Every output acknowledged, or NotAcknowledged holding the ones that were not."""
        if not outputs:
            return
        _, unsent, error = await self._send_each(
            outputs, lambda o: (o.topic, o.value, o.key, list(o.headers))
        )
        if unsent:
            raise NotAcknowledged(
                f"output topic: {len(unsent)} of {len(outputs)} not acknowledged: {error}", unsent
            )
