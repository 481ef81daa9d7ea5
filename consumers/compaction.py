"""Compaction: merge one lake hour's small files into one, idempotently, with no moment
at which a reader sees a row twice or not at all.

The lander writes a file per batch and partition, named from the batch's coordinates
(see ``consumers.lake``). For one hour directory, compaction:

1. takes the hour's lock (the lander publishes and removes files only under it);
2. picks the files it may merge: the batch files whose every offset is below the lake
   group's committed offset for that partition (no replay will ever rewrite them),
   and earlier compacted files. Files not yet committed (possible orphans of a crash,
   to be removed and rewritten by the partition's next owner) stay as they are;
3. builds the new directory beside the lake (``<lake>/.compaction/``, outside every
   reader's glob): one ``compacted+<digest>.parquet`` with the merged rows, plus hard
   links of the files it kept; fsyncs it;
4. swaps the two directories in one ``renameat2(RENAME_EXCHANGE)`` call: a reader
   listing the hour sees either every old file or the new set, never both, never
   neither (a query that listed the old files and opens one after the swap fails
   with "file not found" and can be retried; it never returns wrong rows);
5. removes the old directory.

A compacted file's name has no batch coordinates, so the lander's orphan cleanup
(which matches ``topic+incarnation+partition+*``) never touches it, and the rows in
it are all committed, so no replay rewrites them. Running it again on a compacted hour
with nothing new does nothing.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from common import lake
from consumers.lake import fsync_dir
from consumers.lakelock import hour_lock

log = logging.getLogger(__name__)

COMPACTED_PREFIX = "compacted+"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@dataclass(frozen=True)
class CompactionResult:
    hour_dir: Path
    merged_files: int
    kept_files: int
    rows: int

    @property
    def changed(self) -> bool:
        return self.merged_files > 1


def exchange(a: Path, b: Path) -> None:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"renameat2 exchange {a} <-> {b}: {os.strerror(err)}")


def mergeable(path: Path, committed: dict[tuple[str, int], int]) -> bool:
    """A compacted file, or a batch file whose rows are all committed."""
    if path.name.startswith(COMPACTED_PREFIX):
        return True
    coords = lake.parse_file_name(path.name)
    if coords is None:
        return False
    end = committed.get((coords.topic, coords.partition))
    if end is None or coords.first_offset >= end:
        return False
    last = pl.scan_parquet(path).select(pl.col("kafka_offset").max()).collect().item()
    return last is not None and last < end


def compact_hour(lake_dir: Path, hour_dir: Path, committed: dict[tuple[str, int], int]) -> CompactionResult:
    """Compact one hour directory; ``committed`` maps (topic, partition) to the lake
    group's committed offset (topic names as in file names: ``lake.safe_segment``)."""
    staging_root = lake_dir / ".compaction"
    staging_root.mkdir(parents=True, exist_ok=True)
    with hour_lock(hour_dir):
        files = sorted(hour_dir.glob("*.parquet"))
        merge = [f for f in files if mergeable(f, committed)]
        keep = [f for f in files if f not in merge]
        if len(merge) < 2:
            return CompactionResult(hour_dir, 0, len(files), 0)
        digest = hashlib.blake2b("\n".join(f.name for f in merge).encode(), digest_size=8).hexdigest()
        staging = staging_root / uuid.uuid4().hex
        staging.mkdir()
        # hive columns come from the path; the files hold none of them
        frame = pl.concat(
            [pl.read_parquet(f, hive_partitioning=False) for f in merge], how="diagonal_relaxed"
        )
        sort_cols = [c for c in ("event_time", "kafka_partition", "kafka_offset") if c in frame.columns]
        frame = frame.sort(sort_cols)
        out = staging / f"{COMPACTED_PREFIX}{digest}.parquet"
        with open(out, "wb") as fh:
            frame.write_parquet(fh, compression="zstd")
            fh.flush()
            os.fsync(fh.fileno())
        for f in keep:
            os.link(f, staging / f.name)
        fsync_dir(staging)
        exchange(staging, hour_dir)
        fsync_dir(hour_dir.parent)
    shutil.rmtree(staging)  # now the old directory
    log.info(
        "compacted %s: %d files into one (%d rows), %d kept", hour_dir, len(merge), frame.height, len(keep)
    )
    return CompactionResult(hour_dir, len(merge), len(keep), frame.height)


def hour_dirs(lake_dir: Path, table: str = lake.EVENTS_TABLE) -> list[Path]:
    root = lake.table_dir(lake_dir, table)
    return sorted(p for p in root.glob("model=*/date=*/hour=*") if p.is_dir())


async def committed_offsets(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    """The group's committed offsets, keyed as file names spell topics."""
    from aiokafka import TopicPartition

    from common.topics import start_admin

    admin = await start_admin(bootstrap)
    try:
        topics = [t for t in await admin.list_topics() if not t.startswith("__")]
        parts = [
            TopicPartition(t["topic"], p["partition"])
            for t in await admin.describe_topics(topics)
            for p in t["partitions"]
        ]
        offsets = await admin.list_consumer_group_offsets(group, partitions=parts)
    finally:
        await admin.close()
    return {
        (lake.safe_segment(tp.topic), tp.partition): meta.offset
        for tp, meta in offsets.items()
        if meta is not None and meta.offset >= 0
    }


def hour_end(hour_dir: Path) -> datetime:
    date = hour_dir.parent.name.removeprefix("date=")
    hour = int(hour_dir.name.removeprefix("hour="))
    return datetime.fromisoformat(date).replace(hour=hour, tzinfo=UTC) + timedelta(hours=1)


def compact_closed_hours(
    lake_dir: Path, committed: dict[tuple[str, int], int], before: datetime
) -> list[CompactionResult]:
    """Compact every hour directory that ended at or before ``before`` (an hour still
    being written gains nothing from compaction and races the lander for its lock)."""
    return [compact_hour(lake_dir, d, committed) for d in hour_dirs(lake_dir) if hour_end(d) <= before]
