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

Duplicates: a batch whose acknowledgement never arrived (timeout, cancellation at
shutdown) is spooled and replayed, so if the broker did write it, it arrives twice.
Consumers dedupe by event id; the fault tests count duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from api.senders import Record, Sender, SenderUnavailable, make_sender
from api.spool import Spool

log = logging.getLogger(__name__)


class SpoolFull(Exception):
    """Durable mode: the spool cannot take the event, so it cannot be acknowledged."""


class State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


@dataclass
class PublisherStats:
    enqueued: int = 0
    published: int = 0
    spooled: int = 0
    replayed: int = 0
    failed_sends: int = 0
    stalled_sends: int = 0  # batches unacknowledged after stall_s (broker hung)
    dropped: dict[str, int] = field(default_factory=lambda: defaultdict(int))


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
        self.broker_connected = False
        self.spool = spool
        self._adopted = list(adopted or [])
        self._queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=queue_size)
        self._batch_max = batch_max_events
        self._linger_s = linger_ms / 1000.0
        self._send_timeout_s = send_timeout_s
        self._stall_s = min(stall_s, send_timeout_s)
        self._durable = durable
        self._probe_interval_s = probe_interval_s
        self._probe_max_interval_s = max(probe_max_interval_s, probe_interval_s)
        self._bootstrap_servers = bootstrap_servers
        self._sync_interval_s = spool_sync_interval_s
        self._on_delivered = on_delivered
        self._client = client
        self._sender_kwargs: dict[str, Any] = dict(
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
        self._sender: Sender | None = None
        self._task: asyncio.Task[None] | None = None
        self._syncer: asyncio.Task[None] | None = None
        self._state = State.UNOPENED
        self._pending: list[Record] = []  # taken from the queue, not yet acknowledged or spooled
        self._next_probe = 0.0
        self._probe_task: asyncio.Task[None] | None = None
        self._probe_failures = 0  # in a row; the next probe waits 2**n intervals (capped)
        self._down_since = 0.0
        self._ever_connected = False
        self._stragglers: set[asyncio.Task[None]] = set()
        # (topic, key, hash(value)) of spooled records a straggler got acknowledged
        self._landed_late: Counter[tuple[str, bytes, int]] = Counter()
        # durable mode: group commit of the spool
        self._appended = 0  # spool appends made by offer (durable mode)
        self._synced = 0  # of which written and fsynced
        self._commit_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._commit_wanted = asyncio.Event()
        self._spool_ready = asyncio.Event()

    # -- request path -------------------------------------------------------------
    def offer(self, key: bytes, value: bytes, topic: str | None = None) -> bool:
        """Hand one event over without waiting. False (and counted) if it was dropped."""
        topic = topic or self.topic
        if self._state is not State.OPEN:
            self.stats.dropped["closed"] += 1
            return False
        if self._durable:
            assert self.spool is not None
            if not self.spool.append(topic, key, value):
                self.stats.dropped["spool_full"] += 1
                raise SpoolFull(f"the event spool is full ({self.spool.max_bytes} bytes)")
            self._appended += 1
            self.stats.enqueued += 1
            return True
        try:
            self._queue.put_nowait((topic, key, value, time.monotonic()))
        except asyncio.QueueFull:
            if not self._spool_append(topic, key, value, "queue_full"):
                return False
        self.stats.enqueued += 1
        return True

    async def durable(self) -> None:
        """Durable mode: return once every event offered so far is written to the spool
        and fsynced (one fsync for every request waiting at that moment). Otherwise a
        no-op."""
        if not self._durable or self._synced >= self._appended:
            return
        future = asyncio.get_running_loop().create_future()
        self._commit_waiters.append((self._appended, future))
        self._commit_wanted.set()
        await future

    def count_dropped(self, reason: str, n: int = 1) -> None:
        """For events the caller decides not to offer (sampling); counted here so
        /metrics shows one dropped{reason} family."""
        self.stats.dropped[reason] += n

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize() + len(self._pending)

    @property
    def spool_bytes(self) -> int:
        return sum(s.size_bytes for s in (self.spool, *self._adopted) if s is not None)

    @property
    def spool_corrupt(self) -> int:
        return sum(s.stats.corrupt for s in (self.spool, *self._adopted) if s is not None)

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        """Start the background task. Never waits for the broker: an unreachable broker
        means spooling, not a failed start."""
        if self._state is not State.UNOPENED:
            return
        # construct the client now: a bad setting fails start-up, not the background task
        self._sender = make_sender(self._client, **self._sender_kwargs)
        self._state = State.OPEN
        self._task = asyncio.create_task(self._run(), name="event-publisher")
        self._task.add_done_callback(self._on_task_done)
        if self.spool is not None:
            loop = self._commit_loop() if self._durable else self._sync_loop()
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
            deadline = time.monotonic() + drain_timeout_s
            # polls conditions and a deadline
            while self._undelivered() and time.monotonic() < deadline and not self._task.done():  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in (self._probe_task, *self._stragglers):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._syncer is not None:
            self._syncer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._syncer
        # whatever is still here never got an acknowledgement: keep it for the next start
        leftover = self._pending + self._drain_queue()
        self._pending = []
        for topic, key, value, _ in leftover:
            self._spool_append(topic, key, value, "shutdown")
        if leftover:
            log.warning("publisher stopped with %d undelivered events; spooled", len(leftover))
        for s in (self.spool, *self._adopted):
            if s is not None:
                s.close()
        for _, future in self._commit_waiters:  # close() wrote and fsynced their events
            if not future.done():
                future.set_result(None)
        self._commit_waiters = []
        await self._drop_sender()

    def _undelivered(self) -> bool:
        # the spool too, while the broker answers or a probe may find it: events spooled
        # while the first probe ran (or, in durable mode, all of them) are delivered now
        reachable = self.broker_connected or self._probe_task is not None
        return bool(self.queue_depth) or reachable and self._spooling()

    # -- background -------------------------------------------------------------------
    def _drain_queue(self) -> list[Record]:
        out: list[Record] = []
        while True:
            try:
                out.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                return out

    def _spool_append(self, topic: str, key: bytes, value: bytes, why: str) -> bool:
        if self.spool is None:
            self.stats.dropped["no_spool"] += 1
            return False
        if not self.spool.append(topic, key, value):
            self.stats.dropped["spool_full"] += 1
            return False
        self.stats.spooled += 1
        return True

    def _spooling(self) -> bool:
        return any(not s.empty for s in (self.spool, *self._adopted) if s is not None)

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
            if not self.broker_connected:
                self._maybe_probe()
            # a straggler may yet be acknowledged: replay once it has settled, so that
            # what it delivered is known and skipped
            up = self.broker_connected and not self._stragglers
            if self._spooling() and up:
                # keep order: new events queue up behind the spool until it is replayed
                self._pending += self._drain_queue()
                for topic, key, value, _ in self._pending:
                    self._spool_append(topic, key, value, "backlog")
                self._pending = []
                await self._replay_chunk()
                continue
            if self._durable:
                await self._wait_for_spool(None if up else self._probe_interval_s)
                continue
            await self._take(None if up else min(self._probe_interval_s, self._stall_s))
            if not self._pending:
                continue
            if not up or self.spool is not None and not self.spool.empty:
                for topic, key, value, _ in self._pending:
                    self._spool_append(topic, key, value, "broker_down")
                self._pending = []
                continue
            failed = await self._deliver(self._pending)
            delivered = len(self._pending) - len(failed)
            self.stats.published += delivered
            if delivered and self._on_delivered is not None:
                self._on_delivered(time.monotonic() - self._pending[0][3])
            for topic, key, value, _ in failed:
                self._spool_append(topic, key, value, "send_failed")
            self._pending = []

    async def _wait_for_spool(self, wait_s: float | None) -> None:
        """Durable mode: wait for the next group commit, then linger to gather a chunk."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._spool_ready.wait(), wait_s)
        if self._spool_ready.is_set():
            self._spool_ready.clear()
            await asyncio.sleep(self._linger_s)

    async def _replay_chunk(self) -> None:
        source = next(s for s in (*self._adopted, self.spool) if s is not None and not s.empty)
        records, token = source.read(self._batch_max * 4)
        if not records:
            if source is not self.spool and source.empty:
                source.close()
                self._adopted.remove(source)
            return
        if self._landed_late:
            records = self._skip_landed(records)
        if records:
            failed = await self._deliver([(t, k, v, 0.0) for t, k, v in records])
            if failed:
                return  # not committed: the whole chunk is read again after the next probe
        source.commit(token)
        self.stats.replayed += len(records)
        self.stats.published += len(records)
        source.stats.replayed += len(records)
        if source is not self.spool and source.empty:
            source.close()
            self._adopted.remove(source)

    def _skip_landed(self, records: list[tuple[str, bytes, bytes]]) -> list[tuple[str, bytes, bytes]]:
        """Drop the spooled copies of records a straggler got acknowledged after all."""
        out = []
        for rec in records:
            mark = (rec[0], rec[1], hash(rec[2]))
            if self._landed_late[mark] > 0:
                self._landed_late[mark] -= 1
                if not self._landed_late[mark]:
                    del self._landed_late[mark]
                continue
            out.append(rec)
        return out

    def _maybe_probe(self) -> None:
        if self._probe_task is None and time.monotonic() >= self._next_probe:
            self._probe_task = asyncio.create_task(self._probe(), name="kafka-probe")

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
                await self._drop_sender()
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
            self.broker_connected = True
        finally:
            self._probe_task = None

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

    async def _drop_sender(self) -> None:
        sender, self._sender = self._sender, None
        self.broker_connected = False
        if sender is not None:
            await sender.close()

    async def _deliver(self, records: list[Record]) -> list[Record]:
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
            self.broker_connected = False
            task = asyncio.create_task(self._straggle(sender, send, records), name="kafka-straggler")
            self._stragglers.add(task)
            task.add_done_callback(self._stragglers.discard)
            return records
        try:
            failed, error = send.result()
        except Exception as exc:  # noqa: BLE001 - whatever the client raised, the batch goes to the spool
            failed, error = records, exc
        if failed:
            self.stats.failed_sends += 1
            log.warning("%d events not acknowledged (%r); spooling", len(failed), error)
            await self._drop_sender()
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
            except Exception:  # noqa: BLE001 - timed out or failed: the spooled copies are replayed
                return
            not_acked = Counter((t, k, hash(v)) for t, k, v, _ in failed)
            late = 0
            for t, k, v, _ in records:
                mark = (t, k, hash(v))
                if not_acked[mark] > 0:
                    not_acked[mark] -= 1
                else:
                    self._landed_late[mark] += 1
                    late += 1
            if late:
                log.info(
                    "%d stalled events were acknowledged after all; their spooled copies are skipped", late
                )
        finally:
            await sender.close()

    async def _sync_loop(self) -> None:
        """Write the spool buffer and fsync it every interval: this bounds what a crash
        of the process (or the machine) can lose. fsync runs in a worker thread."""
        assert self.spool is not None
        while True:
            await asyncio.sleep(self._sync_interval_s)
            await self._write_and_sync()

    async def _write_and_sync(self) -> None:
        assert self.spool is not None
        self.spool.flush()
        for fd in self.spool.take_unsynced():
            try:
                await asyncio.to_thread(os.fsync, fd)
            finally:
                os.close(fd)

    async def _commit_loop(self) -> None:
        """Durable mode's group commit: whoever is waiting when an fsync starts is
        answered by it; requests arriving meanwhile wait for the next one. Also runs
        every sync interval, for the spool appends no request waits on."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._commit_wanted.wait(), self._sync_interval_s)
            self._commit_wanted.clear()
            upto = self._appended
            waiters = self._commit_waiters
            self._commit_waiters = []
            try:
                await self._write_and_sync()
            except OSError as exc:
                log.error("spool write or fsync failed: %r", exc)
                for _, future in waiters:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self._synced = upto
            for _, future in waiters:
                if not future.done():
                    future.set_result(None)
            self._spool_ready.set()
