"""One consumer runner for every consumer group; a sink only makes batches durable.

Loop: ``getmany`` → ``sink.add`` → when the batch has ``max_batch_rows`` records,
``max_batch_bytes`` bytes or is ``max_batch_age_s`` old: ``sink.flush`` (durable) →
publish the batch's dead letters (acknowledged) → commit the offsets. A rebalance
flushes and commits before partitions are revoked. SIGTERM flips ``running``; the loop
ends with one final flush and commit. Auto-commit is off; nothing is committed that
the sink has not made durable. A failing flush is retried with backoff, forever, while
nothing is committed (the sink keeps the batch; consumption pauses meanwhile); dead
letters that stay unacknowledged for ``dlq_retry_timeout_s`` end the run with
DeadLettersStuck instead (see ``_flush_with_backoff``). ``health()`` says "stuck" when
nothing was committed for ``stuck_after_s`` while records wait.

With a ``transactions`` committer (consumers/transactions.py) the sink's outputs, its
dead letters and the offsets commit in one Kafka transaction instead: that replaces
both the acknowledged publish and the consumer's own commit (exactly once).

A sink with a ``history_records`` attribute above 0 is shown, on assignment, up to that
many records of each partition before its committed offset (``sink.warm``), to rebuild
state a previous owner had; they are never added, scored as new, or committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from common.errors import DependencyUnavailable
from common.lakewrite import incarnation_of
from consumers.deadletters import DeadLetter, DeadLetterProducer
from consumers.errors import DeadLettersStuck, NotAcknowledged
from consumers.lifecheck import Life, LifeCheck
from consumers.metrics import ConsumerMetrics
from consumers.transactions import TransactionalCommitter, TransactionFenced

log = logging.getLogger(__name__)


class Sink(Protocol):
    def assigned(
        self, partitions: dict[TopicPartition, tuple[int | None, str]]
    ) -> dict[TopicPartition, int] | None:
        """Partitions now owned, with their committed offset and commit metadata.
        A sink that keeps its own progress (the lake table) returns where to resume
        each partition; the runner seeks there (the group's commit is then a hint)."""

    def add(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None: ...

    def flush(self) -> dict[TopicPartition, tuple[int, str]]:
        """Make everything added durable, then clear it. On failure raise OSError or
        SinkUnavailable and keep the batch (the runner retries with backoff and commits
        nothing meanwhile). Returns, per partition, the next offset to commit and the
        commit metadata. Runs in a worker thread: the event loop keeps heartbeating."""

    def take_dead_letters(self) -> list[DeadLetter]:
        """Poison records found since the last call (their offsets are in the flush's
        commits: the runner publishes them durably before committing)."""

    def revoked(self, partitions: Iterable[TopicPartition]) -> None:
        """Forget pending work of partitions no longer owned."""

    @property
    def pending_rows(self) -> int:
        """Rows added and not yet flushed (the runner flushes when there are any)."""

    # Optional: ``rewind(partitions) -> {tp: offset}``, called right after ``assigned``
    # with the same argument: the runner seeks those partitions there (the drift monitor
    # reads its window back from before the committed offset).


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: ConsumerRunner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        if revoked:
            await self.runner.revoke(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        runner = self.runner
        if runner.transactions is not None:
            # before reading the committed offsets: this aborts a predecessor's open
            # transaction, whose offsets would otherwise be committed after our read
            try:
                await runner.assign_transactions()
            except TransactionFenced as exc:
                log.error("%s", exc)
                runner.stop()  # the loop's last flush raises it again: the process exits
                return
        await runner.assign_partitions(assigned)


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
        max_batch_bytes: int = 64 * 1024 * 1024,
        dlq: DeadLetterProducer | None = None,
        metrics: ConsumerMetrics | None = None,
        max_poll_records: int = 10_000,
        dlq_retry_timeout_s: float = 120.0,
        stuck_after_s: float = 60.0,
        transactions: TransactionalCommitter | None = None,
    ) -> None:
        self.sink = sink
        self.transactions = transactions
        self.warm_until: dict[TopicPartition, int] = {}  # history shown to the sink, not added
        # fault injection only: widens the window between "durable" and "committed"
        # so that crash tests can land in it (a real crash there is rare but possible)
        self.pause_before_commit_s = pause_before_commit_s
        self.topics = topics
        self.group_id = group_id
        self.max_batch_rows = max_batch_rows
        self.max_batch_age_s = max_batch_age_s
        self.poll_timeout_ms = poll_timeout_ms
        self.running = True
        self.max_batch_bytes = max_batch_bytes
        self.max_poll_records = min(max_poll_records, max_batch_rows)
        self.dlq = dlq
        self.dlq_retry_timeout_s = dlq_retry_timeout_s
        self.stuck_after_s = stuck_after_s
        self.metrics = metrics or ConsumerMetrics(group_id)
        self.records = 0
        self.batches = 0
        self.dead_letters = 0
        self.lock = asyncio.Lock()
        self._oldest: float | None = None
        self._pending_records = 0
        self._pending_bytes = 0
        self._to_commit: dict[TopicPartition, tuple[int, str]] = {}
        self._dead: list[DeadLetter] = []
        self._outputs: list[Any] = []
        self._position: dict[TopicPartition, int] = {}
        self.ready: set[TopicPartition] = set()  # assigned and known to the sink
        # per partition, a fetched record to read back (see consumers.lifecheck), and the
        # newest one fetched: it becomes the anchor once the anchor's log is confirmed
        self.life = LifeCheck(bootstrap_servers)
        self._anchor: dict[TopicPartition, ConsumerRecord[bytes, bytes]] = {}
        self._newest: dict[TopicPartition, ConsumerRecord[bytes, bytes]] = {}
        self._suspect: set[TopicPartition] = set()  # to check at the next flush
        self._life_checked_at = 0.0
        # health: what this runner last committed, and when it last made progress
        self.committed_offsets: dict[TopicPartition, int | None] = {}
        self._progress_at = time.monotonic()
        self.stuck = False
        self.lag_behind_commits: int | None = None
        # a sink whose flush() may run while add() is called keeps the loop fetching
        self.pipelined = bool(getattr(sink, "pipelined", False))
        self._flush_task: asyncio.Task[None] | None = None
        self._flush_requested = False
        self._lag_at = 0.0
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
        # A partition with a commit has records: its incarnation must come from its
        # earliest one (guessing from the first record consumed would name files anew
        # and leave the previous owner's uncommitted files in place: duplicates).
        missing = [tp for tp, (off, inc) in out.items() if off is not None and not inc]
        deadline = time.monotonic() + 60
        while missing:
            if time.monotonic() > deadline:
                raise DependencyUnavailable(f"could not read the earliest record of {missing}")
            log.warning("earliest record of %s not fetched yet; retrying", missing)
            earliest = await self._earliest_incarnations(missing)
            for tp in missing:
                out[tp] = (out[tp][0], earliest.get(tp, ""))
            missing = [tp for tp in missing if not out[tp][1]]
        return out

    async def assign_partitions(self, assigned: list[TopicPartition]) -> None:
        """Partitions now owned: their committed offsets and incarnation go to the sink,
        which may answer where to resume (the runner seeks there)."""
        committed = await self.committed(assigned)
        async with self.lock:
            await self._assign_locked(assigned, committed)

    async def _assign_locked(
        self, assigned: list[TopicPartition], committed: dict[TopicPartition, tuple[int | None, str]]
    ) -> dict[TopicPartition, int]:
        for tp in assigned:
            self._anchor.pop(tp, None)
            self._newest.pop(tp, None)
        # in a thread: a sink may read its own store (the lake table) to answer
        resume = await asyncio.to_thread(self.sink.assigned, committed) or {}
        for tp, offset in resume.items():
            self.consumer.seek(tp, offset)
        rewind = getattr(self.sink, "rewind", None)
        if rewind is not None:  # e.g. the drift monitor rebuilds its window from the topic
            for tp, offset in rewind(committed).items():
                self.consumer.seek(tp, offset)
        self.ready.update(assigned)
        self.committed_offsets.update({tp: off for tp, (off, _) in committed.items()})
        history = int(getattr(self.sink, "history_records", 0))
        for tp in assigned:
            committed_offset = committed[tp][0]
            if history and committed_offset:
                self.warm_until[tp] = committed_offset
                self.consumer.seek(tp, max(0, committed_offset - history))
        log.info(
            "assigned group=%s partitions=%s committed=%s",
            self.group_id,
            sorted(tp.partition for tp in assigned),
            {tp.partition: committed[tp][0] for tp in sorted(assigned)},
        )
        return resume

    async def _restart_partitions(self, changed: set[TopicPartition]) -> None:
        """Partitions whose log was replaced under us (see ``consumers.lifecheck``): the
        sink forgets their pending work, and they are assigned again as a new life,
        read from where the sink's own store says or from the new log's beginning. The
        group's committed offset is not used: it is gone with the old log, or it
        belongs to it. Called with ``self.lock`` held."""
        parts = sorted(changed)
        log.warning(
            "the log of %s changed under group=%s (broker restarted without its data, or topic "
            "re-created): no offset of the old log is committed; reading the new one from its start",
            [f"{tp.topic}/{tp.partition}" for tp in parts],
            self.group_id,
        )
        self.metrics.log_changes.inc(len(parts))
        self.sink.revoked(parts)
        self._forget(changed)
        self.life.forget(changed)
        self._suspect -= changed
        committed = await self.committed(parts)
        fresh: dict[TopicPartition, tuple[int | None, str]] = {
            tp: (None, incarnation) for tp, (_, incarnation) in committed.items()
        }
        resume = await self._assign_locked(parts, fresh)
        start = [tp for tp in parts if tp not in resume]
        if start:
            await self.consumer.seek_to_beginning(*start)

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
        """Flush the sink, publish its dead letters, commit. Raises OSError or
        DependencyUnavailable when a step failed; what is not committed is kept."""
        async with self.lock:
            start = time.perf_counter()
            if self._pending_records or self._flush_requested or self.sink.pending_rows:
                self._flush_requested = False
                offsets = await asyncio.to_thread(self.sink.flush)
                self._to_commit.update(offsets)
                self._dead.extend(self.sink.take_dead_letters())
                take_outputs = getattr(self.sink, "take_outputs", None)
                if take_outputs is not None:  # e.g. the fraud scorer's alerts
                    self._outputs.extend(take_outputs())
                if not self.pipelined:
                    self._pending_records = self._pending_bytes = 0
                    self._oldest = None
            if self.transactions is not None:
                offsets, changed = await self._verify_lives()
                if changed:
                    await self._restart_partitions(changed)
                await self._commit_transaction(start, offsets)
                return
            if self._dead:
                if self.dlq is None:
                    raise RuntimeError("poison records but no dead-letter producer")
                try:
                    await self.dlq.publish(self._dead)
                except NotAcknowledged as exc:
                    self._count_dead_letters(len(self._dead) - len(exc.unsent))
                    self._dead = exc.unsent  # only these are sent again
                    raise
                self._count_dead_letters(len(self._dead))
                self._dead = []
            if self._outputs:
                if self.dlq is None:
                    raise RuntimeError("a sink produced records but there is no producer")
                try:
                    await self.dlq.publish_outputs(self._outputs)
                except NotAcknowledged as exc:
                    self._outputs = exc.unsent
                    raise
                self._outputs = []
            offsets, changed = await self._verify_lives()
            if changed:
                await self._restart_partitions(changed)
            if not offsets:
                return
            if self.pause_before_commit_s:
                await asyncio.sleep(self.pause_before_commit_s)
            try:
                await self.consumer.commit({tp: (off, meta) for tp, (off, meta) in offsets.items()})
            except KafkaError as exc:
                # the batch is durable; the partitions' next owner replays from the last
                # commit and the sink's idempotence absorbs it
                log.warning("commit failed group=%s error=%r (the replay is idempotent)", self.group_id, exc)
                return
            self.batches += 1
            self.metrics.batches.inc()
            self._progress_at = time.monotonic()
            self.committed_offsets.update({tp: off for tp, (off, _) in offsets.items()})
            elapsed = time.perf_counter() - start
            self.metrics.flush_seconds.observe(elapsed)
            log.debug("committed group=%s offsets=%s seconds=%.3f", self.group_id, offsets, elapsed)

    async def _commit_transaction(self, start: float, offsets: dict[TopicPartition, tuple[int, str]]) -> None:
        """Outputs, dead letters and offsets in one transaction; kept for the retry when
        it fails (SinkUnavailable), so the next transaction carries them again."""
        assert self.transactions is not None
        if not (offsets or self._dead or self._outputs):
            return
        try:
            await self.transactions.commit(
                offsets, self._dead, self._outputs, pause_before_commit_s=self.pause_before_commit_s
            )
        except BaseException:
            self._to_commit = {**offsets, **self._to_commit}
            raise
        dead = len(self._dead)
        self._dead, self._outputs = [], []
        self._count_dead_letters(dead)
        self.batches += 1
        self.metrics.batches.inc()
        self._progress_at = time.monotonic()
        self.committed_offsets.update({tp: off for tp, (off, _) in offsets.items()})
        elapsed = time.perf_counter() - start
        self.metrics.flush_seconds.observe(elapsed)
        log.debug(
            "committed in a transaction group=%s offsets=%s seconds=%.3f", self.group_id, offsets, elapsed
        )

    async def assign_transactions(self) -> None:
        """The transactional producer of the current assignment, retried with backoff
        while the broker is unreachable (aiokafka ignores a listener's exceptions)."""
        assert self.transactions is not None
        delay = 0.2
        while True:
            try:
                await self.transactions.assigned(self.consumer.assignment())
                return
            except DependencyUnavailable as exc:
                log.error(
                    "transactional producer group=%s error=%r retry_in_s=%.1f", self.group_id, exc, delay
                )
                if not self.running:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def revoke(self, revoked: list[TopicPartition]) -> None:
        try:
            await self.flush_and_commit()
        except (OSError, DependencyUnavailable) as exc:
            log.error("flush on revoke failed group=%s error=%r: the next owner replays", self.group_id, exc)
        except TransactionFenced as exc:
            log.error("%s", exc)
            self.stop()
        async with self.lock:
            gone = set(revoked)
            self.ready -= gone
            self.sink.revoked(revoked)
            self._to_commit = {tp: v for tp, v in self._to_commit.items() if tp not in gone}
            self._dead = [d for d in self._dead if TopicPartition(d.topic, d.partition) not in gone]
            self._forget(gone)

    def _forget(self, gone: set[TopicPartition]) -> None:
        self._to_commit = {tp: v for tp, v in self._to_commit.items() if tp not in gone}
        for tp in gone:
            self._position.pop(tp, None)
            self._anchor.pop(tp, None)
            self._newest.pop(tp, None)
            self.warm_until.pop(tp, None)
            self.committed_offsets.pop(tp, None)
            self.metrics.forget_partition(tp.topic, tp.partition)

    def stop(self) -> None:
        """Ask the loop to end (signal-handler safe)."""
        self.running = False

    async def run(self) -> None:
        # aiokafka binds a consumer to the running loop: create it here, not in __init__
        self.lock = asyncio.Lock()
        self._consumer = AIOKafkaConsumer(**self._consumer_kwargs)
        await self.consumer.start()
        if self.dlq is not None:
            await self.dlq.start()
        self.consumer.subscribe(self.topics, listener=_Listener(self))
        self._progress_at = time.monotonic()
        watch = asyncio.create_task(self._watch_health())
        try:
            while self.running:
                batch = await self.consumer.getmany(
                    timeout_ms=self.poll_timeout_ms, max_records=self.max_poll_records
                )
                for tp, msgs in batch.items():
                    if msgs and tp not in self.ready:
                        # fetched while the listener still reads the committed offset and
                        # incarnation: the sink cannot name files yet. Fetch them again.
                        self.consumer.seek(tp, msgs[0].offset)
                        continue
                    warm_until = self.warm_until.get(tp)
                    if msgs and warm_until is not None:
                        history = [m for m in msgs if m.offset < warm_until]
                        msgs = [m for m in msgs if m.offset >= warm_until]
                        if history:
                            self.sink.warm(tp, history)  # type: ignore[attr-defined]
                        if msgs:
                            del self.warm_until[tp]
                    if msgs:
                        self.sink.add(tp, msgs)
                        n = len(msgs)
                        self.records += n
                        self.metrics.records.inc(n)
                        self._pending_records += n
                        self._pending_bytes += sum(len(m.value or b"") for m in msgs)
                        self._position[tp] = msgs[-1].offset + 1
                        self._newest[tp] = msgs[-1]
                        self._anchor.setdefault(tp, msgs[0])
                        if self._oldest is None:
                            self._oldest = time.monotonic()
                self.metrics.pending.set(self._pending_records)
                self._update_lag()
                due = self._oldest is not None and time.monotonic() - self._oldest >= self.max_batch_age_s
                due = self._behind_log_end() or due  # the flush checks those partitions' logs
                if (
                    due
                    or self._pending_records >= self.max_batch_rows
                    or self._pending_bytes >= self.max_batch_bytes
                ):
                    if self.pipelined:
                        await self._start_flush()
                    else:
                        await self._flush_with_backoff()
                elif self._flush_task is not None and self._flush_task.done():
                    await self._wait_flush()  # surfaces its error, if any
            await self._wait_flush()
            await self._flush_with_backoff()
            self._update_lag(force=True)
        finally:
            watch.cancel()
            if self._flush_task is not None:  # the loop failed: nothing more gets committed
                self._flush_task.cancel()
                self._flush_task = None
            try:
                await self.consumer.stop()
            except KafkaError as exc:
                log.warning("consumer stop: %r", exc)
            if self.dlq is not None:
                await self.dlq.stop()
            if self.transactions is not None:
                await self.transactions.stop()
            await self.life.stop()

    async def _start_flush(self) -> None:
        """Flush in the background while the loop keeps fetching (the sink's Parquet
        work runs in a thread without the GIL). One flush at a time: commits stay in
        order, and a slow sink slows the fetching down (bounded memory)."""
        await self._wait_flush()
        self._pending_records = self._pending_bytes = 0
        self._oldest = None
        self._flush_requested = True
        self._flush_task = asyncio.create_task(self._flush_with_backoff())

    async def _wait_flush(self) -> None:
        task, self._flush_task = self._flush_task, None
        if task is not None:
            await task

    def _update_lag(self, force: bool = False) -> None:
        now = time.monotonic()
        if now - self._lag_at < 1.0 and not force:
            return
        self._lag_at = now
        # the fetch high watermark: right on Kafka and on Tansu (whose ListOffsets is not)
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            pos = self._position.get(tp)
            if high is not None and pos is not None:
                self.metrics.set_lag(tp.topic, tp.partition, max(0, high - pos))

    def _behind_log_end(self) -> bool:
        """Once a second: partitions fetched past their log's end (the high watermark)
        may have a new, shorter log; they become suspects the next flush checks."""
        now = time.monotonic()
        if now - self._life_checked_at < 1.0:
            return False
        self._life_checked_at = now
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            pos = self._position.get(tp)
            if high is not None and pos is not None and high < pos and tp in self._anchor:
                self._suspect.add(tp)
        return bool(self._suspect)

    async def _verify_lives(self) -> tuple[dict[TopicPartition, tuple[int, str]], set[TopicPartition]]:
        """The offsets safe to commit now, and the partitions whose log changed.
        Offsets of a partition whose log could not be read back wait in ``_to_commit``
        for a later flush; those of a changed log are dropped."""
        suspects = set(self._to_commit) | self._suspect
        self._suspect = set()
        anchors = {tp: self._anchor[tp] for tp in suspects if tp in self._anchor}
        newest = {tp: self._newest[tp] for tp in anchors}
        verdicts = await self.life.check(anchors)
        changed: set[TopicPartition] = set()
        waiting: set[TopicPartition] = set()
        for tp, verdict in verdicts.items():
            if verdict is Life.SAME:
                # the anchor's log is still there: what was fetched up to now is of it
                self._anchor[tp] = newest[tp]
            elif verdict is Life.CHANGED:
                changed.add(tp)
            else:
                waiting.add(tp)
        self._suspect |= {tp for tp in waiting if tp not in self._to_commit}
        offsets = {tp: v for tp, v in self._to_commit.items() if tp not in changed and tp not in waiting}
        self._to_commit = {tp: v for tp, v in self._to_commit.items() if tp in waiting}
        return offsets, changed

    def health(self) -> dict[str, Any]:
        """``status`` "stuck" or "ok", for the health endpoint (any thread may call it)."""
        return {
            "status": "stuck" if self.stuck else "ok",
            "group": self.group_id,
            "seconds_since_progress": round(time.monotonic() - self._progress_at, 1),
            "stuck_after_s": self.stuck_after_s,
            "lag_behind_commits": self.lag_behind_commits,
        }

    async def _watch_health(self) -> None:
        """Stuck: no commit for ``stuck_after_s`` while records wait past the committed
        offsets (a growing lag, or one that never shrinks). Idle with nothing to read is
        progress. The lag is asked of the broker: a wedged loop fetches nothing, so the
        fetch high watermark would stand still."""
        period = min(1.0, self.stuck_after_s / 4)
        while True:
            await asyncio.sleep(period)
            since = time.monotonic() - self._progress_at
            self.metrics.seconds_since_progress.set(since)
            if since < self.stuck_after_s:
                self._set_stuck(False)
                continue
            try:
                lag = await self._lag_behind_commits()
            except KafkaError as exc:
                log.warning("health: lag unknown group=%s error=%r", self.group_id, exc)
                continue
            self.lag_behind_commits = lag
            if lag == 0:
                self._progress_at = time.monotonic()
            self._set_stuck(lag > 0)

    async def _lag_behind_commits(self) -> int:
        parts = list(self.consumer.assignment())
        if not parts:
            return 0
        end = await self.consumer.end_offsets(parts)
        base = {tp: self.committed_offsets.get(tp) for tp in parts}
        never = [tp for tp, off in base.items() if off is None]
        if never:
            base.update(await self.consumer.beginning_offsets(never))
        total = 0
        for tp in parts:
            # Tansu's ListOffsets end lags a batch behind; its fetch high watermark does not
            high = max(end.get(tp) or 0, self.consumer.highwater(tp) or 0)
            total += max(0, high - (base[tp] or 0))
        return total

    def _set_stuck(self, stuck: bool) -> None:
        if stuck and not self.stuck:
            log.error(
                "stuck group=%s: no commit for %.0fs while %s records wait (INFERSTREAM_STUCK_AFTER_S=%g)",
                self.group_id,
                time.monotonic() - self._progress_at,
                self.lag_behind_commits,
                self.stuck_after_s,
            )
        self.stuck = stuck
        self.metrics.stuck.set(1 if stuck else 0)

    def _count_dead_letters(self, n: int) -> None:
        self.dead_letters += n
        self.metrics.dead_letters.inc(n)

    async def _flush_with_backoff(self) -> None:
        """Flush and commit, retrying with backoff. A sink that cannot flush is retried
        for as long as it takes; dead letters (or outputs) not acknowledged for
        ``dlq_retry_timeout_s`` end the loop with DeadLettersStuck instead: the process
        exits non-zero with the source offsets uncommitted past them."""
        delay = 0.2
        unacknowledged_since: float | None = None
        while True:
            try:
                await self.flush_and_commit()
                return
            except (OSError, DependencyUnavailable) as exc:
                # nothing was committed; the sink (and the runner) still hold the batch
                self.metrics.flush_failures.inc()
                if isinstance(exc, NotAcknowledged):
                    now = time.monotonic()
                    unacknowledged_since = unacknowledged_since or now
                    if now - unacknowledged_since >= self.dlq_retry_timeout_s:
                        raise DeadLettersStuck(
                            f"{exc}; gave up after {now - unacknowledged_since:.1f}s "
                            f"(INFERSTREAM_DLQ_RETRY_TIMEOUT_S={self.dlq_retry_timeout_s:g}), "
                            "nothing committed past them"
                        ) from exc
                else:
                    unacknowledged_since = None
                log.error("flush failed group=%s error=%r retry_in_s=%.1f", self.group_id, exc, delay)
                if not self.running:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
