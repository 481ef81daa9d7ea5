"""Maintenance flow (daily): lake compaction, then retention.

Compaction merges each closed hour's committed batch files into one
(``consumers.compaction``: built aside and swapped in atomically under the hour's lock,
which the lander takes too; files not yet committed by the lake group are left alone).
It needs the lake group's committed offsets, so it is skipped, with a warning, when
``KAFKA_BOOTSTRAP_SERVERS`` is not set.

Retention: partitions (``model=*/date=*``) whose date is more than
``INFERSTREAM_LAKE_RETENTION_DAYS`` days before today (UTC) are removed whole. Drift
reports (``reports/<model>/<run time>/``) whose run time is more than
``INFERSTREAM_REPORT_RETENTION_DAYS`` days old are removed, and ``reports/index.html``
is rebuilt from what remains, so it never links to a removed report.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from prefect import flow, get_run_logger, task

from common import lake
from flows import index
from flows.settings import FlowSettings

RUN_DIR_FORMAT = "%Y%m%dT%H%M%S.%fZ"  # flows.drift names a run's folder after its run time


@dataclass
class RetentionResult:
    cutoff: date
    removed: list[str]
    compacted_hours: int = 0
    removed_reports: list[str] | None = None


@task
def compact(lake_dir: Path, bootstrap: str | None, group: str, before: datetime) -> int:
    """Compact the closed hours; returns how many hour directories changed."""
    import asyncio

    from consumers.compaction import committed_offsets, compact_closed_hours

    if not bootstrap:
        get_run_logger().warning("compaction skipped: KAFKA_BOOTSTRAP_SERVERS is not set")
        return 0
    committed = asyncio.run(committed_offsets(bootstrap, group))
    return sum(r.changed for r in compact_closed_hours(lake_dir, committed, before))


@task
def expired_partitions(lake_dir: Path, retention_days: int, today: date) -> list[Path]:
    cutoff = today - timedelta(days=retention_days)
    root = lake.table_dir(lake_dir)
    out = []
    for d in sorted(root.glob("model=*/date=*")):
        try:
            day = date.fromisoformat(d.name.removeprefix("date="))
        except ValueError:
            continue  # not ours: leave it
        if day < cutoff:
            out.append(d)
    return out


@task
def remove(dirs: list[Path]) -> list[str]:
    for d in dirs:
        shutil.rmtree(d)
    return [str(d) for d in dirs]


@task
def expired_reports(reports_root: Path, retention_days: int, now: datetime) -> list[Path]:
    """Run folders older than the retention, by the run time in their name (a run still
    being written has a fresh name, so it is never among them)."""
    cutoff = now - timedelta(days=retention_days)
    out = []
    for d in sorted(p for p in reports_root.glob("*/*") if p.is_dir()):
        try:
            run_time = datetime.strptime(d.name, RUN_DIR_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            continue  # not a run folder: leave it
        if run_time < cutoff:
            out.append(d)
    return out


@task
def remove_reports(reports_root: Path, dirs: list[Path]) -> list[str]:
    """Remove the run folders, then rebuild the index from what remains."""
    for d in dirs:
        shutil.rmtree(d)
    if reports_root.exists():
        index.refresh(reports_root)
    return [str(d) for d in dirs]


@flow(name="maintenance")
def maintenance_flow(
    retention_days: int | None = None, data_dir: str | None = None, report_retention_days: int | None = None
) -> RetentionResult:
    """Compact closed hours, then remove lake partitions older than ``retention_days``
    and drift reports older than ``report_retention_days`` (defaults: the settings)."""
    settings = FlowSettings(**({"data_dir": Path(data_dir)} if data_dir else {}))  # type: ignore[arg-type]
    days = retention_days or settings.lake_retention_days
    now = datetime.now(UTC)
    compacted = compact(
        settings.lake_dir, settings.kafka_bootstrap_servers, settings.lake_group_id, now - timedelta(hours=1)
    )
    today = now.date()
    removed = remove(expired_partitions(settings.lake_dir, days, today))
    report_days = report_retention_days or settings.report_retention_days
    root = settings.reports_root
    removed_reports = remove_reports(root, expired_reports(root, report_days, now))
    get_run_logger().info(
        "compacted %d hours; retention %d days: removed %d partitions; report retention %d days: "
        "removed %d reports",
        compacted,
        days,
        len(removed),
        report_days,
        len(removed_reports),
    )
    return RetentionResult(today - timedelta(days=days), removed, compacted, removed_reports)
