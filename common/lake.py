"""The lake: one Delta Lake table per stream (delta-rs), under one storage URL.

    <lake url>/inference_events/    partitioned by model, date, hour (of event_time)
    <lake url>/inference_feedback/  partitioned by model, date, hour (of feedback_time)
    <lake url>/drift_episodes/      partitioned by model, date, hour (of alerted_at)

The URL is ``file:///abs/dir`` (or a plain path; the default is ``<data dir>/lake``) or
``s3://bucket/prefix`` with ``storage_options`` (endpoint, region, credentials, see
``common.settings``). Every write is one atomic table commit; readers see whole
commits only. Partition values: ``model`` is the model name made path-safe
(:func:`safe_segment`), ``date`` a DATE, ``hour`` an INTEGER (0-23); a window read
filters on them and delta-rs prunes the files, then the per-file min/max statistics of
``event_time`` prune inside a partition.

Readers go through :func:`dataset` (a pyarrow dataset of the current snapshot: DuckDB
and polars scan it with filter and projection push-down) or :func:`register_duckdb`.
No DuckDB extension is needed (none can be downloaded at run time here, and the
``duckdb-extension-delta`` wheels on PyPI lag the DuckDB we use).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

if TYPE_CHECKING:
    import duckdb
    import pyarrow.dataset as pads
    from deltalake import DeltaTable

EVENTS_TABLE = "inference_events"
FEEDBACK_TABLE = "inference_feedback"
EPISODES_TABLE = "drift_episodes"  # the streaming drift monitor's episode alerts
TABLES = (EVENTS_TABLE, FEEDBACK_TABLE, EPISODES_TABLE)
PARTITION_BY = ["model", "date", "hour"]

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_segment(value: str) -> str:
    """A model name as a partition value (path-safe everywhere, S3 included)."""
    return _SAFE.sub("_", value) or "_"


@dataclass(frozen=True)
class Lake:
    """Where the lake's tables live: a root URL and the object store's options."""

    root: str
    storage_options: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_local(self) -> bool:
        return urlparse(self.root).scheme in ("", "file")

    @property
    def local_root(self) -> Path:
        """The root directory of a ``file://`` lake (ValueError for object storage)."""
        parsed = urlparse(self.root)
        if parsed.scheme not in ("", "file"):
            raise ValueError(f"{self.root} is not a local lake")
        return Path(parsed.path if parsed.scheme else self.root)

    def uri(self, table: str) -> str:
        if self.is_local:
            return str(self.local_root / table)
        return self.root.rstrip("/") + "/" + table

    def options(self) -> dict[str, str] | None:
        return dict(self.storage_options) or None

    def open(self, table: str) -> DeltaTable | None:
        """The table's latest snapshot, or None when nothing was ever committed to it."""
        from deltalake import DeltaTable

        uri = self.uri(table)
        if not DeltaTable.is_deltatable(uri, storage_options=self.options()):
            return None
        return DeltaTable(uri, storage_options=self.options())

    def __str__(self) -> str:
        return self.root


def location(where: Lake | Path | str) -> Lake:
    """A :class:`Lake` from a Lake, a local directory or a URL."""
    if isinstance(where, Lake):
        return where
    if isinstance(where, Path):
        return Lake(str(where.resolve()))
    return Lake(where)


def dataset(where: Lake | Path | str, table: str = EVENTS_TABLE) -> pads.Dataset | None:
    """The table's current snapshot as a pyarrow dataset (None: no table yet)."""
    dt = location(where).open(table)
    return None if dt is None else dt.to_pyarrow_dataset()


def has_rows(where: Lake | Path | str, table: str = EVENTS_TABLE) -> bool:
    dt = location(where).open(table)
    return dt is not None and any(a["num_records"] for a in _add_actions(dt))


def register_duckdb(
    con: duckdb.DuckDBPyConnection, where: Lake | Path | str, table: str = EVENTS_TABLE
) -> bool:
    """Make ``table`` a view of ``con`` named after the table; False when it does not
    exist yet (nothing is registered)."""
    ds = dataset(where, table)
    if ds is None:
        return False
    con.register(table, ds)
    return True


@dataclass(frozen=True)
class TableSize:
    table: str
    version: int
    files: int
    bytes: int
    rows: int


def table_size(where: Lake | Path | str, table: str) -> TableSize | None:
    """The live files of the current snapshot (what a reader reads, not what vacuum
    has yet to remove)."""
    dt = location(where).open(table)
    if dt is None:
        return None
    adds = _add_actions(dt)
    return TableSize(
        table,
        dt.version(),
        len(adds),
        sum(int(a["size_bytes"]) for a in adds),
        sum(int(a["num_records"] or 0) for a in adds),
    )


def _add_actions(dt: DeltaTable) -> list[dict[str, Any]]:
    import pyarrow as pa

    actions = pa.table(dt.get_add_actions(flatten=True))
    # pyarrow is untyped: to_pylist() is Any to mypy
    rows: list[dict[str, Any]] = actions.select(["size_bytes", "num_records"]).to_pylist()
    return rows
