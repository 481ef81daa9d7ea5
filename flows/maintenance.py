"""Maintenance flow (daily): lake compaction, then retention.

Compaction merges each closed hour's committed batch files into one
(``consumers.compaction``: built aside and swapped in atomically under the hour's lock,
which the lander takes too; files not yet committed by the lake group are left alone).
It needs the lake group's committed offsets, so it is skipped, with a warning, when
``KAFKA_BOOTSTRAP_SERVERS`` is not set.

Retention: partitions (``model=*/date=*``) whose date is more than
``INFERSTREAM_LAKE_RETENTION_DAYS`` days before today (UTC) are removed whole.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from prefect import flow, get_run_logger, task

from common import lake
from flows.settings import FlowSettings


@dataclass
class RetentionResult:
    cutoff: date
    removed: list[str]
    compacted_hours: int = 0


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


@flow(name="maintenance")
def maintenance_flow(retention_days: int | None = None, data_dir: str | None = None) -> RetentionResult:
    """Compact closed hours, then remove lake partitions older than ``retention_days``
    (default: the setting)."""
    settings = FlowSettings(**({"data_dir": Path(data_dir)} if data_dir else {}))  # type: ignore[arg-type]
    days = retention_days or settings.lake_retention_days
    now = datetime.now(UTC)
    compacted = compact(
        settings.lake_dir, settings.kafka_bootstrap_servers, settings.lake_group_id, now - timedelta(hours=1)
    )
    today = now.date()
    removed = remove(expired_partitions(settings.lake_dir, days, today))
    get_run_logger().info(
        "compacted %d hours; retention %d days: removed %d partitions", compacted, days, len(removed)
    )
    return RetentionResult(today - timedelta(days=days), removed, compacted)
