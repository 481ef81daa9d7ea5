"""Lake sink: micro-batches of inference events appended to the events Delta table.

Exactly-once through the table (``common.lakewrite``): each flush is one atomic table
commit holding the batch's rows and, per Kafka partition, the next offset to consume.
On assignment the sink answers where to resume from the table's offsets (the group's
committed offset is only a hint, used where the table knows nothing); a replay of
records the table already holds, or a second copy of an event id, lands nothing.

The incarnation tells apart two lives of a topic name (offsets restart at 0 on
re-creation, e.g. every restart of the in-memory test broker): it is part of each
partition's transaction id; see ``ConsumerRunner.committed``.

Dead letters first: the table is the record of progress, so a poison record's dead
letter must be in the DLQ topic before the commit that moves past it, or a crash in
between would lose it (the restarted lander resumes from the table). ``prepare`` parses
a batch and hands out its dead letters; the runner publishes them, acknowledged; then
``flush_prepared`` commits. A crash after the publish and before the commit publishes
them again on replay: dead letters are at least once, identified by their source
coordinates (``dlq.topic``, ``dlq.partition``, ``dlq.offset``). Within a process a
failed commit is retried on the same prepared batch: its dead letters are not handed
out again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import polars as pl
from aiokafka import ConsumerRecord, TopicPartition

from common import lake
from common.lakewrite import PartitionBatch, app_id, commit_batch, incarnation_of, next_offsets
from consumers.deadletters import DeadLetter
from consumers.lake_parse import EventParser, combine
from consumers.sink import Sink

log = logging.getLogger(__name__)


class _Chunk:
    """Records of one partition handed to the parse thread as they arrived: parsed while
    the loop keeps fetching and the previous batch commits."""

    __slots__ = ("records", "parsed")

    def __init__(self, records: list[ConsumerRecord[bytes, bytes]], parsed: Future[_Parsed]) -> None:
        self.records = records
        self.parsed = parsed


# a chunk parsed: its rows (None when it has none) and its dead letters
_Parsed = tuple[pl.DataFrame | None, list[DeadLetter]]


class _PartitionState:
    __slots__ = ("incarnation", "chunks", "records", "first_offset", "next_offset")

    def __init__(self, incarnation: str) -> None:
        self.incarnation = incarnation
        self.chunks: list[_Chunk] = []  # handed to the parse thread, in offset order
        self.records: list[ConsumerRecord[bytes, bytes]] = []  # the tail, not handed yet
        self.first_offset: int | None = None
        self.next_offset: int | None = None

    @property
    def pending(self) -> int:
        return sum(len(c.records) for c in self.chunks) + len(self.records)


# one partition's records taken for a batch: (partition, state, chunks, first offset, next offset)
_Taken = tuple[TopicPartition, _PartitionState, list[_Chunk], int, int]


class _Prepared:
    """Records taken and parsed, their dead letters handed out, not in the table yet."""

    __slots__ = ("frames", "ends", "records")

    def __init__(self) -> None:
        self.frames: list[tuple[TopicPartition, pl.DataFrame]] = []
        self.ends: dict[TopicPartition, tuple[_PartitionState, int]] = {}  # the next offset
        self.records: dict[TopicPartition, int] = {}

    def extend(self, taken: list[_Taken], frames: list[tuple[TopicPartition, pl.DataFrame]]) -> None:
        for tp, state, chunks, _first, next_offset in taken:
            self.ends[tp] = (state, next_offset)
            self.records[tp] = self.records.get(tp, 0) + sum(len(c.records) for c in chunks)
        self.frames += frames

    def drop(self, gone: set[TopicPartition]) -> None:
        self.frames = [(tp, df) for tp, df in self.frames if tp not in gone]
        for tp in gone:
            self.ends.pop(tp, None)
            self.records.pop(tp, None)


class LakeSink(Sink):
    """Parses each partition's records in chunks as they arrive, in parse threads
    (consumers/lake_parse.py: one NDJSON read a chunk and shape); poison
    records become dead letters, published before the table commit that moves past them
    (``dead_letters_before_durable``): the runner calls ``prepare``, publishes what it
    returns, then ``flush_prepared``."""

    dead_letters_before_durable = True

    parse_threads = 2
    """Threads parsing chunks (Arrow's JSON reader, one thread each, mostly without the
    GIL), partitions spread over them."""

    parse_chunk = 5_000
    """A partition's records are handed to the parse thread in chunks of this many as
    they arrive (the rest at ``prepare``): parsing overlaps fetching and the previous
    batch's commit instead of following them."""

    time_column = "event_time"  # the date/hour partitions come from it
    dedupe_key: str | None = "event_id"  # one row per event id

    def __init__(
        self, where: lake.Lake | Path | str, table: str = lake.EVENTS_TABLE, *, group: str = "lake"
    ) -> None:
        self.lake = lake.location(where)
        self.table = table
        self.group = group
        self._parts: dict[TopicPartition, _PartitionState] = {}
        # a parser per parse thread (each caches the shapes it has seen); a partition's
        # chunks always go to the same thread, so they are parsed in their order
        self._parsers = [EventParser() for _ in range(self.parse_threads)]
        self._dead: list[DeadLetter] = []  # of ``flush`` (single phase), for take_dead_letters
        self._prepared = _Prepared()
        self._lock = threading.Lock()  # add() on the loop, flush() in a worker thread
        self._parse = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"lake-parse-{table}-{i}")
            for i in range(self.parse_threads)
        ]
        self.pipelined = True  # the runner may keep consuming while flush() runs
        self.poison = 0
        self.duplicates = 0  # rows not landed: their event id was in the table already

    def _app_id(self, tp: TopicPartition, incarnation: str) -> str:
        return app_id(self.group, tp.topic, tp.partition, incarnation)

    # -- Sink protocol ----------------------------------------------------------------
    def resumes_from_store(self, tp: TopicPartition) -> bool:
        return True  # each table commit records the next offsets of its partitions

    def assigned(self, partitions: dict[TopicPartition, tuple[int | None, str]]) -> dict[TopicPartition, int]:
        """Where to resume each partition: the next offset the table holds for it (a
        partition the table does not know resumes at the group's committed offset when
        its metadata names the partition's life, else at the log's start: see
        ``Sink.resumes_from_store``)."""
        known = {self._app_id(tp, inc): tp for tp, (_, inc) in partitions.items() if inc}
        table_says = next_offsets(self.lake, self.table, known)
        with self._lock:
            for tp, (_, metadata) in partitions.items():
                self._parts[tp] = _PartitionState(metadata)
        resume = {tp: off for tp, off in table_says.items() if off is not None}
        for tp, off in resume.items():
            if off != partitions[tp][0]:
                log.info("resuming %s at %d from the table (group committed %s)", tp, off, partitions[tp][0])
        return resume

    def revoked(self, partitions: Iterable[TopicPartition]) -> None:
        gone = set(partitions)
        with self._lock:  # chunks being parsed finish unseen
            for tp in gone:
                self._parts.pop(tp, None)
        self._prepared.drop(gone)

    @property
    def pending_rows(self) -> int:
        """Records added and not in the table yet, prepared ones included."""
        with self._lock:
            added = sum(s.pending for s in self._parts.values())
        return added + sum(self._prepared.records.values())

    def close(self) -> None:
        for pool in self._parse:
            pool.shutdown(wait=True, cancel_futures=True)

    def add(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        with self._lock:
            self._add(tp, records)

    def _add(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        state = self._parts.get(tp)
        if state is None:  # consumed before the listener ran (manual assignment)
            state = self._parts[tp] = _PartitionState("")
        if not state.incarnation:
            # an empty partition at assignment: its first record is its earliest
            state.incarnation = incarnation_of(records[0])
        if state.first_offset is None:
            state.first_offset = records[0].offset
        state.records.extend(records)
        state.next_offset = records[-1].offset + 1
        if len(state.records) >= self.parse_chunk:
            self._hand_over(tp, state)

    def _hand_over(self, tp: TopicPartition, state: _PartitionState) -> None:
        """The partition's tail to the parse thread (under the lock)."""
        records, state.records = state.records, []
        state.chunks.append(_Chunk(records, self._submit(tp, records)))

    def _submit(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> Future[_Parsed]:
        return self._parse[self._thread_of(tp)].submit(self._parsed, tp, records)

    def _thread_of(self, tp: TopicPartition) -> int:
        partition: int = tp.partition
        return partition % len(self._parse)

    def _parsed(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> _Parsed:
        dead: list[DeadLetter] = []
        return self._frame(tp, records, dead), dead

    def take_dead_letters(self) -> list[DeadLetter]:
        out, self._dead = self._dead, []
        return out

    def flush(self) -> dict[TopicPartition, tuple[int, str]]:
        """Both phases at once, for a caller without a dead-letter topic to publish to
        first (the dead letters wait for ``take_dead_letters``)."""
        self._dead.extend(self.prepare())
        return self.flush_prepared()

    def prepare(self) -> list[DeadLetter]:
        """Safe to run in a worker thread while the loop keeps calling ``add``: takes
        what was added so far (what arrives meanwhile waits for the next call) and
        parses it; returns its dead letters. After a failed ``flush_prepared`` the
        prepared records stay, and what is taken now joins them: every dead letter is
        returned once."""
        with self._lock:
            taken: list[_Taken] = []
            for tp, state in self._parts.items():
                if state.next_offset is None or state.first_offset is None:
                    continue
                if state.records:
                    self._hand_over(tp, state)
                taken.append((tp, state, state.chunks, state.first_offset, state.next_offset))
                state.chunks, state.first_offset, state.next_offset = [], None, None
        dead: list[DeadLetter] = []
        frames = []
        try:
            for tp, _state, chunks, _first, _next in taken:
                parsed = []
                for chunk in chunks:
                    df, chunk_dead = chunk.parsed.result()
                    dead += chunk_dead
                    if df is not None and df.height:
                        parsed.append((df, chunk.records))
                df = combine(parsed, dead)
                if df is not None and df.height:
                    frames.append((tp, df))
        except BaseException:
            self._put_back(taken)
            raise
        self._prepared.extend(taken, frames)
        self.poison += len(dead)
        return dead

    def _put_back(self, taken: list[_Taken]) -> None:
        """Taken chunks back in front of what arrived meanwhile, to be parsed again."""
        with self._lock:
            for tp, state, chunks, first, next_offset in taken:
                if self._parts.get(tp) is not state:
                    continue  # revoked meanwhile
                records = [r for c in chunks for r in c.records]
                state.chunks = [_Chunk(records, self._submit(tp, records))] + state.chunks
                state.first_offset = first
                state.next_offset = state.next_offset or next_offset

    def flush_prepared(self) -> dict[TopicPartition, tuple[int, str]]:
        """The prepared records and their partitions' next offsets in one table commit.
        On failure they stay prepared for the next call."""
        prepared = self._prepared
        if not prepared.ends:
            return {}
        parts = [
            PartitionBatch(self._app_id(tp, state.incarnation), tp.partition, next_offset)
            for tp, (state, next_offset) in prepared.ends.items()
        ]
        frame = self._partitioned([df for _tp, df in prepared.frames])
        result = commit_batch(
            self.lake, self.table, frame, parts, time_column=self.time_column, key=self.dedupe_key
        )
        self._prepared = _Prepared()
        if result.replayed or result.duplicates:
            log.info(
                "table=%s not landed again: %d rows already at their offsets, %d event ids already landed",
                self.table,
                result.replayed,
                result.duplicates,
            )
        self.duplicates += result.duplicates
        return {tp: (next_offset, state.incarnation) for tp, (state, next_offset) in prepared.ends.items()}

    def _partitioned(self, frames: list[pl.DataFrame]) -> pl.DataFrame | None:
        if not frames:
            return None
        df = frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")
        t = pl.col(self.time_column)
        return df.with_columns(
            pl.when(pl.col("model_name") == "")
            .then(pl.lit("_"))
            .otherwise(pl.col("model_name").str.replace_all(r"[^A-Za-z0-9._-]", "_"))
            .alias("model"),  # as lake.safe_segment
            t.dt.date().alias("date"),
            t.dt.hour().cast(pl.Int32).alias("hour"),
        )

    def _frame(
        self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]], dead: list[DeadLetter]
    ) -> pl.DataFrame | None:
        """The records of ``tp`` as rows of the table; poison records go to ``dead``."""
        return self._parsers[self._thread_of(tp)].frame(records, dead)
