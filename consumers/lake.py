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
import re
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl
from aiokafka import ConsumerRecord, TopicPartition

from common import lake
from common.events import SCHEMA_VERSION
from consumers.deadletters import DeadLetter
from consumers.lakelock import hour_lock
from consumers.runner import incarnation_of
from consumers.validate import PoisonError, decode_event, nesting

log = logging.getLogger(__name__)

_FIXED_SCHEMA: dict[str, Any] = {
    "event_id": pl.String,
    "schema_version": pl.Int64,
    "event_time": pl.String,
    "model_name": pl.String,
    "model_version": pl.String,
    "prediction": pl.String,
    "latency_ms": pl.Float64,
    "status": pl.String,
    "error": pl.String,
    "synthetic": pl.Boolean,
    "client_id": pl.String,
}
_REQUIRED = ("event_id", "event_time", "model_name", "model_version", "features", "latency_ms", "status")
# Records of one model version share one shape (the API validates features against
# the model's spec). The shape key is the model, its version and the number of quote
# characters (keys and string values; a single-byte count is the cheapest scan): records
# with another shape get their own schema, inferred once and then reused. Limit: a
# record of a known model version with other keys but the same quote count would be
# read with the cached schema, its unknown keys dropped.
_MODEL_RE = re.compile(rb'"model_name":"((?:[^"\\]|\\.)*)","model_version":"((?:[^"\\]|\\.)*)"')
_MAX_SCHEMAS = 256
_ShapeKey = tuple[bytes, bytes, int]
_UUID_RE = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_WIRE_TIME = "%Y-%m-%dT%H:%M:%S%.fZ"
# polars' supertype search over nested structs grows exponentially with their depth
# (measured: 32 levels 29 ms, 48 levels 0.2 s, 200 levels hours): deeper junk is a dead letter
_MAX_NESTING = 16


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _PartitionState:
    __slots__ = ("incarnation", "committed", "cleaned", "records", "first_offset", "next_offset")

    def __init__(self, committed: int | None, incarnation: str) -> None:
        self.committed = committed
        self.incarnation = incarnation
        self.cleaned = False
        self.records: list[ConsumerRecord[bytes, bytes]] = []
        self.first_offset: int | None = None
        self.next_offset: int | None = None


class _Group:
    """Records of one shape, with their coordinates, in arrival order."""

    __slots__ = ("values", "records", "joined")

    def __init__(self) -> None:
        self.values: list[bytes] = []
        self.records: list[ConsumerRecord[bytes, bytes]] = []
        self.joined: bytes | None = None

    def ndjson(self) -> bytes:
        if self.joined is None:
            self.joined = b"\n".join(self.values)
        return self.joined


class LakeSink:
    """Parses batches with polars' NDJSON reader (one call per batch and shape, ~7 us an
    event, against ~35 us for a dict per record); poison records become dead letters."""

    time_column = "event_time"  # the hive date/hour partitions come from it

    def __init__(self, lake_dir: Path, table: str = lake.EVENTS_TABLE) -> None:
        self.lake_dir = lake_dir
        self.table = table
        self.root = lake.table_dir(lake_dir, table)
        self.root.mkdir(parents=True, exist_ok=True)
        self._parts: dict[TopicPartition, _PartitionState] = {}
        self._schemas: dict[_ShapeKey, pl.Schema] = {}
        self._dead: list[DeadLetter] = []
        self._lock = threading.Lock()  # add() on the loop, flush() in a worker thread
        self.pipelined = True  # the runner may keep consuming while flush() runs
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
        return sum(len(s.records) for s in self._parts.values())

    def add(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        with self._lock:
            self._add(tp, records)

    def _add(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        state = self._parts.get(tp)
        if state is None:  # consumed before the listener ran (manual assignment)
            state = self._parts[tp] = _PartitionState(None, "")
        if not state.incarnation:
            # an empty partition at assignment: its first record is its earliest
            state.incarnation = incarnation_of(records[0])
        if state.first_offset is None:
            state.first_offset = records[0].offset
        state.records.extend(records)
        state.next_offset = records[-1].offset + 1

    def take_dead_letters(self) -> list[DeadLetter]:
        out, self._dead = self._dead, []
        return out

    def flush(self) -> dict[TopicPartition, tuple[int, str]]:
        """Safe to run in a worker thread while the loop keeps calling ``add``: it
        takes what was added so far; what arrives meanwhile waits for the next flush."""
        with self._lock:
            taken = []
            for tp, state in self._parts.items():
                if state.next_offset is None or state.first_offset is None:
                    continue
                taken.append((tp, state, state.records, state.first_offset, state.next_offset))
                state.records, state.first_offset, state.next_offset = [], None, None
        written: list[tuple[Path, Path]] = []
        commits: dict[TopicPartition, tuple[int, str]] = {}
        dead: list[DeadLetter] = []
        try:
            for tp, state, records, first, next_offset in taken:
                if not state.cleaned:
                    self._remove_uncommitted(tp, state.incarnation, first)
                    state.cleaned = True
                df = self._frame(tp, records, dead)
                if df is not None and df.height:
                    written.extend(self._write_partition(tp, state.incarnation, first, df))
                commits[tp] = (next_offset, state.incarnation)
            by_dir: dict[Path, list[tuple[Path, Path]]] = {}
            for tmp, final in written:
                by_dir.setdefault(final.parent, []).append((tmp, final))
            for d, pairs in by_dir.items():
                with hour_lock(d):  # compaction swaps hour directories under this lock
                    for tmp, final in pairs:
                        os.replace(tmp, final)  # FileNotFoundError if swapped meanwhile: retried
                    fsync_dir(d)
        except BaseException:
            for tmp, _ in written:
                tmp.unlink(missing_ok=True)
            with self._lock:  # put the batch back in front of what arrived meanwhile
                for _tp, state, records, first, next_offset in taken:
                    state.records = records + state.records
                    state.first_offset = first
                    state.next_offset = state.next_offset or next_offset
            raise
        self.files_written += len(written)
        self.poison += len(dead)
        self._dead.extend(dead)
        return commits

    # -- parsing ------------------------------------------------------------------------
    def _frame(
        self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]], dead: list[DeadLetter]
    ) -> pl.DataFrame | None:
        groups = self._homogeneous(records)
        if groups is None:
            groups = self._grouped(records, dead)
        frames = []
        for key, group in groups.items():
            df = self._parse_group(key, group, dead)
            if df is not None and df.height:
                frames.append((df, group))
        if not frames:
            return None
        if len(frames) == 1:
            return frames[0][0]
        # the largest shape first; a shape whose fields cannot share a column type with
        # what is kept (junk under a feature's name) is dead-lettered, the rest lands
        frames.sort(key=lambda f: -f[0].height)
        kept = frames[0][0]
        for df, group in frames[1:]:
            try:
                both = pl.concat([kept, df], how="diagonal_relaxed")
                changed = [
                    c
                    for part in (kept, df)
                    for c, dtype in part.schema.items()
                    if not _widens(dtype, both.schema[c])
                ]
                if changed:  # e.g. a number feature would be stored as text for the whole batch
                    raise pl.exceptions.SchemaError(f"column {changed[0]} would change type")
            except pl.exceptions.PolarsError as exc:
                reason = f"fields of types conflicting with the rest of the batch: {exc}"[:500]
                offsets = set(df["kafka_offset"])
                dead.extend(_dead(rec, reason) for rec in group.records if rec.offset in offsets)
                continue
            kept = both
        return kept

    @staticmethod
    def _homogeneous(records: list[ConsumerRecord[bytes, bytes]]) -> dict[_ShapeKey | None, _Group] | None:
        """The usual batch, all of one shape, checked with two C-speed counts over the
        joined values instead of a regex a record (~2.5 us an event saved)."""
        first = records[0].value
        m = _MODEL_RE.search(first) if first is not None else None
        if m is None or any(r.value is None for r in records):
            return None
        group = _Group()
        group.values = [r.value for r in records]  # type: ignore[misc]
        group.records = records
        joined = b"\n".join(group.values)
        n, keys = len(records), first.count(b'"')  # type: ignore[union-attr]
        if joined.count(m.group(0)) != n or joined.count(b'"') != n * keys:
            return None
        group.joined = joined
        return {(m.group(1), m.group(2), keys): group}

    def _grouped(
        self, records: list[ConsumerRecord[bytes, bytes]], dead: list[DeadLetter]
    ) -> dict[_ShapeKey | None, _Group]:
        groups: dict[_ShapeKey | None, _Group] = {}
        for rec in records:
            value = rec.value
            if value is None:
                dead.append(_dead(rec, "empty value (tombstone)"))
                continue
            m = _MODEL_RE.search(value)
            key = (m.group(1), m.group(2), value.count(b'"')) if m else None
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Group()
            group.values.append(value)
            group.records.append(rec)
        return groups

    def _parse_group(
        self, key: _ShapeKey | None, group: _Group, dead: list[DeadLetter]
    ) -> pl.DataFrame | None:
        schema = self._schemas.get(key) if key is not None else None
        df = None
        if schema is not None:
            try:
                df = pl.read_ndjson(group.ndjson(), schema=schema)
            except pl.exceptions.PolarsError:
                df = None  # a record does not fit the shape: decode one by one below
        if df is None:
            records: list[ConsumerRecord[bytes, bytes]] = []
            for rec in group.records:
                try:
                    if nesting(decode_event(rec.value)) > _MAX_NESTING:
                        raise PoisonError(f"nested deeper than {_MAX_NESTING} levels")
                except PoisonError as exc:
                    dead.append(_dead(rec, str(exc)))
                    continue
                records.append(rec)
            if not records:
                return None
            group.records = records
            group.values = [r.value for r in records]  # type: ignore[misc]
            group.joined = None
            df = self._infer(group, dead)
            if df is None:
                return None
            if key is not None:
                if len(self._schemas) >= _MAX_SCHEMAS:
                    self._schemas.clear()
                self._schemas[key] = df.schema
        recs = group.records
        first, n = recs[0].offset, len(recs)
        contiguous = recs[-1].offset - first + 1 == n  # the usual case: no Python list needed
        df = df.with_columns(
            pl.lit(recs[0].partition, pl.Int32).alias("kafka_partition"),
            pl.int_range(first, first + n, dtype=pl.Int64).alias("kafka_offset")
            if contiguous
            else pl.Series("kafka_offset", [r.offset for r in recs], pl.Int64),
            pl.Series("kafka_timestamp_ms", [r.timestamp for r in group.records], pl.Int64),
        )
        return self._validated(df, group, dead)

    def _infer(self, group: _Group, dead: list[DeadLetter]) -> pl.DataFrame | None:
        try:
            return pl.read_ndjson(group.ndjson(), infer_schema_length=None, schema_overrides=_FIXED_SCHEMA)
        except pl.exceptions.PolarsError:
            pass
        # the records disagree on a field's type: find the ones that cannot share a frame
        frames, kept = [], []
        for rec in group.records:
            try:
                frames.append(pl.read_ndjson(rec.value, schema_overrides=_FIXED_SCHEMA))  # type: ignore[arg-type]
                kept.append(rec)
            except pl.exceptions.PolarsError as exc:
                dead.append(_dead(rec, f"cannot be stored: {exc}"[:500]))
        if not frames:
            return None
        group.records = kept
        try:
            return pl.concat(frames, how="diagonal_relaxed")
        except pl.exceptions.PolarsError as exc:
            for rec in kept:
                dead.append(_dead(rec, f"fields of conflicting types in one batch: {exc}"[:500]))
            return None

    def _validated(self, df: pl.DataFrame, group: _Group, dead: list[DeadLetter]) -> pl.DataFrame:
        missing = [c for c in _REQUIRED if c not in df.columns]
        if "schema_version" not in df.columns:
            missing.append("schema_version")
        if missing:
            for rec in group.records:
                dead.append(_dead(rec, f"missing field {missing[0]}"))
            return df.clear()
        # the wire format first (fast); any other ISO 8601 spelling only if some rows need it
        df = df.with_columns(
            pl.col("event_time")
            .str.to_datetime(_WIRE_TIME, time_unit="us", time_zone="UTC", strict=False)
            .alias("_t")
        )
        if df["_t"].null_count() > df["event_time"].null_count():
            df = df.with_columns(
                pl.coalesce(
                    "_t", pl.col("event_time").str.to_datetime(time_unit="us", time_zone="UTC", strict=False)
                ).alias("_t")
            )
        bad = pl.col("schema_version").is_null() | (pl.col("schema_version") != SCHEMA_VERSION)
        for c in _REQUIRED:
            bad = bad | pl.col(c).is_null()
        # an hour directory is named through a Python datetime: years 1-9999 only
        year = pl.col("_t").dt.year()
        bad = bad | pl.col("_t").is_null() | (year < 1) | (year > 9999)
        bad = bad | ~pl.col("event_id").str.contains(_UUID_RE)
        df = df.with_columns(bad.alias("_bad"))
        if df["_bad"].any():
            by_offset = {r.offset: r for r in group.records}
            for row in (
                df.filter(pl.col("_bad"))
                .select("kafka_offset", "schema_version", pl.col("_t").dt.year().alias("_year"), *_REQUIRED)
                .iter_rows(named=True)
            ):
                dead.append(_dead(by_offset[row["kafka_offset"]], _reason(row)))
            df = df.filter(~pl.col("_bad"))
        return df.with_columns(
            pl.col("_t").alias("event_time"),
            pl.col("schema_version").cast(pl.Int16),
            pl.from_epoch(pl.col("kafka_timestamp_ms"), time_unit="ms")
            .dt.replace_time_zone("UTC")
            .alias("kafka_timestamp"),
        ).drop("_t", "_bad", "kafka_timestamp_ms")

    # -- internals ----------------------------------------------------------------------
    def _remove_uncommitted(self, tp: TopicPartition, incarnation: str, first_offset: int) -> None:
        pattern = f"{lake.safe_segment(tp.topic)}+{incarnation}+{tp.partition}+*.parquet"
        for path in self.root.rglob(pattern):
            coords = lake.parse_file_name(path.name)
            if coords is not None and coords.first_offset >= first_offset:
                log.warning("removing uncommitted file %s (it is being rewritten)", path)
                with hour_lock(path.parent):
                    path.unlink(missing_ok=True)

    def _write_partition(
        self, tp: TopicPartition, incarnation: str, first_offset: int, df: pl.DataFrame
    ) -> list[tuple[Path, Path]]:
        name = lake.file_name(tp.topic, incarnation, tp.partition, first_offset)
        out = []
        keyed = df.with_columns(pl.col(self.time_column).dt.truncate("1h").alias("_hour"))
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
            log.debug("writing %s rows=%d", final.relative_to(self.root), group.height)
        return out


def _widens(old: pl.DataType, new: pl.DataType) -> bool:
    """Whether values of type ``old`` keep their kind as ``new``: the same type, a wider
    number, a struct with more fields, or anything in place of nulls."""
    if old == new or old == pl.Null:
        return True
    if old.is_numeric() and new.is_numeric():
        return True
    if isinstance(old, pl.Struct) and isinstance(new, pl.Struct):
        fields = {f.name: f.dtype for f in new.fields}
        return all(f.name in fields and _widens(f.dtype, fields[f.name]) for f in old.fields)
    if isinstance(old, pl.List) and isinstance(new, pl.List):
        return _widens(old.inner, new.inner)
    return False


def _dead(rec: ConsumerRecord[bytes, bytes], reason: str) -> DeadLetter:
    return DeadLetter(rec.topic, rec.partition, rec.offset, rec.key, rec.value, reason)


def _reason(row: dict[str, Any]) -> str:
    version = row["schema_version"]
    if version != SCHEMA_VERSION:
        return f"unknown schema_version {version!r} (this consumer reads {SCHEMA_VERSION})"
    for c in _REQUIRED:
        if row[c] is None:
            return f"missing field {c}"
    if row["_year"] is None:
        return "event_time is not an ISO 8601 time"
    if not 1 <= row["_year"] <= 9999:
        return "event_time is outside the years 1-9999"
    return f"event_id {str(row['event_id'])[:40]!r} is not a UUID"
