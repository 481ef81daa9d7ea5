"""Background publisher: the request path hands an encoded event to a bounded queue
(``offer``, never awaits); one background task batches events into Kafka, and a disk
spool holds them whenever Kafka cannot.

``await producer.send()`` is not fire-and-forget (it blocks for up to 40 s when the
broker is down), so only the background task ever talks to Kafka. Batches are built
per partition with ``create_batch``/``send_batch``: ~2 us of CPU an event here against
~110 us for one send per event.

Delivery (an event is in Kafka, in the spool, or counted as dropped with a reason):

- Broker up, spool empty: queue → batch → Kafka.
- A batch that fails or times out (broker gone, UnknownError after a restart) goes to
  the spool, and so does everything after it until the broker answers again; while the
  spool holds anything, new events are appended behind it, so replay keeps their order.
- Broker back: the spool is replayed oldest first; each acknowledged chunk advances
  the spool's cursor, then the spool is empty and the queue goes straight to Kafka.
- Queue full (the sender cannot keep up): the event goes to the spool from ``offer``
  itself (a memory append; the background task writes the buffer out every
  ``spool_sync_interval_s``). Spool full: dropped, counted as
  ``dropped{reason="spool_full"}``.
- A hung broker (up, but not answering: SIGSTOP, a stalled disk, a black-holed network)
  is noticed by the age of the batch in flight: unacknowledged after ``stall_s``, the
  broker is marked down (``broker_connected`` false, as ``/readyz`` reports), the batch
  is spooled and everything after it goes to the spool at once instead of waiting in
  memory for the send timeout. The stalled send is left to finish in the background (a
  "straggler", up to the send timeout); if the broker does acknowledge it after all, its
  records are skipped when the spool is replayed, so a short hang duplicates nothing.
  Probes run beside the publishing loop (which spools meanwhile), so a slow or hung
  probe never holds events in memory either.
- Broker unreachable: probes back off exponentially (``probe_interval_s`` doubling up
  to ``probe_max_interval_s``) and so does the log: one warning at the first failure
  (naming ``KAFKA_BOOTSTRAP_SERVERS`` if this process never reached Kafka, where a
  wrong address is the likely cause), then one after 2, 4, 8... failed attempts.
- ``stop()`` (SIGTERM): drain the queue to Kafka for up to ``drain_timeout_s``, spool
  what is left, fsync, release the spool.

Durable mode (``durable=True``, opt-in): ``offer`` appends every event to the spool
instead of the queue, and the request awaits :meth:`EventPublisher.durable` before it
answers: one task writes the spool buffer and fsyncs it for every request waiting at
that moment (group commit: concurrent requests share one fsync). The spool is then the
only queue: the background task replays it to Kafka. A SIGKILL of the process loses
nothing that was answered; a full spool raises :class:`SpoolFull` (the API answers 503).

The spool side of all this (appends, replay, fsync, group commit) is :mod:`api.backlog`;
this module batches, sends, probes and keeps stragglers.

Duplicates: a batch whose acknowledgement never arrived (timeout, cancellation at
shutdown) is spooled and replayed, so if the broker did write it, it arrives twice.
Consumers dedupe by event id; the fault tests count duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable
from typing import Any

from api.backlog import Backlog, PublisherStats, SpoolFull
from api.link import KafkaLink
from api.senders import Record
from api.spool import Spool

__all__ = ["EventPublisher", "PublisherStats", "SpoolFull"]

log = logging.getLogger(__name__)


class State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class EventPublisher:
    def __init__(
        self,
        *,
        bootstrap_servers: str,
        topic: str,
        spool: Spool | None = None,
        adopted: list[Spool] | None = None,
        queue_size: int = 100_000,
        batch_max_events: int = 2000,
        linger_ms: int = 50,
        compression: str | None = "zstd",
        acks: str | int = "all",
        enable_idempotence: bool = False,
        client_id: str = "inferstream-api",
        send_timeout_s: float = 10.0,
        probe_interval_s: float = 1.0,
        probe_max_interval_s: float = 10.0,
        spool_sync_interval_s: float = 0.2,
        on_delivered: Callable[[float], None] | None = None,
        partitioning: str = "sticky",
        client: str = "aiokafka",
        stall_s: float = 1.5,
        durable: bool = False,
    ) -> None:
        """``spool``: this process's own (open) spool; without one, events that cannot
        be delivered are counted as dropped (``no_spool``). ``adopted``: spools of dead
        processes to replay first. ``on_delivered(seconds)``: called once per acknowledged
        batch with the age of its oldest event (the delivery-latency histogram).
        ``partitioning`` and ``client`` ("aiokafka" or "confluent"): see
        :mod:`api.senders`. ``stall_s``: a batch (or a probe) unanswered this long means
        the broker is hung. ``durable``: see the module docstring (needs a spool)."""
        if durable and spool is None:
            raise ValueError("durable mode needs a spool")
        self.topic = topic
        self.stats = PublisherStats()
        self.spool = spool
        self._backlog = Backlog(spool, list(adopted or []), self.stats, sync_interval_s=spool_sync_interval_s)
        self._queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=queue_size)
        self._batch_max = batch_max_events
        self._linger_s = linger_ms / 1000.0
        self._stall_s = min(stall_s, send_timeout_s)
        self._durable = durable
        self._probe_interval_s = probe_interval_s
        self._on_delivered = on_delivered
        sender_kwargs: dict[str, Any] = dict(
            topic=topic,
            partitioning=partitioning,
            timeout_s=send_timeout_s,
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            acks=acks,
            enable_idempotence=enable_idempotence,
            compression_type=None if compression in (None, "", "none") else compression,
            linger_ms=linger_ms,
            request_timeout_ms=int(send_timeout_s * 1000),
            max_batch_size=1_048_576,
        )
        self._link = KafkaLink(
            client=client,
            sender_kwargs=sender_kwargs,
            bootstrap_servers=bootstrap_servers,
            send_timeout_s=send_timeout_s,
            stall_s=self._stall_s,
            probe_interval_s=probe_interval_s,
            probe_max_interval_s=max(probe_max_interval_s, probe_interval_s),
            stats=self.stats,
            backlog=self._backlog,
        )
        self._task: asyncio.Task[None] | None = None
        self._syncer: asyncio.Task[None] | None = None
        self._state = State.UNOPENED
        self._pending: list[Record] = []  # taken from the queue, not yet acknowledged or spooled

    # -- request path -------------------------------------------------------------
    def offer(self, key: bytes, value: bytes, topic: str | None = None) -> bool:
        """Hand one event over without waiting. False (and counted) if it was dropped."""
        topic = topic or self.topic
        if self._state is not State.OPEN:
            self.stats.dropped["closed"] += 1
            return False
        if self._durable:
            self._backlog.append_durable(topic, key, value)
            self.stats.enqueued += 1
            return True
        try:
            self._queue.put_nowait((topic, key, value, time.monotonic()))
        except asyncio.QueueFull:
            if not self._backlog.append(topic, key, value):
                return False
        self.stats.enqueued += 1
        return True

    async def durable(self) -> None:
        """Durable mode: return once every event offered so far is written to the spool
        and fsynced (one fsync for every request waiting at that moment). Otherwise a
        no-op."""
        if self._durable:
            await self._backlog.committed()

    @property
    def broker_connected(self) -> bool:
        """Whether Kafka answers (false while events go to the spool)."""
        return self._link.connected

    @broker_connected.setter
    def broker_connected(self, value: bool) -> None:  # for stand-ins without Kafka (tests, bench)
        self._link.connected = value

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize() + len(self._pending)

    @property
    def spool_bytes(self) -> int:
        return self._backlog.size_bytes

    @property
    def spool_corrupt(self) -> int:
        return self._backlog.corrupt

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        """Start the background task. Never waits for the broker: an unreachable broker
        means spooling, not a failed start."""
        if self._state is not State.UNOPENED:
            return
        # construct the client now: a bad setting fails start-up, not the background task
        self._link.open()
        self._state = State.OPEN
        self._task = asyncio.create_task(self._run(), name="event-publisher")
        self._task.add_done_callback(self._on_task_done)
        if self.spool is not None:
            loop = self._backlog.commit_loop() if self._durable else self._backlog.sync_loop()
            self._syncer = asyncio.create_task(loop, name="spool-sync")

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.critical("event publisher crashed; events now go to the spool", exc_info=task.exception())
            self._task = None

    async def stop(self, drain_timeout_s: float = 10.0) -> None:
        """Stop accepting, deliver what is queued or spooled (up to the timeout), spool the rest,
        fsync, close. Idempotent."""
        if self._state is State.CLOSED:
            return
        self._state = State.CLOSED
        if self._task is not None:
            await self._drain(time.monotonic() + drain_timeout_s)
        link = self._link
        await _cancel(self._task, link.probe_task, *link.stragglers, self._syncer)
        # whatever is still here never got an acknowledgement: keep it for the next start
        leftover = self._pending + self._drain_queue()
        self._pending = []
        self._backlog.append_all(leftover)
        if leftover:
            log.warning("publisher stopped with %d undelivered events; spooled", len(leftover))
        self._backlog.close()
        await self._link.drop_sender()

    async def _drain(self, deadline: float) -> None:
        """Let the background task deliver until nothing is left, or the deadline."""
        assert self._task is not None
        # polls conditions and a deadline
        while self._undelivered() and time.monotonic() < deadline and not self._task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    def _undelivered(self) -> bool:
        # the spool too, while the broker answers or a probe may find it: events spooled
        # while the first probe ran (or, in durable mode, all of them) are delivered now
        reachable = self._link.connected or self._link.probe_task is not None
        return bool(self.queue_depth) or reachable and self._backlog.holding

    # -- background -------------------------------------------------------------------
    def _drain_queue(self) -> list[Record]:
        out: list[Record] = []
        while True:
            try:
                out.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                return out

    def _spool_pending(self) -> None:
        self._backlog.append_all(self._pending)
        self._pending = []

    async def _take(self, wait_s: float | None) -> None:
        """Fill ``_pending`` up to a batch: wait (up to ``wait_s``) for one event, then
        linger for more."""
        if not self._pending:
            try:
                self._pending.append(await asyncio.wait_for(self._queue.get(), wait_s))
            except TimeoutError:
                return
        deadline = time.monotonic() + self._linger_s
        while len(self._pending) < self._batch_max:
            try:
                self._pending.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    self._pending.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break

    async def _run(self) -> None:
        while True:
            if not self._link.connected:
                self._link.maybe_probe()
            up = self._link.up
            if self._backlog.holding and up:
                # keep order: new events queue up behind the spool until it is replayed
                self._pending += self._drain_queue()
                self._spool_pending()
                await self._backlog.replay_chunk(self._link.deliver, self._batch_max * 4)
            elif self._durable:
                await self._wait_for_spool(None if up else self._probe_interval_s)
            else:
                await self._take(None if up else min(self._probe_interval_s, self._stall_s))
                await self._publish_pending(up)

    async def _publish_pending(self, up: bool) -> None:
        """Send the batch taken from the queue, or spool it (the broker is down, or the
        spool holds older events)."""
        if not self._pending:
            return
        if not up or self._backlog.own_holding:
            self._spool_pending()
            return
        failed = await self._link.deliver(self._pending)
        delivered = len(self._pending) - len(failed)
        self.stats.published += delivered
        if delivered and self._on_delivered is not None:
            self._on_delivered(time.monotonic() - self._pending[0][3])
        self._backlog.append_all(failed)
        self._pending = []

    async def _wait_for_spool(self, wait_s: float | None) -> None:
        """Durable mode: wait for the next group commit, then linger to gather a chunk."""
        ready = self._backlog.ready
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ready.wait(), wait_s)
        if ready.is_set():
            ready.clear()
            await asyncio.sleep(self._linger_s)


async def _cancel(*tasks: asyncio.Task[None] | None) -> None:
    """Cancel the tasks, one after the other, and wait for each to end."""
    for task in tasks:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
