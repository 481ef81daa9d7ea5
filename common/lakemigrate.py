"""Import a lake of the old layout (hive-partitioned Parquet written by the lander before
the Delta tables: ``<dir>/<table>/model=*/date=*/hour=*/*.parquet``) into the tables,
exactly once.

Each old hour directory becomes one table commit that carries the application
transaction ``migrate/<table>/<model=…/date=…/hour=…>``: a directory whose transaction
the table already has is skipped, so running the migration twice (or again after it
stopped half-way) adds nothing. Rows are deduplicated by event id (feedback: by
feedback id) within a directory: the old lake could hold a replayed event twice, and a
copy carries the event's own time, so both copies are in one hour directory. Rows whose
id the table holds already are not imported again either: a lander started on the new
table before the migration may have landed events the old lake holds too (it resumes at
the group's committed offset, which can be behind what the old lander had written).
A lander landing the same events while the migration runs can still race it: migrate
before starting the landers.

The old files are left where they are. In a local lake whose tables live in the same
directories, they are unreferenced by the table and ``vacuum`` removes them once
migrated; :func:`unmigrated_dirs` lets maintenance refuse to vacuum before that.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl

from common import lake
from common.lakewrite import not_landed

_KEYS = {lake.EVENTS_TABLE: ("event_id", "event_time"), lake.FEEDBACK_TABLE: ("feedback_id", "feedback_time")}


def _app_id(table: str, rel: str) -> str:
    return f"migrate/{table}/{rel}"


def old_dirs(source: Path, table: str) -> list[Path]:
    root = source / table
    return sorted(d for d in root.glob("model=*/date=*/hour=*") if d.is_dir() and _old_files(d))


def _old_files(d: Path) -> list[Path]:
    # the old lander's files were named <topic>+<incarnation>+<partition>+<offset>.parquet,
    # or compacted+<digest>.parquet; delta-rs names its files part-*.parquet
    return sorted(f for f in d.glob("*.parquet") if "+" in f.name)


def unmigrated_dirs(where: lake.Lake, table: str) -> list[Path]:
    """Old-layout directories of a local lake not imported yet (empty for object storage)."""
    if not where.is_local:
        return []
    dt = where.open(table)
    root = where.local_root
    return [
        d
        for d in old_dirs(root, table)
        if dt is None
        or dt.transaction_version(_app_id(table, d.relative_to(root / table).as_posix())) is None
    ]


def migrate(source: Path, where: lake.Lake, group: str = "lake") -> Iterator[str]:
    """Import every old hour directory of ``source`` not imported yet; yields a line per
    table. ``group`` is only named in the log: offsets stay with the consumer group (the
    lander resumes at its committed offset where the table has no offsets yet)."""
    from deltalake import CommitProperties, Transaction, WriterProperties, write_deltalake

    for table, (key, time_col) in _KEYS.items():
        added = skipped = rows = already = 0
        for d in old_dirs(source, table):
            rel = d.relative_to(source / table).as_posix()
            dt = where.open(table)
            if dt is not None and dt.transaction_version(_app_id(table, rel)) is not None:
                skipped += 1
                continue
            df = pl.concat(
                [pl.read_parquet(f, hive_partitioning=False) for f in _old_files(d)], how="diagonal_relaxed"
            )
            sort = [c for c in ("kafka_partition", "kafka_offset") if c in df.columns]
            df = df.sort(sort) if sort else df
            df = df.unique(subset=key, keep="first", maintain_order=True)
            t = pl.col(time_col)
            model = d.parent.parent.name.removeprefix("model=")
            df = df.with_columns(
                pl.lit(model).alias("model"),
                t.dt.date().alias("date"),
                t.dt.hour().cast(pl.Int32).alias("hour"),
            )
            if dt is not None and df.height:
                df, landed = not_landed(dt, df, key, time_col)
                already += landed
            write_deltalake(
                dt if dt is not None else where.uri(table),
                df.to_arrow(compat_level=pl.CompatLevel.oldest()),
                mode="append",
                partition_by=lake.PARTITION_BY,
                schema_mode="merge",
                storage_options=None if dt is not None else where.options(),
                writer_properties=WriterProperties(compression="ZSTD"),
                commit_properties=CommitProperties(app_transactions=[Transaction(_app_id(table, rel), 1)]),
            )
            added += 1
            rows += df.height
        yield (
            f"{table}: {added} hour directories imported ({rows} rows), {skipped} already imported"
            + (
                f"; {already} rows were in the table already (landed by the new lander), not imported"
                if already
                else ""
            )
        )
        if added:
            yield f"{table}: consumer group {group!r} keeps its committed offsets; the lander resumes there"
