"""The publisher's connection to Kafka: the sender it opens, the probes that find the
broker again (with backoff, logged with backoff too), sends watched for a stall, and
the stalled sends left to finish in the background ("stragglers"). The rules are in
:mod:`api.publisher`'s docstring."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from api.backlog import Backlog, PublisherStats
from api.senders import Record, Sender, SenderUnavailable, make_sender

log = logging.getLogger(__name__)


class KafkaLink:
    def __init__(
        self,
        *,
        client: str,
        sender_kwargs: dict[str, Any],
        bootstrap_servers: str,
        send_timeout_s: float,
        stall_s: float,
        probe_interval_s: float,
        probe_max_interval_s: float,
        stats: PublisherStats,
        backlog: Backlog,
    ) -> None:
        """``client`` and ``sender_kwargs``: what :func:`api.senders.make_sender` takes.
        ``stats`` and ``backlog``: the publisher's, for the counts and for what a
        straggler delivered after all."""
        self.connected = False
        self.stats = stats
        self._backlog = backlog
        self._client = client
        self._sender_kwargs = sender_kwargs
        self._bootstrap_servers = bootstrap_servers
        self._send_timeout_s = send_timeout_s
        self._stall_s = stall_s
        self._probe_interval_s = probe_interval_s
        self._probe_max_interval_s = probe_max_interval_s
        self._sender: Sender | None = None
        self._next_probe = 0.0
        self.probe_task: asyncio.Task[None] | None = None
        self._probe_failures = 0  # in a row; the next probe waits 2**n intervals (capped)
        self._down_since = 0.0
        self._ever_connected = False
        self.stragglers: set[asyncio.Task[None]] = set()

    def open(self) -> None:
        """Construct the client (not connected yet): a bad setting fails here."""
        self._sender = make_sender(self._client, **self._sender_kwargs)

    @property
    def up(self) -> bool:
        """Connected, and no straggler pending: a straggler may yet be acknowledged, and
        replay waits until it has settled so that what it delivered is known and skipped."""
        return self.connected and not self.stragglers

    def maybe_probe(self) -> None:
        if self.probe_task is None and time.monotonic() >= self._next_probe:
            self.probe_task = asyncio.create_task(self._probe(), name="kafka-probe")

    async def _probe(self) -> None:
        """Open a client and fetch metadata; on failure, try again after a delay that
        doubles with each failure in a row (capped). Runs beside the publishing loop,
        which spools meanwhile."""
        try:
            # at most one probe an interval even when each one succeeds (a broker whose
            # metadata answers but whose sends fail)
            self._next_probe = time.monotonic() + self._probe_interval_s
            sender = self._sender or make_sender(self._client, **self._sender_kwargs)
            self._sender = sender
            try:
                await sender.open()
            except SenderUnavailable as exc:
                self._probe_failed(exc)
                await self.drop_sender()
                return
            if self._probe_failures:
                log.info(
                    "Kafka at %s reachable again after %d failed attempts in %.0fs",
                    self._bootstrap_servers,
                    self._probe_failures,
                    time.monotonic() - self._down_since,
                )
            else:
                log.info("Kafka reachable")
            self._probe_failures = 0
            self._ever_connected = True
            self.connected = True
        finally:
            self.probe_task = None

    def _probe_failed(self, exc: SenderUnavailable) -> None:
        now = time.monotonic()
        if not self._probe_failures:
            self._down_since = now
        self._probe_failures = n = self._probe_failures + 1
        delay = min(self._probe_interval_s * 2 ** (n - 1), self._probe_max_interval_s)
        self._next_probe = now + delay
        if n == 1:
            hint = "" if self._ever_connected else " (is KAFKA_BOOTSTRAP_SERVERS right?)"
            log.warning(
                "Kafka at %s unreachable%s: %s; events go to the spool, retrying with backoff "
                "(%.1fs doubling up to %.0fs)",
                self._bootstrap_servers,
                hint,
                exc,
                delay,
                self._probe_max_interval_s,
            )
        elif n & (n - 1) == 0:  # the log backs off too: after 2, 4, 8... failures
            log.warning(
                "Kafka at %s still unreachable after %d attempts in %.0fs: %s; next try in %.1fs",
                self._bootstrap_servers,
                n,
                now - self._down_since,
                exc,
                delay,
            )

    async def drop_sender(self) -> None:
        sender, self._sender = self._sender, None
        self.connected = False
        if sender is not None:
            await sender.close()

    async def deliver(self, records: list[Record]) -> list[Record]:
        """Send; returns the records whose batches were not acknowledged. Any failure
        marks the broker down (a new client is opened by the next probe). A send not
        answered within ``stall_s`` counts as failed at once and finishes as a
        straggler."""
        sender = self._sender
        assert sender is not None
        send = asyncio.ensure_future(sender.send(records))
        done, _ = await asyncio.wait({send}, timeout=self._stall_s)
        if not done:
            self.stats.stalled_sends += 1
            log.warning(
                "%d events unacknowledged after %.1fs: broker hung; spooling", len(records), self._stall_s
            )
            self._sender = None
            self.connected = False
            task = asyncio.create_task(self._straggle(sender, send, records), name="kafka-straggler")
            self.stragglers.add(task)
            task.add_done_callback(self.stragglers.discard)
            return records
        try:
            failed, error = send.result()
        except Exception as exc:  # whatever the client raised, the batch goes to the spool
            failed, error = records, exc
        if failed:
            self.stats.failed_sends += 1
            log.warning("%d events not acknowledged (%r); spooling", len(failed), error)
            await self.drop_sender()
        return failed

    async def _straggle(
        self,
        sender: Sender,
        send: asyncio.Future[tuple[list[Record], BaseException | None]],
        records: list[Record],
    ) -> None:
        """Let a stalled send finish (up to the send timeout), remember what it got
        acknowledged after all, close its client."""
        try:
            try:
                failed, _ = await asyncio.wait_for(send, self._send_timeout_s + 2 - self._stall_s)
            except Exception:  # timed out or failed: the spooled copies are replayed
                return
            late = self._backlog.landed_late(records, failed)
            if late:
                log.info(
                    "%d stalled events were acknowledged after all; their spooled copies are skipped", late
                )
        finally:
            await sender.close()
