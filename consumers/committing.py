"""The consumer runner's flush and commit: the sink's batch made durable, its dead
letters and outputs published (acknowledged), the partitions' logs checked, the offsets
committed; or all of it in one Kafka transaction. Failures are retried with backoff
(see ``_flush_with_backoff``).

A sink with ``dead_letters_before_durable`` (the lake: its table commit records the
offsets it resumes from) gets its dead letters published, acknowledged, before its
durable step: ``prepare`` → publish → ``flush_prepared``, also with a transactional
committer, whose transaction then carries only the outputs and the offsets."""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from common.errors import DependencyUnavailable
from consumers.errors import DeadLettersStuck, NotAcknowledged
from consumers.lifecheck import Life
from consumers.rebalance import Rebalancing
from consumers.transactions import TransactionFenced

log = logging.getLogger("consumers.runner")  # one logger for the runner's parts

Offsets = dict[TopicPartition, tuple[int, str]]


class Committing(Rebalancing):
    async def flush_and_commit(self) -> None:
        """Flush the sink, publish its dead letters and outputs, commit. Raises OSError
        or DependencyUnavailable when a step failed; what is not committed is kept."""
        async with self.lock:
            start = time.perf_counter()
            await self._flush_sink()
            if self.transactions is not None:
                await self._commit_transaction(start, await self._offsets_to_commit())
                return
            dead = len(self._dead)
            await self._publish_dead_letters()
            self._crash_at("dead_letters_published", dead)
            await self._publish_outputs()
            offsets = await self._offsets_to_commit()
            if offsets:
                await self._commit(start, offsets)

    async def _flush_sink(self) -> None:
        """The sink's batch made durable; its offsets, dead letters and outputs kept."""
        if not (self._pending_records or self._flush_requested or self.sink.pending_rows):
            return
        self._flush_requested = False
        if self.sink.dead_letters_before_durable:
            published = await self._publish_prepared_dead_letters()
            offsets = await asyncio.to_thread(self.sink.flush_prepared)
        else:
            published = 0
            offsets = await asyncio.to_thread(self.sink.flush)
        self._to_commit.update(offsets)
        self._dead.extend(self.sink.take_dead_letters())
        self._outputs.extend(self.sink.take_outputs())  # e.g. the fraud scorer's alerts
        self._crash_at("batch_durable", published + len(self._dead))
        if not self.pipelined:
            self._pending_records = self._pending_bytes = 0
            self._oldest = None

    async def _publish_prepared_dead_letters(self) -> int:
        """The sink's batch prepared and its dead letters published, acknowledged,
        before anything of it is durable; how many were published. When some are not
        acknowledged (NotAcknowledged) the sink keeps the prepared batch and the runner
        the unsent letters: the retry sends only those, then makes the batch durable."""
        self._dead.extend(await asyncio.to_thread(self.sink.prepare))
        published = len(self._dead)
        await self._publish_dead_letters()
        self._crash_at("dead_letters_published", published)
        return published

    async def _publish_dead_letters(self) -> None:
        if not self._dead:
            return
        if self.dead_letter_producer is None:
            raise RuntimeError("poison records but no dead-letter producer")
        try:
            await self.dead_letter_producer.publish(self._dead)
        except NotAcknowledged as exc:
            self._count_dead_letters(len(self._dead) - len(exc.unsent))
            self._dead = exc.unsent  # only these are sent again
            raise
        self._count_dead_letters(len(self._dead))
        self._dead = []

    async def _publish_outputs(self) -> None:
        if not self._outputs:
            return
        if self.output_producer is None:
            raise RuntimeError("a sink produced records but there is no output producer")
        try:
            await self.output_producer.publish(self._outputs)
        except NotAcknowledged as exc:
            self._outputs = exc.unsent
            raise
        self._outputs = []

    async def _offsets_to_commit(self) -> Offsets:
        """The offsets safe to commit; partitions whose log changed start a new life."""
        offsets, changed = await self._verify_lives()
        if changed:
            await self._restart_partitions(changed)
        return offsets

    async def _commit(self, start: float, offsets: Offsets) -> None:
        if self.pause_before_commit_s:
            await asyncio.sleep(self.pause_before_commit_s)
        try:
            await self.consumer.commit({tp: (off, meta) for tp, (off, meta) in offsets.items()})
        except KafkaError as exc:
            # the batch is durable; the partitions' next owner replays from the last
            # commit and the sink's idempotence absorbs it
            log.warning("commit failed group=%s error=%r (the replay is idempotent)", self.group_id, exc)
            return
        elapsed = self._committed(start, offsets)
        log.debug("committed group=%s offsets=%s seconds=%.3f", self.group_id, offsets, elapsed)

    def _committed(self, start: float, offsets: Offsets) -> float:
        """Counts a committed batch as progress; returns the seconds it took."""
        self.batches += 1
        self.metrics.batches.inc()
        self._progress_at = time.monotonic()
        self.committed_offsets.update({tp: off for tp, (off, _) in offsets.items()})
        elapsed = time.perf_counter() - start
        self.metrics.flush_seconds.observe(elapsed)
        return elapsed

    async def _commit_transaction(self, start: float, offsets: Offsets) -> None:
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
        elapsed = self._committed(start, offsets)
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
            self._dead = [d for d in self._dead if TopicPartition(d.topic, d.partition) not in gone]
            self._forget(gone)

    async def _verify_lives(self) -> tuple[Offsets, set[TopicPartition]]:
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
