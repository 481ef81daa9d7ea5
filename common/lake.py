"""Layout of the Parquet lake, shared by the writer (consumers) and the readers (flows,
demo, CLI).

    <lake>/inference_events/model=<name>/date=<YYYY-MM-DD>/hour=<HH>/
        <topic>+<incarnation>+<partition>+<first offset, 20 digits>.parquet

A file is named from the coordinates of the consumed batch that produced it: a replay
of the same batch rewrites the same name. ``incarnation`` tells apart two lives of a
topic with the same name (offsets restart at 0 when a topic is re-created). Files
being written end in ``.tmp`` and are never matched by readers' ``*.parquet`` globs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

EVENTS_TABLE = "inference_events"
TMP_SUFFIX = ".tmp"
HIVE_TYPES_SQL = "{'model': VARCHAR, 'date': DATE, 'hour': INTEGER}"

_SAFE = re.compile(r"[^A-Za-z0-9._-]")
_FILE_RE = re.compile(r"^(?P<topic>.+)\+(?P<inc>[0-9a-f]+)\+(?P<partition>\d+)\+(?P<first>\d{20})\.parquet$")


def safe_segment(value: str) -> str:
    """A value usable as a hive partition directory name."""
    return _SAFE.sub("_", value) or "_"


def table_dir(lake_dir: Path, table: str = EVENTS_TABLE) -> Path:
    return lake_dir / table


def partition_dir(lake_dir: Path, model: str, event_time: datetime, table: str = EVENTS_TABLE) -> Path:
    return (
        table_dir(lake_dir, table)
        / f"model={safe_segment(model)}"
        / f"date={event_time:%Y-%m-%d}"
        / f"hour={event_time:%H}"
    )


def file_name(topic: str, incarnation: str, partition: int, first_offset: int) -> str:
    return f"{safe_segment(topic)}+{incarnation}+{partition}+{first_offset:020d}.parquet"


@dataclass(frozen=True)
class FileCoords:
    topic: str
    incarnation: str
    partition: int
    first_offset: int


def parse_file_name(name: str) -> FileCoords | None:
    m = _FILE_RE.match(name)
    if not m:
        return None
    return FileCoords(m["topic"], m["inc"], int(m["partition"]), int(m["first"]))


def parquet_glob(lake_dir: Path, table: str = EVENTS_TABLE) -> str:
    return str(table_dir(lake_dir, table) / "**" / "*.parquet")


def duckdb_source(lake_dir: Path, table: str = EVENTS_TABLE) -> str:
    """A DuckDB table expression over the lake with explicit hive types (without them,
    ``hour=03`` is read as text and ``hour = 3`` matches nothing)."""
    glob = parquet_glob(lake_dir, table).replace("'", "''")
    return (
        f"read_parquet('{glob}', hive_partitioning = true, "
        f"hive_types = {HIVE_TYPES_SQL}, union_by_name = true)"
    )


def has_files(lake_dir: Path, table: str = EVENTS_TABLE) -> bool:
    root = table_dir(lake_dir, table)
    return root.exists() and any(root.rglob("*.parquet"))
