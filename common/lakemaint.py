"""Lake maintenance with the table format's own operations (delta-rs), safe while the
landers write:

- :func:`compact`: ``optimize.compact`` merges each closed hour partition's small
  files into files of ``target_size``; it is a commit that removes and adds files
  (the rows and their offsets are unchanged). A lander's append that races it is not
  a conflict (delta-rs rebases appends over a compaction), and readers see the
  snapshot before or after it, never a mix;
- :func:`expire`: ``delete`` of the partitions older than the retention (by date);
- :func:`vacuum`: removes the data files no snapshot within ``retention_hours``
  references (compacted-away, expired, or written by a lander that crashed before its
  commit);
- :func:`checkpoint`: writes a checkpoint and drops log entries past the table's log
  retention, so opening the table reads one checkpoint and a few commits however long
  it has been written.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

from common import lake

log = logging.getLogger(__name__)

TARGET_FILE_BYTES = 128 * 1024 * 1024


@dataclass
class MaintenanceResult:
    table: str
    version_before: int
    version_after: int
    files_removed: int = 0  # by compaction
    files_added: int = 0
    rows_expired: int = 0
    files_vacuumed: int = 0
    notes: list[str] = field(default_factory=list)


def compact(
    where: lake.Lake | Path | str, table: str, before: datetime, target_size: int = TARGET_FILE_BYTES
) -> tuple[int, int]:
    """Compact the hour partitions that ended at or before ``before`` (an hour still
    being written would be compacted again and again); (files removed, files added)."""
    dt = lake.location(where).open(table)
    if dt is None:
        return 0, 0
    import pyarrow as pa

    actions = pa.table(dt.get_add_actions(flatten=True)).to_pylist()
    removed = added = 0
    closed = [
        p
        for p in dt.partitions()
        if datetime.fromisoformat(f"{p['date']}T{int(p['hour']):02d}:00:00+00:00").timestamp() + 3600
        <= before.timestamp()
    ]
    for part in closed:
        filters = [(k, "=", str(v)) for k, v in part.items()]
        files = [f for f in actions if _in(f, part)]
        if len(files) < 2:
            continue
        metrics = dt.optimize.compact(partition_filters=filters, target_size=target_size)
        removed += int(metrics.get("numFilesRemoved", 0))
        added += int(metrics.get("numFilesAdded", 0))
    return removed, added


def _in(action: Mapping[str, object], part: Mapping[str, object]) -> bool:
    return all(str(action.get(f"partition.{k}")) == str(v) for k, v in part.items())


def expire(where: lake.Lake | Path | str, table: str, cutoff: date) -> int:
    """Delete the partitions dated before ``cutoff``; rows deleted."""
    dt = lake.location(where).open(table)
    if dt is None:
        return 0
    metrics = dt.delete(f"date < '{cutoff.isoformat()}'")
    return int(metrics.get("num_deleted_rows", 0))


def vacuum(where: lake.Lake | Path | str, table: str, retention_hours: int) -> int:
    """Remove files unreferenced for ``retention_hours``; how many were removed. Keep
    it above the longest read a user runs (a reader of an old snapshot needs its files)."""
    place = lake.location(where)
    dt = place.open(table)
    if dt is None:
        return 0
    # delta-rs lists every expired tombstone, also those whose file a previous vacuum
    # already removed (they stay in the log until the tombstone retention drops them), and
    # a vacuum commits twice to the log: count only files still there, and vacuum only
    # when there is one
    stale = dt.vacuum(retention_hours=retention_hours, dry_run=True, enforce_retention_duration=False)
    present = _present(place, table, stale)
    if not present:
        return 0
    dt.vacuum(retention_hours=retention_hours, dry_run=False, enforce_retention_duration=False)
    return len(present)


def _present(place: lake.Lake, table: str, paths: list[str]) -> list[str]:
    """Those of ``paths`` (relative to the table's root) that exist in its storage."""
    if not paths:
        return []
    import pyarrow.fs as pafs
    from deltalake.fs import DeltaStorageHandler

    fs = pafs.PyFileSystem(DeltaStorageHandler(place.uri(table), place.options()))
    infos = fs.get_file_info(paths)
    return [i.path for i in infos if i.type != pafs.FileType.NotFound]


def checkpoint(where: lake.Lake | Path | str, table: str) -> None:
    dt = lake.location(where).open(table)
    if dt is None:
        return
    dt.create_checkpoint()
    dt.cleanup_metadata()


def maintain(
    where: lake.Lake | Path | str,
    table: str,
    *,
    compact_before: datetime,
    expire_before: date | None,
    vacuum_hours: int,
) -> MaintenanceResult | None:
    """Compaction, retention, vacuum and a checkpoint, in that order."""
    dt = lake.location(where).open(table)
    if dt is None:
        return None
    result = MaintenanceResult(table, dt.version(), dt.version())
    result.files_removed, result.files_added = compact(where, table, compact_before)
    if expire_before is not None:
        result.rows_expired = expire(where, table, expire_before)
    from common.lakemigrate import unmigrated_dirs

    old = unmigrated_dirs(lake.location(where), table)
    if old:  # vacuum would delete the old layout's files, unreferenced by the table
        result.notes.append(
            f"vacuum skipped: {len(old)} old-layout directories not migrated (inferstream lake migrate)"
        )
    else:
        result.files_vacuumed = vacuum(where, table, vacuum_hours)
    checkpoint(where, table)
    result.version_after = lake.location(where).open(table).version()  # type: ignore[union-attr]
    log.info("maintained %s", result)
    return result
