"""One consumer runner for every consumer group; a sink only makes batches durable.

Loop: ``getmany`` → ``sink.add`` → when the batch has ``max_batch_rows`` records,
``max_batch_bytes`` bytes or is ``max_batch_age_s`` old: ``sink.flush`` (durable) →
publish the batch's dead letters and its outputs (alerts), each through its own
producer and acknowledged → commit the offsets. A sink whose durable step records its
own progress (the lake table) sets ``dead_letters_before_durable``: its dead letters are
published and acknowledged first, then the batch made durable (``sink.prepare`` →
publish → ``sink.flush_prepared``), so no crash can leave the table past a dead letter
that was never published (a crash in between publishes it again). A rebalance
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

A sink with ``history_records`` above 0 is shown, on assignment, up to that many
records of each partition before its committed offset (``sink.warm``), to rebuild state
a previous owner had; they are never added, scored as new, or committed. What the runner
asks of a sink is declared in consumers/sink.py; the runner's parts are its state
(consumers/runner_state.py), assignment (consumers/rebalance.py), flush and commit
(consumers/committing.py) and, here, the fetch loop and its health.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from consumers.committing import Committing
from consumers.transactions import TransactionFenced

log = logging.getLogger(__name__)

Records = list[ConsumerRecord[bytes, bytes]]


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


class ConsumerRunner(Committing):
    async def run(self) -> None:
        # aiokafka binds a consumer to the running loop: create it here, not in __init__
        self._consumer = AIOKafkaConsumer(**self._consumer_kwargs)
        await self.consumer.start()
        if self.dead_letter_producer is not None:
            await self.dead_letter_producer.start()
        if self.output_producer is not None:
            await self.output_producer.start()
        self.consumer.subscribe(self.topics, listener=_Listener(self))
        self._progress_at = time.monotonic()
        watch = asyncio.create_task(self._watch_health())
        try:
            while self.running:
                batch = await self.consumer.getmany(
                    timeout_ms=self.poll_timeout_ms, max_records=self.max_poll_records
                )
                for tp, msgs in batch.items():
                    self._take(tp, msgs)
                await self._flush_if_due()
                # getmany returns buffered records without suspending: without this
                # the flush task's steps wait until the loop has nothing to fetch
                await asyncio.sleep(0)
            await self._wait_flush()
            await self._flush_with_backoff()
            self._update_lag(force=True)
        finally:
            watch.cancel()
            await self._shutdown()

    def _take(self, tp: TopicPartition, msgs: Records) -> None:
        """Fetched records: history to the sink's ``warm``, the rest added."""
        if not msgs:
            return
        if tp not in self.ready:
            # fetched while the listener still reads the committed offset and
            # incarnation: the sink cannot name files yet. Fetch them again.
            self.consumer.seek(tp, msgs[0].offset)
            return
        msgs = self._warm(tp, msgs)
        if msgs:
            self._add(tp, msgs)

    def _warm(self, tp: TopicPartition, msgs: Records) -> Records:
        """The records past the history shown to the sink (all of them once it is shown)."""
        warm_until = self.warm_until.get(tp)
        if warm_until is None:
            return msgs
        history = [m for m in msgs if m.offset < warm_until]
        msgs = [m for m in msgs if m.offset >= warm_until]
        if history:
            self.sink.warm(tp, history)
        if msgs:
            del self.warm_until[tp]
        return msgs

    def _add(self, tp: TopicPartition, msgs: Records) -> None:
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

    async def _flush_if_due(self) -> None:
        self.metrics.pending.set(self._pending_records)
        self._update_lag()
        if self._batch_due():
            if self.pipelined:
                if self._flushing() and not self._pending_over(2):
                    return  # the next flush starts when this one ends; fetching goes on meanwhile
                await self._start_flush()
            else:
                await self._flush_with_backoff()
        elif self._flush_task is not None and self._flush_task.done():
            await self._wait_flush()  # surfaces its error, if any

    def _flushing(self) -> bool:
        return self._flush_task is not None and not self._flush_task.done()

    def _pending_over(self, batches: int) -> bool:
        """Whether what waits for a flush holds ``batches`` batches' worth of records or bytes."""
        return (
            self._pending_records >= batches * self.max_batch_rows
            or self._pending_bytes >= batches * self.max_batch_bytes
        )

    def _batch_due(self) -> bool:
        due = self._oldest is not None and time.monotonic() - self._oldest >= self.max_batch_age_s
        due = self._behind_log_end() or due  # the flush checks those partitions' logs
        return (
            due or self._pending_records >= self.max_batch_rows or self._pending_bytes >= self.max_batch_bytes
        )

    async def _shutdown(self) -> None:
        if self._flush_task is not None:  # the loop failed: nothing more gets committed
            self._flush_task.cancel()
            self._flush_task = None
        try:
            await self.consumer.stop()
        except KafkaError as exc:
            log.warning("consumer stop: %r", exc)
        if self.dead_letter_producer is not None:
            await self.dead_letter_producer.stop()
        if self.output_producer is not None:
            await self.output_producer.stop()
        if self.transactions is not None:
            await self.transactions.stop()
        await self.life.stop()

    async def _start_flush(self) -> None:
        """Flush in the background while the loop keeps fetching (the sink's Parquet
        work runs in a thread without the GIL). One flush at a time: commits stay in
        order. A batch due while the previous flush runs waits for it and the loop
        keeps fetching, up to two batches' worth; then it stops until that flush ends:
        a slow sink slows the fetching down (bounded memory)."""
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
