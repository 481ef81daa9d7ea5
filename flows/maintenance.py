"""Maintenance flow (daily): the lake tables' own operations (``common.lakemaint``).

For each lake table: compaction of the hours that closed more than an hour ago
(``optimize.compact``), retention (``delete`` of the partitions dated more than
``INFERSTREAM_LAKE_RETENTION_DAYS`` days before today, UTC), ``vacuum`` of files
unreferenced for ``INFERSTREAM_LAKE_VACUUM_HOURS``, and a checkpoint. All of them are
table commits (or touch only unreferenced files): the landers keep landing meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from prefect import flow, get_run_logger, task

from common import lake, lakemaint
from flows.settings import FlowSettings


@dataclass
class RetentionResult:
    cutoff: date
    tables: list[lakemaint.MaintenanceResult] = field(default_factory=list)

    @property
    def compacted_files(self) -> int:
        return sum(t.files_removed for t in self.tables)

    @property
    def rows_expired(self) -> int:
        return sum(t.rows_expired for t in self.tables)


@task
def maintain_table(
    where: lake.Lake, table: str, compact_before: datetime, cutoff: date, vacuum_hours: int
) -> lakemaint.MaintenanceResult | None:
    return lakemaint.maintain(
        where, table, compact_before=compact_before, expire_before=cutoff, vacuum_hours=vacuum_hours
    )


@flow(name="maintenance")
def maintenance_flow(retention_days: int | None = None, data_dir: str | None = None) -> RetentionResult:
    """Compact closed hours, expire partitions older than ``retention_days`` (default:
    the setting), vacuum and checkpoint every lake table."""
    settings = FlowSettings(**({"data_dir": Path(data_dir)} if data_dir else {}))  # type: ignore[arg-type]
    days = retention_days or settings.lake_retention_days
    now = datetime.now(UTC)
    cutoff = now.date() - timedelta(days=days)
    result = RetentionResult(cutoff)
    for table in lake.TABLES:
        done = maintain_table(
            settings.lake(), table, now - timedelta(hours=1), cutoff, settings.lake_vacuum_hours
        )
        if done is not None:
            result.tables.append(done)
    get_run_logger().info(
        "compacted %d files; retention %d days: %d rows expired",
        result.compacted_files,
        days,
        result.rows_expired,
    )
    return result
