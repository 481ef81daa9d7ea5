"""BI load flow: lake → warehouse, incremental and idempotent.

The watermark is the set of lake files already loaded (path, size, mtime) kept in the
warehouse itself (``bi_loaded_files``). A run finds new or rewritten files, reloads the
whole (model, hour) partition each belongs to (events replaced by event id, hourly
aggregates and feature statistics replaced by their keys) and records the files, all
in one transaction per partition: a crash mid-run repeats at most that partition, and
a re-run with nothing new loads nothing.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from common import lake
from flows import bi_aggregates as agg
from flows.quality import read_feedback
from flows.settings import FlowSettings
from warehouse import dashboard, tables
from warehouse.base import Warehouse, open_warehouse
from warehouse.settings import WarehouseSettings

_PART_RE = re.compile(r"date=(\d{4}-\d{2}-\d{2})/hour=(\d{1,2})$")

DAILY_QUALITY_SQL = """
SELECT e.model_name, e.model_version, CAST(e.event_time AS DATE) AS day,
       count(*) AS labelled,
       avg(CASE WHEN e.prediction = f.label THEN 1.0 ELSE 0.0 END) AS accuracy
FROM {s}.inference_events e JOIN {s}.feedback f ON e.event_id = f.event_id
WHERE e.status = 'ok' AND NOT e.synthetic
GROUP BY 1, 2, 3
"""


@dataclass
class BiLoadResult:
    files_loaded: int
    partitions: int
    event_rows: int
    feedback_rows: int
    quality_rows: int
    dashboard: Path | None = None


def partition_hour(part_dir: Path) -> datetime:
    m = _PART_RE.search(part_dir.as_posix())
    if not m:
        raise ValueError(f"{part_dir} is not a lake partition (date=YYYY-MM-DD/hour=HH)")
    return datetime.fromisoformat(m[1]).replace(hour=int(m[2]), tzinfo=UTC)


@task(cache_policy=NO_CACHE)
def pending_partitions(wh: Warehouse, lake_dir: Path) -> dict[Path, list[Path]]:
    """Partitions with at least one file not loaded yet (or rewritten since)."""
    loaded = {
        p: (size, mtime)
        for p, size, mtime in wh.query(
            f"SELECT path, size, mtime_ns FROM {tables.LOADED_FILES.qualified(wh.schema)}"
        )
    }
    pending: dict[Path, list[Path]] = defaultdict(list)
    root = lake.table_dir(lake_dir)
    if not root.exists():
        return {}
    for f in sorted(root.rglob("*.parquet")):
        st = f.stat()
        if loaded.get(str(f)) != (st.st_size, st.st_mtime_ns):
            pending[f.parent].append(f)
    return dict(pending)


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def load_partition(wh: Warehouse, part_dir: Path) -> int:
    """Replace one partition's events and aggregates; record its files as loaded."""
    files = sorted(part_dir.glob("*.parquet"))
    stats = [(f, f.stat()) for f in files]
    df = agg.read_partition_files(files)
    hour = partition_hour(part_dir)
    now = datetime.now(UTC)
    loaded = pl.DataFrame(
        {
            "path": [str(f) for f, _ in stats],
            "size": [st.st_size for _, st in stats],
            "mtime_ns": [st.st_mtime_ns for _, st in stats],
            "loaded_at": [now] * len(stats),
        },
        schema_overrides={"loaded_at": pl.Datetime("us", "UTC")},
    )
    with wh.transaction():
        n = wh.upsert(tables.EVENTS.name, agg.events_rows(df))
        wh.upsert(tables.EVENT_FEATURES.name, agg.feature_value_rows(df))
        wh.upsert(tables.EVENT_SCORES.name, agg.score_rows(df))
        wh.upsert(tables.HOURLY.name, agg.hourly_rows(df, hour))
        wh.upsert(tables.PREDICTION_MIX.name, agg.prediction_mix_rows(df, hour))
        wh.upsert(tables.FEATURE_STATS.name, agg.feature_rows(df, hour))
        wh.upsert(tables.LOADED_FILES.name, loaded)
    return n


@task(cache_policy=NO_CACHE)
def load_feedback_and_quality(wh: Warehouse, lake_dir: Path) -> tuple[int, int]:
    """Ground truth by prediction id, and daily accuracy of the predictions it labels."""
    fb = read_feedback(lake_dir, with_time=True)
    if fb.is_empty():
        return 0, 0
    with wh.transaction():
        wh.upsert(tables.FEEDBACK.name, fb)
        q = wh.frame(DAILY_QUALITY_SQL.format(s=wh.schema))
        if not q.is_empty():
            q = q.with_columns(pl.col("labelled").cast(pl.Int64), pl.col("accuracy").cast(pl.Float64))
            wh.upsert(tables.DAILY_QUALITY.name, q)
    return fb.height, q.height


@task(cache_policy=NO_CACHE)
def write_dashboard(wh: Warehouse, path: Path) -> Path:
    """``reports/dashboard.html`` from the views just loaded (``warehouse.dashboard``)."""
    return dashboard.write(wh, path)


def load_once(wh: Warehouse, lake_dir: Path) -> BiLoadResult:
    """One incremental load (the flow's body; also callable from tests and the demo)."""
    pending = pending_partitions(wh, lake_dir)
    rows = 0
    for part in sorted(pending):
        rows += load_partition(wh, part)
    fb, q = load_feedback_and_quality(wh, lake_dir)
    return BiLoadResult(sum(len(v) for v in pending.values()), len(pending), rows, fb, q)


@flow(name="bi-load")
def bi_load_flow(data_dir: str | None = None) -> BiLoadResult:
    """Load new lake files into the warehouse (INFERSTREAM_WAREHOUSE_BACKEND);
    ``data_dir`` overrides INFERSTREAM_DATA_DIR."""
    override = {"data_dir": Path(data_dir)} if data_dir else {}
    settings = FlowSettings(**override)  # type: ignore[arg-type]
    wh = open_warehouse(WarehouseSettings(**override))  # type: ignore[arg-type]
    try:
        result = load_once(wh, settings.lake_dir)
        result.dashboard = write_dashboard(wh, settings.reports_root / "dashboard.html")
    finally:
        wh.close()
    get_run_logger().info("BI load: %s", result)
    return result


def run_bi_load(data_dir: Path | None = None) -> BiLoadResult:
    """Run the BI load flow once (the demo calls this at its end)."""
    return bi_load_flow(data_dir=str(data_dir) if data_dir else None)
