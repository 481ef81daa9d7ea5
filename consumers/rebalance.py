"""The consumer runner's partition assignment: committed offsets and incarnations
read back, the sink told (and asked where to resume), history and rewinds sought, and
partitions whose log was replaced under the runner restarted as a new life."""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from common.errors import DependencyUnavailable
from common.lakewrite import incarnation_of
from consumers.runner_state import RunnerState

log = logging.getLogger("consumers.runner")  # one logger for the runner's parts


class Rebalancing(RunnerState):
    async def committed(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, tuple[int | None, str]]:
        """Committed offset and incarnation of each partition.

        The incarnation (see ``common.lake``) is the commit metadata where the broker
        keeps it (Kafka does); otherwise (Tansu drops commit metadata) a hash of the
        partition's earliest record, or "" for an empty partition (the sink then takes
        it from the first record it sees, which is then the earliest)."""
        # aiokafka's public committed() drops the commit metadata; the coordinator keeps it
        coordinator = self.consumer._coordinator
        found = await coordinator.fetch_committed_offsets(partitions)
        out: dict[TopicPartition, tuple[int | None, str]] = {}
        for tp in partitions:
            oam = found.get(tp)
            if oam is None or oam.offset < 0:
                out[tp] = (None, "")
            elif oam.metadata or not self.sink.resumes_from_store(tp):
                out[tp] = (oam.offset, oam.metadata or "")
            else:
                # it names no life of the log: not a place to resume (Sink.resumes_from_store)
                log.debug(
                    "group=%s %s: commit %d without its log's life ignored", self.group_id, tp, oam.offset
                )
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

    async def assign_partitions(self, assigned: list[TopicPartition]) -> None:
        """Partitions now owned: their committed offsets and incarnation go to the sink,
        which may answer where to resume (the runner seeks there)."""
        committed = await self.committed(assigned)
        async with self.lock:
            await self._assign_locked(assigned, committed)

    async def _assign_locked(
        self, assigned: list[TopicPartition], committed: dict[TopicPartition, tuple[int | None, str]]
    ) -> None:
        for tp in assigned:
            self._anchor.pop(tp, None)
            self._newest.pop(tp, None)
        # in a thread: a sink may read its own store (the lake table) to answer
        resume = await asyncio.to_thread(self.sink.assigned, committed) or {}
        for tp, offset in resume.items():
            self.consumer.seek(tp, offset)
        # e.g. the drift monitor rebuilds its window from the topic
        rewound = self.sink.rewind(committed)
        for tp, offset in rewound.items():
            self.consumer.seek(tp, offset)
        # no offset to resume at: the log's start, whatever the group holds (a commit
        # ignored above, or one of the old log after a restart of the partition's life)
        start = [tp for tp in assigned if committed[tp][0] is None and tp not in resume and tp not in rewound]
        if start:
            await self.consumer.seek_to_beginning(*start)
        self.ready.update(assigned)
        self.committed_offsets.update({tp: off for tp, (off, _) in committed.items()})
        history = self.sink.history_records
        for tp in assigned:
            committed_offset = committed[tp][0]
            if history and committed_offset:
                self.warm_until[tp] = committed_offset
                self.consumer.seek(tp, max(0, committed_offset - history))
        log.info(
            "assigned group=%s partitions=%s committed=%s",
            self.group_id,
            sorted(tp.partition for tp in assigned),
            {
                f"{tp.topic}/{tp.partition}": committed[tp][0]
                for tp in sorted(assigned)
                if committed[tp][0] is not None
            },
        )

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
        await self._assign_locked(parts, fresh)  # read from the table's offsets, or the start

    def _forget(self, gone: set[TopicPartition]) -> None:
        self._to_commit = {tp: v for tp, v in self._to_commit.items() if tp not in gone}
        for tp in gone:
            self._position.pop(tp, None)
            self._anchor.pop(tp, None)
            self._newest.pop(tp, None)
            self.warm_until.pop(tp, None)
            self.committed_offsets.pop(tp, None)
            self.metrics.forget_partition(tp.topic, tp.partition)
