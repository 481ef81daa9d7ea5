"""Is a partition's log still the one its records were fetched from?

A broker that loses its log (the embedded in-memory broker restarted; a topic deleted
and created again) starts the partition's offsets at 0 again. A consumer that does not
notice keeps fetching at its old position, so the new log's first records are never
read, or commits offsets of the old log into the new one. Nothing on the wire says so
(the in-memory broker never answers OFFSET_OUT_OF_RANGE), so the runner asks.

It keeps one fetched record per partition, the *anchor*, and reads the record at the
anchor's offset back from the broker:

- the same record (offset, timestamp, key, value): the log is the anchor's, so every
  record fetched since the anchor was last confirmed is of this life too (a lost log
  never comes back);
- another record, an answer OFFSET_OUT_OF_RANGE above the log's end, or a log that ends
  at or before the anchor for longer than ``confirm_s``: CHANGED, a new life;
- no answer yet (the broker is unreachable; a new leader's high watermark still behind
  after an election): UNKNOWN. The runner commits no offset of the partition until it
  knows.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError, OffsetOutOfRangeError

log = logging.getLogger(__name__)


class Life(enum.Enum):
    SAME = "same"
    CHANGED = "changed"
    UNKNOWN = "unknown"


def same_record(a: ConsumerRecord[bytes, bytes], b: ConsumerRecord[bytes, bytes]) -> bool:
    return (a.offset, a.timestamp, a.key, a.value) == (b.offset, b.timestamp, b.key, b.value)


class LifeCheck:
    """Reads anchors back with a consumer of its own (no group, nothing committed).
    ``stop()`` is safe to call twice; the reader starts on the first check."""

    def __init__(self, bootstrap_servers: str, *, confirm_s: float = 3.0, timeout_s: float = 1.5) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.confirm_s = confirm_s
        self.timeout_s = timeout_s
        self._reader: AIOKafkaConsumer | None = None
        self._short_since: dict[TopicPartition, float] = {}
        self._highwater: dict[TopicPartition, int | None] = {}

    async def _open(self) -> AIOKafkaConsumer:
        if self._reader is None:
            reader = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap_servers,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="none",
                client_id="inferstream-lifecheck",
                # a fetch in flight (a long poll at a log's end) delays the next one
                fetch_max_wait_ms=50,
                max_partition_fetch_bytes=256 * 1024,
            )
            await reader.start()
            self._reader = reader
        return self._reader

    async def stop(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.stop()

    def forget(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self._short_since.pop(tp, None)

    async def check(
        self, anchors: Mapping[TopicPartition, ConsumerRecord[bytes, bytes]]
    ) -> dict[TopicPartition, Life]:
        """The life of each anchor's partition, compared with the broker's log now."""
        out = dict.fromkeys(anchors, Life.UNKNOWN)
        self._highwater = {}
        if not anchors:
            return out
        try:
            reader = await self._open()
            reader.assign(list(anchors))
            for tp, rec in anchors.items():
                reader.seek(tp, rec.offset)
            await self._read_back(reader, anchors, out)
            self._highwater = {tp: reader.highwater(tp) for tp in anchors}
            reader.unsubscribe()  # no fetching between checks
        except KafkaError as exc:
            log.warning("life check: broker unavailable (%r); offsets wait", exc)
        now = time.monotonic()
        for tp, verdict in out.items():
            if verdict is not Life.UNKNOWN or not self._is_short(tp, anchors[tp]):
                self._short_since.pop(tp, None)
                continue
            since = self._short_since.setdefault(tp, now)
            if now - since >= self.confirm_s:
                out[tp] = Life.CHANGED
                self._short_since.pop(tp, None)
        return out

    def _is_short(self, tp: TopicPartition, anchor: ConsumerRecord[bytes, bytes]) -> bool:
        high = self._highwater.get(tp)
        if high is None and self._reader is not None and tp in self._reader.assignment():
            high = self._reader.highwater(tp)
        return high is not None and high <= anchor.offset

    async def _read_back(
        self,
        reader: AIOKafkaConsumer,
        anchors: Mapping[TopicPartition, ConsumerRecord[bytes, bytes]],
        out: dict[TopicPartition, Life],
    ) -> None:
        pending = set(anchors)
        deadline = time.monotonic() + self.timeout_s
        while pending and time.monotonic() < deadline:
            try:
                batch = await reader.getmany(*pending, timeout_ms=200)
            except OffsetOutOfRangeError as exc:
                await self._out_of_range(reader, exc, anchors, out, pending)
                continue
            for tp, msgs in batch.items():
                if tp in pending and msgs:
                    out[tp] = Life.SAME if same_record(msgs[0], anchors[tp]) else Life.CHANGED
                    pending.discard(tp)
            # a log that ends at or before the anchor answers nothing: stop waiting for it
            pending = {tp for tp in pending if not self._is_short(tp, anchors[tp])}

    async def _out_of_range(
        self,
        reader: AIOKafkaConsumer,
        exc: OffsetOutOfRangeError,
        anchors: Mapping[TopicPartition, ConsumerRecord[bytes, bytes]],
        out: dict[TopicPartition, Life],
        pending: set[TopicPartition],
    ) -> None:
        where = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
        parts = [tp for tp in where if tp in pending]
        if not parts:
            raise exc
        end = await reader.end_offsets(parts)
        for tp in parts:
            pending.discard(tp)
            if anchors[tp].offset >= end.get(tp, 0):
                out[tp] = Life.CHANGED  # the log ends before the anchor: it was lost
            else:
                # below the log's start: retention deleted the anchor's segment; a new
                # log would start at 0 and hold it. The consumer resets on its own.
                out[tp] = Life.SAME
