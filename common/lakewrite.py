"""Append a consumed batch to a lake table, exactly once, in one atomic Delta commit.

The commit carries, beside the rows, one Delta *application transaction* per Kafka
partition of the batch: ``app_id`` names the consumer group, topic, partition and the
topic's incarnation (:func:`incarnation_of`), ``version`` is the next
offset to consume. The table is therefore the source of truth for progress (the
design of delta-io's kafka-delta-ingest): a lander resumes at
:func:`next_offsets`, and a commit is checked against the snapshot it is made on:

- rows at offsets the table already has (a replay, or a second lander that landed the
  same records after a rebalance) are dropped before writing;
- rows whose ``event_id`` is already in the table are dropped (the same event written
  several times to the topic: the publisher's retry after a timeout, a spool replay).
  Events are keyed by their id, so every copy is in one Kafka partition, owned by one
  lander at a time; copies are looked up among the table's rows of the touched
  partitions (model, date, hour) within the batch's event-time range (copies carry
  the event's own time; file statistics prune the rest);
- if another writer committed a transaction for one of the same ``app_id``s after the
  snapshot was read, delta-rs fails the commit (``CommitFailedError``, a concurrent
  transaction); it is retried on a fresh snapshot, which drops what the other writer
  landed. Commits of other partitions are not conflicts: delta-rs rebases appends.

A crash before the commit leaves only unreferenced data files (``vacuum`` removes
them); after it, the rows and their offsets are in the table together.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl
import pyarrow as pa
from aiokafka import ConsumerRecord

from common.errors import DependencyUnavailable
from common.lake import PARTITION_BY, Lake

if TYPE_CHECKING:
    from deltalake import DeltaTable, Transaction

log = logging.getLogger(__name__)

# Defaults of every lake table: transactions of topic incarnations not written for a
# month are dropped from the log (offsets of a re-created topic accumulate otherwise);
# old log entries beyond a week are cleaned at checkpoints.
TABLE_CONFIG = {
    "delta.setTransactionRetentionDuration": "interval 30 days",
    "delta.logRetentionDuration": "interval 7 days",
}
MAX_ATTEMPTS = 30


def incarnation_of(first: ConsumerRecord[bytes, bytes]) -> str:
    """A stable id for one life of a topic partition, from its earliest record."""
    h = hashlib.blake2b(digest_size=6)
    h.update(str(first.offset).encode())
    h.update(str(first.timestamp).encode())
    h.update(first.key or b"")
    h.update(first.value or b"")
    return h.hexdigest()


def app_id(group: str, topic: str, partition: int, incarnation: str) -> str:
    return f"{group}/{topic}/{partition}/{incarnation}"


@dataclass(frozen=True)
class PartitionBatch:
    """One Kafka partition's part of a batch: its rows carry ``kafka_partition``."""

    app_id: str
    kafka_partition: int
    next_offset: int


@dataclass
class CommitResult:
    version: int | None  # the table version written, None if nothing was committed
    rows: int  # rows written
    replayed: int  # rows dropped: their offsets were already in the table
    duplicates: int  # rows dropped: their event id was in the batch or the table already
    attempts: int


def next_offsets(lake: Lake, table: str, app_ids: Mapping[str, object]) -> dict[object, int | None]:
    """What the table says about each ``app_id`` (keyed as given): the next offset to
    consume, or None when the table has never seen it."""
    dt = lake.open(table)
    return {key: (None if dt is None else dt.transaction_version(a)) for a, key in app_ids.items()}


def commit_batch(
    lake: Lake,
    table: str,
    frame: pl.DataFrame | None,
    parts: list[PartitionBatch],
    *,
    time_column: str,
    key: str | None = "event_id",
) -> CommitResult:
    """Append ``frame`` (rows of ``parts``, with ``kafka_partition``, ``kafka_offset``
    and the partition columns) and the parts' next offsets in one commit."""
    from deltalake import CommitProperties, WriterProperties, write_deltalake
    from deltalake.exceptions import CommitFailedError

    uri = lake.uri(table)
    in_batch = 0
    if frame is not None and key is not None and frame[key].n_unique() < frame.height:
        before = frame.height
        frame = frame.unique(subset=key, keep="first", maintain_order=True)
        in_batch = before - frame.height
    delay = 0.05
    for attempt in range(1, MAX_ATTEMPTS + 1):
        dt = lake.open(table)
        rows, txns, replayed = _not_committed(dt, frame, parts)
        if not txns:
            return CommitResult(None, 0, replayed, 0, attempt)
        duplicates = in_batch
        if dt is not None and rows is not None and rows.height and key is not None:
            rows, landed = not_landed(dt, rows, key, time_column)
            duplicates += landed
        if rows is None or not rows.height:
            if dt is None:
                # nothing to land and no table to hold the offsets: the group's commit
                # (a hint) covers these records; a replay lands nothing from them either
                return CommitResult(None, 0, replayed, duplicates, attempt)
            data = pa.schema(dt.schema().to_arrow()).empty_table()
        else:
            data = rows.to_arrow(compat_level=pl.CompatLevel.oldest())
        try:
            write_deltalake(
                dt if dt is not None else uri,
                data,
                mode="append",
                partition_by=PARTITION_BY,
                schema_mode="merge",
                storage_options=None if dt is not None else lake.options(),
                configuration=TABLE_CONFIG if dt is None else None,
                writer_properties=WriterProperties(compression="ZSTD"),
                commit_properties=CommitProperties(app_transactions=txns),
            )
        except CommitFailedError as exc:
            # another writer committed the same partition's offsets, or created the table
            log.info("lake commit conflict table=%s attempt=%d: %s", table, attempt, exc)
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
            continue
        except OSError as exc:
            raise DependencyUnavailable(f"lake table {uri}: {exc}") from exc
        n = 0 if rows is None else rows.height
        # a DeltaTable passed to write_deltalake is updated to the version it wrote
        return CommitResult(dt.version() if dt is not None else 0, n, replayed, duplicates, attempt)
    raise DependencyUnavailable(f"lake table {uri}: {MAX_ATTEMPTS} commit attempts conflicted")


def _not_committed(
    dt: DeltaTable | None, frame: pl.DataFrame | None, parts: list[PartitionBatch]
) -> tuple[pl.DataFrame | None, list[Transaction], int]:
    """The rows of ``frame`` whose offsets the table has not committed yet, the
    transactions (next offsets) still to commit, and how many rows were dropped as replayed."""
    from deltalake import Transaction

    rows, txns, replayed = frame, [], 0
    for part in parts:
        done = None if dt is None else dt.transaction_version(part.app_id)
        if done is not None and done >= part.next_offset:
            mine = pl.col("kafka_partition") == part.kafka_partition
        elif done is not None:
            mine = (pl.col("kafka_partition") == part.kafka_partition) & (pl.col("kafka_offset") < done)
        else:
            mine = None
        if done is None or done < part.next_offset:
            txns.append(Transaction(part.app_id, part.next_offset))
        if mine is not None and rows is not None and rows.height:
            before = rows.height
            rows = rows.filter(~mine)
            replayed += before - rows.height
    return rows, txns, replayed


def not_landed(dt: DeltaTable, rows: pl.DataFrame, key: str, time_column: str) -> tuple[pl.DataFrame, int]:
    """``rows`` without those whose ``key`` the table holds already, and how many those were
    (``rows`` carry the partition columns; a copy of a row is in the same partition)."""
    landed = _landed_keys(dt, rows, key, time_column)
    if not landed.len():
        return rows, 0
    kept = rows.filter(~pl.col(key).is_in(landed))
    return kept, rows.height - kept.height


def _landed_keys(dt: object, rows: pl.DataFrame, key: str, time_column: str) -> pl.Series:
    """Keys of ``rows`` already in the table, looked up where copies can be: the same
    (model, date, hour) partitions and event-time range."""
    import pyarrow.dataset as pads

    touched = rows.select(PARTITION_BY).unique()
    parts = None
    for model, day, hour in touched.iter_rows():
        cond = (pads.field("model") == model) & (pads.field("date") == day) & (pads.field("hour") == hour)
        parts = cond if parts is None else parts | cond
    lo, hi = rows[time_column].min(), rows[time_column].max()
    flt = parts & (pads.field(time_column) >= lo) & (pads.field(time_column) <= hi)
    flt = flt & pads.field(key).isin(rows[key].to_arrow().cast(pa.string()))
    found = dt.to_pyarrow_dataset().to_table(columns=[key], filter=flt)  # type: ignore[attr-defined]
    return pl.Series(key, found.column(key).to_pylist(), pl.String)
