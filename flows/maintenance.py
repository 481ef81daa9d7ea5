"""Maintenance flow (daily): the lake tables' own operations (``common.lakemaint``),
then the drift reports' retention.

For each lake table: compaction of the hours that closed more than an hour ago
(``optimize.compact``), retention (``delete`` of the partitions dated more than
``INFERSTREAM_LAKE_RETENTION_DAYS`` days before today, UTC), ``vacuum`` of files
unreferenced for ``INFERSTREAM_LAKE_VACUUM_HOURS``, and a checkpoint. All of them are
table commits (or touch only unreferenced files): the landers keep landing meanwhile.

Drift reports (``<model>/<run time>/`` in the reports store, local or ``s3://``:
``flows.report_store``) whose run time is more than ``INFERSTREAM_REPORT_RETENTION_DAYS``
days old are removed, and ``index.html`` is rebuilt from what remains, so it never
links to a removed report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from common import lake, lakemaint
from flows.report_store import ReportStore
from flows.settings import FlowSettings

RUN_DIR_FORMAT = "%Y%m%dT%H%M%S.%fZ"  # flows.drift names a run's folder after its run time


@dataclass
class RetentionResult:
    cutoff: date
    tables: list[lakemaint.MaintenanceResult] = field(default_factory=list)
    removed_reports: list[str] | None = None

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


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=10)
def expired_reports(store: ReportStore, retention_days: int, now: datetime) -> list[str]:
    """Run folders (``<model>/<run>``) older than the retention, by the run time in their
    name (a run still being written has a fresh name, so it is never among them)."""
    cutoff = now - timedelta(days=retention_days)
    out = []
    for rel in store.run_names():
        try:
            run_time = datetime.strptime(rel.rpartition("/")[2], RUN_DIR_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            continue  # not a run folder: leave it
        if run_time < cutoff:
            out.append(rel)
    return out


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=10)
def remove_reports(store: ReportStore, runs: list[str]) -> list[str]:
    """Remove the run folders, then rebuild the index from what remains; where the
    removed runs were."""
    removed = store.remove_runs(runs)
    if store.remote or store.local.exists():
        store.refresh_index()
    return removed


@flow(name="maintenance")
def maintenance_flow(
    retention_days: int | None = None, data_dir: str | None = None, report_retention_days: int | None = None
) -> RetentionResult:
    """Compact closed hours, expire partitions older than ``retention_days``, vacuum and
    checkpoint every lake table, then remove drift reports older than
    ``report_retention_days`` (defaults: the settings)."""
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
    report_days = report_retention_days or settings.report_retention_days
    store = settings.reports()
    result.removed_reports = remove_reports(store, expired_reports(store, report_days, now))
    get_run_logger().info(
        "compacted %d files; retention %d days: %d rows expired; report retention %d days: "
        "removed %d reports",
        result.compacted_files,
        days,
        result.rows_expired,
        report_days,
        len(result.removed_reports),
    )
    return result
