"""``inferstream lake migrate`` imports a lake of the old layout (hive-partitioned Parquet
files named from batch coordinates) into the Delta tables exactly once, and
maintenance will not vacuum the old files away before that."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
from deltalake import write_deltalake

from common import lake, lakemaint
from common.lakemigrate import unmigrated_dirs
from inferstream.cli import main

T0 = datetime(2026, 3, 1, 10, 5, tzinfo=UTC)


def _old_lake(root, n: int = 120) -> list[str]:
    """Old-layout files: three hours of one model, a replayed batch repeating 20 events,
    and a feedback file."""
    ids = [f"0190a0a0-0000-7000-8000-{i:012d}" for i in range(n)]
    df = pl.DataFrame(
        {
            "event_id": ids,
            "event_time": [T0 + timedelta(minutes=i) for i in range(n)],
            "model_name": ["m"] * n,
            "model_version": ["1"] * n,
            "features": pl.DataFrame({"x": [float(i) for i in range(n)]}).to_struct("features"),
            "status": ["ok"] * n,
            "kafka_partition": pl.Series([0] * n, dtype=pl.Int32),
            "kafka_offset": pl.Series(range(n), dtype=pl.Int64),
        }
    ).with_columns(pl.col("event_time").dt.cast_time_unit("us"))
    for (hour,), part in df.group_by(pl.col("event_time").dt.hour(), maintain_order=True):
        d = root / "inference_events" / "model=m" / "date=2026-03-01" / f"hour={hour:02d}"
        d.mkdir(parents=True)
        part.write_parquet(d / "inference-events+abc123+0+00000000000000000000.parquet")
        if hour == 10:  # a replay after a topic re-creation wrote 20 events again
            part.head(20).write_parquet(d / "inference-events+def456+0+00000000000000000000.parquet")
    fb = root / "inference_feedback" / "model=m" / "date=2026-03-01" / "hour=10"
    fb.mkdir(parents=True)
    pl.DataFrame(
        {
            "event_id": ids[:5],
            "label": ["1"] * 5,
            "feedback_id": [f"0190a0a0-0000-7000-9000-{i:012d}" for i in range(5)],
            "feedback_time": [T0] * 5,
            "model_name": ["m"] * 5,
        }
    ).with_columns(pl.col("feedback_time").dt.cast_time_unit("us")).write_parquet(
        fb / "inference-feedback+abc123+0+00000000000000000000.parquet"
    )
    return ids


def _rows(where, table: str) -> int:
    size = lake.table_size(where, table)
    return 0 if size is None else size.rows


def test_migrate_imports_the_old_layout_once_and_guards_vacuum(tmp_path, capsys):
    root = tmp_path / "lake"
    _old_lake(root)
    where = lake.Lake(str(root))
    assert len(unmigrated_dirs(where, lake.EVENTS_TABLE)) == 3
    # a lander already wrote the new table into the same directories: vacuum must wait
    assert (
        lakemaint.maintain(where, lake.EVENTS_TABLE, compact_before=T0, expire_before=None, vacuum_hours=0)
        is None
    )  # no table yet: nothing to maintain
    assert main(["lake", "migrate", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "inference_events: 3 hour directories imported (120 rows), 0 already imported" in out
    assert _rows(where, lake.EVENTS_TABLE) == 120  # the 20 replayed rows deduplicated
    assert _rows(where, lake.FEEDBACK_TABLE) == 5
    assert unmigrated_dirs(where, lake.EVENTS_TABLE) == []

    assert main(["lake", "migrate", "--data-dir", str(tmp_path)]) == 0
    assert "0 hour directories imported (0 rows), 3 already imported" in capsys.readouterr().out
    assert (_rows(where, lake.EVENTS_TABLE), _rows(where, lake.FEEDBACK_TABLE)) == (120, 5)

    # the tables are read as before: one query over the partitions
    assert (
        main(
            [
                "lake",
                "sql",
                "SELECT hour, count(*) AS n FROM inference_events GROUP BY 1 ORDER BY 1",
                "--data-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert [
        line.split()[1:4:2] for line in table.splitlines() if line.strip("│ ")[:2] in ("10", "11", "12")
    ] == [
        ["10", "55"],
        ["11", "60"],
        ["12", "5"],
    ]  # 10:05-10:59, 11:00-11:59, 12:00-12:04


def test_vacuum_waits_until_the_old_files_are_migrated(tmp_path):
    root = tmp_path / "lake"
    _old_lake(root)
    where = lake.Lake(str(root))
    # the new lander wrote into the same table directory before anyone migrated
    row = pl.DataFrame({"event_id": ["x"], "model": ["m"], "date": [date(2026, 3, 1)], "hour": [12]})
    write_deltalake(where.uri(lake.EVENTS_TABLE), row.to_arrow(), partition_by=lake.PARTITION_BY)
    result = lakemaint.maintain(
        where, lake.EVENTS_TABLE, compact_before=T0, expire_before=None, vacuum_hours=0
    )
    assert result is not None and result.files_vacuumed == 0
    assert "vacuum skipped" in result.notes[0]
    assert len(list((root / "inference_events").rglob("*+*.parquet"))) == 4  # the old files are still there


def test_events_the_new_lander_landed_first_are_not_imported_twice(tmp_path, capsys):
    root = tmp_path / "lake"
    ids = _old_lake(root)
    where = lake.Lake(str(root))
    # the new lander started before the migration and landed 30 events of 10:xx and
    # 11:xx again (from the group's committed offset), the old lake holds them too
    old = pl.concat(
        [
            pl.read_parquet(f, hive_partitioning=False)
            for f in sorted(root.glob("inference_events/*/*/*/*abc123*"))
        ]
    )
    relanded = old.filter(pl.col("event_id").is_in(ids[40:70])).with_columns(
        pl.lit("m").alias("model"),
        pl.col("event_time").dt.date().alias("date"),
        pl.col("event_time").dt.hour().cast(pl.Int32).alias("hour"),
    )
    write_deltalake(where.uri(lake.EVENTS_TABLE), relanded.to_arrow(), partition_by=lake.PARTITION_BY)

    assert main(["lake", "migrate", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "inference_events: 3 hour directories imported (90 rows), 0 already imported" in out, out
    assert "30 rows were in the table already" in out
    dt = where.open(lake.EVENTS_TABLE)
    assert dt is not None
    landed = pl.from_arrow(dt.to_pyarrow_table(columns=["event_id"]))["event_id"]
    assert landed.len() == 120 and landed.n_unique() == 120 and set(landed) == set(ids)
