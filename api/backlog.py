"""The publisher's backlog on disk: this process's spool and the spools of dead
processes it adopted, where events wait whenever Kafka cannot take them.

It keeps the spool side of :mod:`api.publisher`'s delivery rules: appends (counted, or
dropped with a reason), replay oldest first (adopted spools before this process's own),
skipping the records a straggling send got acknowledged after all, the periodic write
and fsync, and durable mode's group commit (one fsync for every request waiting)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from api.senders import Record
from api.spool import Spool, SpoolRecord
from common.errors import InferstreamError

log = logging.getLogger(__name__)

Deliver = Callable[[list[Record]], Awaitable[list[Record]]]  # returns the records not acknowledged


class SpoolFull(InferstreamError):
    """Durable mode: the spool cannot take the event, so it cannot be acknowledged."""


@dataclass
class PublisherStats:
    enqueued: int = 0
    published: int = 0
    spooled: int = 0
    replayed: int = 0
    failed_sends: int = 0
    stalled_sends: int = 0  # batches unacknowledged after stall_s (broker hung)
    dropped: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class Backlog:
    def __init__(
        self, spool: Spool | None, adopted: list[Spool], stats: PublisherStats, *, sync_interval_s: float
    ) -> None:
        """``spool``: this process's own (open) spool; without one, events that cannot
        be delivered are counted as dropped (``no_spool``). ``adopted``: spools of dead
        processes, replayed first. ``stats``: the publisher's, counted into."""
        self.spool = spool
        self.adopted = list(adopted)
        self.stats = stats
        self._sync_interval_s = sync_interval_s
        # (topic, key, hash(value)) of spooled records a straggler got acknowledged
        self._landed_late: Counter[tuple[str, bytes, int]] = Counter()
        # durable mode: group commit of the spool
        self._appended = 0  # appends made by append_durable
        self._synced = 0  # of which written and fsynced
        self._commit_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._commit_wanted = asyncio.Event()
        self.ready = asyncio.Event()  # set after each group commit: there is something to replay

    def _all(self) -> list[Spool]:
        return [s for s in (self.spool, *self.adopted) if s is not None]

    @property
    def size_bytes(self) -> int:
        return sum(s.size_bytes for s in self._all())

    @property
    def corrupt(self) -> int:
        return sum(s.stats.corrupt for s in self._all())

    @property
    def holding(self) -> bool:
        """Whether any spool holds events not yet replayed."""
        return any(not s.empty for s in self._all())

    @property
    def own_holding(self) -> bool:
        return self.spool is not None and not self.spool.empty

    # -- appends ----------------------------------------------------------------
    def append(self, topic: str, key: bytes, value: bytes) -> bool:
        """Keep one event for later; False (and counted as dropped) if it cannot be."""
        if self.spool is None:
            self.stats.dropped["no_spool"] += 1
            return False
        if not self.spool.append(topic, key, value):
            self.stats.dropped["spool_full"] += 1
            return False
        self.stats.spooled += 1
        return True

    def append_all(self, records: list[Record]) -> None:
        for topic, key, value, _ in records:
            self.append(topic, key, value)

    def append_durable(self, topic: str, key: bytes, value: bytes) -> None:
        """Durable mode's offer: into the spool, to be fsynced before the answer."""
        assert self.spool is not None
        if not self.spool.append(topic, key, value):
            self.stats.dropped["spool_full"] += 1
            raise SpoolFull(f"the event spool is full ({self.spool.max_bytes} bytes)")
        self._appended += 1

    async def committed(self) -> None:
        """Return once every durable append so far is written and fsynced (one fsync for
        every caller waiting at that moment)."""
        if self._synced >= self._appended:
            return
        future = asyncio.get_running_loop().create_future()
        self._commit_waiters.append((self._appended, future))
        self._commit_wanted.set()
        await future

    # -- replay -------------------------------------------------------------------
    async def replay_chunk(self, deliver: Deliver, max_records: int) -> None:
        """Deliver the oldest chunk of the oldest spool holding any; a chunk not wholly
        acknowledged is read again next time."""
        source = next(s for s in (*self.adopted, self.spool) if s is not None and not s.empty)
        records, token = source.read(max_records)
        if not records:
            self._release_if_done(source)
            return
        if self._landed_late:
            records = self._skip_landed(records)
        if records:
            failed = await deliver([(t, k, v, 0.0) for t, k, v in records])
            if failed:
                return  # not committed: the whole chunk is read again after the next probe
        source.commit(token)
        self.stats.replayed += len(records)
        self.stats.published += len(records)
        source.stats.replayed += len(records)
        self._release_if_done(source)

    def _release_if_done(self, source: Spool) -> None:
        if source is not self.spool and source.empty:
            source.close()
            self.adopted.remove(source)

    def landed_late(self, sent: list[Record], failed: list[Record]) -> int:
        """Note the records of a stalled (and spooled) send that were acknowledged after
        all: their spooled copies are skipped at replay. Returns how many."""
        not_acked = Counter((t, k, hash(v)) for t, k, v, _ in failed)
        late = 0
        for t, k, v, _ in sent:
            mark = (t, k, hash(v))
            if not_acked[mark] > 0:
                not_acked[mark] -= 1
            else:
                self._landed_late[mark] += 1
                late += 1
        return late

    def _skip_landed(self, records: list[SpoolRecord]) -> list[SpoolRecord]:
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

    # -- writing out ----------------------------------------------------------------
    async def sync_loop(self) -> None:
        """Write the spool buffer and fsync it every interval: this bounds what a crash
        of the process (or the machine) can lose. fsync runs in a worker thread."""
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

    async def commit_loop(self) -> None:
        """Durable mode's group commit: whoever is waiting when an fsync starts is
        answered by it; callers arriving meanwhile wait for the next one. Also runs
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
            self.ready.set()

    def close(self) -> None:
        """Write, fsync and close every spool; answer whoever waits for a commit."""
        for s in self._all():
            s.close()
        for _, future in self._commit_waiters:  # close() wrote and fsynced their events
            if not future.done():
                future.set_result(None)
        self._commit_waiters = []
