"""Lake sink: micro-batches of inference events as zstd Parquet files.

Exactly-once without transactions: a file is named from its batch's coordinates
(topic, incarnation, partition, first offset; see ``common.lake``). Offsets are
committed only after every file of the batch is durable (temp name, fsync, rename,
directory fsync). After a crash, the partition's next owner resumes at the committed
offset C; before its first write it deletes the partition's files whose first offset is
>= C: those were written but never committed, and are about to be written again.

The incarnation tells apart two lives of a topic name (offsets restart at 0 on
re-creation, e.g. every restart of the in-memory test broker): see
``ConsumerRunner.committed``.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import polars as pl
from aiokafka import ConsumerRecord, TopicPartition

from common import lake
from consumers.runner import incarnation_of

log = logging.getLogger(__name__)

_FIXED_SCHEMA = {
    "event_id": pl.String,
    "schema_version": pl.Int16,
    "event_time": pl.String,
    "model_name": pl.String,
    "model_version": pl.String,
    "prediction": pl.String,
    "latency_ms": pl.Float64,
    "status": pl.String,
    "error": pl.String,
    "synthetic": pl.Boolean,
}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _PartitionState:
    __slots__ = ("incarnation", "committed", "cleaned", "rows", "first_offset", "next_offset")

    def __init__(self, committed: int | None, incarnation: str) -> None:
        self.committed = committed
        self.incarnation = incarnation
        self.cleaned = False
        self.rows: list[dict[str, Any]] = []
        self.first_offset: int | None = None
        self.next_offset: int | None = None


class LakeSink:
    def __init__(self, lake_dir: Path, table: str = lake.EVENTS_TABLE) -> None:
        self.lake_dir = lake_dir
        self.table = table
        self.root = lake.table_dir(lake_dir, table)
        self.root.mkdir(parents=True, exist_ok=True)
        self._parts: dict[TopicPartition, _PartitionState] = {}
        self.poison = 0
        self.files_written = 0
        self._remove_temp_files()

    def _remove_temp_files(self) -> None:
        for tmp in self.root.rglob(f"*{lake.TMP_SUFFIX}"):
            tmp.unlink(missing_ok=True)

    # -- Sink protocol ----------------------------------------------------------------
    def assigned(self, partitions: dict[TopicPartition, tuple[int | None, str]]) -> None:
        for tp, (committed, metadata) in partitions.items():
            self._parts[tp] = _PartitionState(committed, metadata)

    def revoked(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self._parts.pop(tp, None)

    @property
    def pending_rows(self) -> int:
        return sum(len(s.rows) for s in self._parts.values())

    def add(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        state = self._parts.get(tp)
        if state is None:  # consumed before the listener ran (manual assignment)
            state = self._parts[tp] = _PartitionState(None, "")
        if not state.incarnation:
            # an empty partition at assignment: its first record is its earliest
            state.incarnation = incarnation_of(records[0])
        if state.first_offset is None:
            state.first_offset = records[0].offset
        for rec in records:
            try:
                row = orjson.loads(rec.value)  # type: ignore[arg-type]
                if not isinstance(row, dict) or "event_id" not in row:
                    raise ValueError("not an inference event")
            except ValueError as exc:
                self.poison += 1
                log.error("skipping poison message %s[%d]@%d: %s", tp.topic, tp.partition, rec.offset, exc)
                continue
            pred = row.get("prediction")
            row["prediction"] = None if pred is None else str(pred)
            row["kafka_partition"] = tp.partition
            row["kafka_offset"] = rec.offset
            row["kafka_timestamp_ms"] = rec.timestamp
            state.rows.append(row)
        state.next_offset = records[-1].offset + 1

    def flush(self) -> dict[TopicPartition, tuple[int, str]]:
        written: list[tuple[Path, Path]] = []
        commits: dict[TopicPartition, tuple[int, str]] = {}
        try:
            for tp, state in self._parts.items():
                if state.next_offset is None or state.first_offset is None:
                    continue
                if not state.cleaned:
                    self._remove_uncommitted(tp, state)
                    state.cleaned = True
                if state.rows:
                    written.extend(self._write_partition(tp, state))
                commits[tp] = (state.next_offset, state.incarnation)
            dirs = set()
            for tmp, final in written:
                os.replace(tmp, final)
                dirs.add(final.parent)
            for d in dirs:
                _fsync_dir(d)
        except BaseException:
            for tmp, _ in written:
                tmp.unlink(missing_ok=True)
            raise
        self.files_written += len(written)
        for state in self._parts.values():
            state.rows = []
            state.first_offset = None
            state.next_offset = None
        return commits

    # -- internals ----------------------------------------------------------------------
    def _remove_uncommitted(self, tp: TopicPartition, state: _PartitionState) -> None:
        assert state.first_offset is not None
        pattern = f"{lake.safe_segment(tp.topic)}+{state.incarnation}+{tp.partition}+*.parquet"
        for path in self.root.rglob(pattern):
            coords = lake.parse_file_name(path.name)
            if coords is not None and coords.first_offset >= state.first_offset:
                log.warning("removing uncommitted file %s (it is being rewritten)", path)
                path.unlink(missing_ok=True)

    def _write_partition(self, tp: TopicPartition, state: _PartitionState) -> list[tuple[Path, Path]]:
        assert state.first_offset is not None
        df = (
            pl.from_dicts(
                state.rows,
                schema_overrides={
                    **_FIXED_SCHEMA,
                    "kafka_partition": pl.Int32,
                    "kafka_offset": pl.Int64,
                    "kafka_timestamp_ms": pl.Int64,
                },
                infer_schema_length=None,
            )
            .with_columns(
                pl.col("event_time").str.to_datetime(time_unit="us", time_zone="UTC"),
                pl.from_epoch(pl.col("kafka_timestamp_ms"), time_unit="ms")
                .dt.replace_time_zone("UTC")
                .alias("kafka_timestamp"),
            )
            .drop("kafka_timestamp_ms")
        )
        name = lake.file_name(tp.topic, state.incarnation, tp.partition, state.first_offset)
        out = []
        keyed = df.with_columns(pl.col("event_time").dt.truncate("1h").alias("_hour"))
        for (model, hour), group in keyed.group_by(["model_name", "_hour"], maintain_order=True):
            directory = lake.partition_dir(self.lake_dir, str(model), hour, self.table)  # type: ignore[arg-type]
            directory.mkdir(parents=True, exist_ok=True)
            final = directory / name
            tmp = directory / f".{uuid.uuid4().hex}{lake.TMP_SUFFIX}"
            with open(tmp, "wb") as fh:
                group.drop("_hour").write_parquet(fh, compression="zstd")
                fh.flush()
                os.fsync(fh.fileno())
            out.append((tmp, final))
        return out
