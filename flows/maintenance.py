"""Maintenance flow (daily): lake retention.

Partitions (``model=*/date=*``) whose date is more than ``INFERSTREAM_LAKE_RETENTION_DAYS``
days before today (UTC) are removed whole. Compaction of small files belongs to the
lake writer (consumers/); this flow does not rewrite files another process may be
writing.
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
    """Remove lake partitions older than ``retention_days`` (default: the setting)."""
    settings = FlowSettings(**({"data_dir": Path(data_dir)} if data_dir else {}))  # type: ignore[arg-type]
    days = retention_days or settings.lake_retention_days
    today = datetime.now(UTC).date()
    removed = remove(expired_partitions(settings.lake_dir, days, today))
    get_run_logger().info("retention %d days: removed %d partitions", days, len(removed))
    return RetentionResult(today - timedelta(days=days), removed)
