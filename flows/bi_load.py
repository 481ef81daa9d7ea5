"""BI load flow: lake → warehouse, incremental and idempotent.

The watermark is the set of the events table's data files already loaded (path, size,
modification time) kept in the warehouse itself (``bi_loaded_files``). Delta never
rewrites a file in place: a commit or a compaction adds new files. A run lists the live
files of the table's current snapshot, reloads the whole (model, hour) partition of
each file not loaded yet (events replaced by event id, hourly
aggregates and feature statistics replaced by their keys) and records the files, all
in one transaction per partition: a crash mid-run repeats at most that partition, and
a re-run with nothing new loads nothing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from common import lake
from flows import bi_aggregates as agg
from flows.quality import read_feedback
from flows.report_store import ReportStore
from flows.settings import FlowSettings
from warehouse import dashboard, tables
from warehouse.backends import open_warehouse
from warehouse.base import Warehouse
from warehouse.settings import WarehouseSettings

Partition = tuple[str, date, int]  # model (as in the table), date, hour
LakeFile = tuple[str, int, int]  # path, size, modification time (ms)

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

    def describe(self) -> str:
        """One sentence for people (the CLI and the flow's log)."""
        return (
            f"loaded {self.files_loaded} new lake file(s) in {self.partitions} partition(s): "
            f"{self.event_rows} events, {self.feedback_rows} labels, {self.quality_rows} daily "
            f"accuracy rows; dashboard {self.dashboard}"
        )


def partition_hour(part: Partition) -> datetime:
    _, day, hour = part
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def live_files(where: lake.Lake | Path | str) -> dict[Partition, list[LakeFile]]:
    """The events table's live data files by partition (empty: no table yet)."""
    dt = lake.location(where).open(lake.EVENTS_TABLE)
    if dt is None:
        return {}
    actions = pa.table(dt.get_add_actions(flatten=True)).to_pylist()
    out: dict[Partition, list[LakeFile]] = defaultdict(list)
    for a in actions:
        part = (a["partition.model"], a["partition.date"], int(a["partition.hour"]))
        mtime = a["modification_time"]
        ms = int(mtime.timestamp() * 1000) if isinstance(mtime, datetime) else int(mtime)
        out[part].append((a["path"], int(a["size_bytes"]), ms))
    return dict(out)


@task(cache_policy=NO_CACHE)
def pending_partitions(wh: Warehouse, where: lake.Lake | Path | str) -> dict[Partition, list[LakeFile]]:
    """Partitions with at least one live file not loaded yet."""
    loaded = {
        p: (size, mtime)
        for p, size, mtime in wh.query(
            f"SELECT path, size, mtime_ns FROM {tables.LOADED_FILES.qualified(wh.schema)}"
        )
    }
    return {
        part: files
        for part, files in live_files(where).items()
        if any(loaded.get(path) != (size, mtime) for path, size, mtime in files)
    }


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def load_partition(
    wh: Warehouse, where: lake.Lake | Path | str, part: Partition, files: list[LakeFile]
) -> int:
    """Replace one partition's events and aggregates; record its files as loaded."""
    df = agg.read_partition(where, *part)
    hour = partition_hour(part)
    now = datetime.now(UTC)
    loaded = pl.DataFrame(
        {
            "path": [f[0] for f in files],
            "size": [f[1] for f in files],
            "mtime_ns": [f[2] for f in files],
            "loaded_at": [now] * len(files),
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
def load_feedback_and_quality(wh: Warehouse, where: lake.Lake | Path | str) -> tuple[int, int]:
    """Ground truth by prediction id, and daily accuracy of the predictions it labels."""
    fb = read_feedback(where, with_time=True)
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


@task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[2, 10, 30])
def store_dashboard(store: ReportStore, path: Path) -> str:
    """The dashboard beside the reports (``flows.report_store``: uploaded when they are in
    object storage); where it is kept."""
    return store.publish_file(path)


def load_once(wh: Warehouse, where: lake.Lake | Path | str) -> BiLoadResult:
    """One incremental load (the flow's body; also callable from tests and the demo)."""
    pending = pending_partitions(wh, where)
    rows = 0
    for part in sorted(pending):
        rows += load_partition(wh, where, part, pending[part])
    fb, q = load_feedback_and_quality(wh, where)
    return BiLoadResult(sum(len(v) for v in pending.values()), len(pending), rows, fb, q)


@flow(name="bi-load")
def bi_load_flow(data_dir: str | None = None) -> BiLoadResult:
    """Load new lake files into the warehouse (INFERSTREAM_WAREHOUSE_BACKEND);
    ``data_dir`` overrides INFERSTREAM_DATA_DIR."""
    override = {"data_dir": Path(data_dir)} if data_dir else {}
    settings = FlowSettings(**override)  # type: ignore[arg-type]
    store = settings.reports()  # a malformed REPORTS_URL fails before the load
    wh = open_warehouse(WarehouseSettings(**override))  # type: ignore[arg-type]
    try:
        result = load_once(wh, settings.lake())
        result.dashboard = write_dashboard(wh, store.local / "dashboard.html")
        store_dashboard(store, result.dashboard)
    finally:
        wh.close()
    get_run_logger().info("BI load: %s", result.describe())
    return result


def run_bi_load(data_dir: Path | None = None) -> BiLoadResult:
    """Run the BI load flow once (the demo calls this at its end)."""
    return bi_load_flow(data_dir=str(data_dir) if data_dir else None)
