"""The maintenance flow runs the table format's operations: it compacts closed hours
(not the current one), expires old partitions, vacuums what no snapshot references,
checkpoints; a second run changes nothing, and the offsets in the table survive."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
from aiokafka import TopicPartition
from deltalake import DeltaTable

from common import lake, lakesql
from common.lakewrite import app_id
from consumers.lake import LakeSink
from flows.maintenance import maintenance_flow

from ..support import lake_records


def _files_by_hour(dt: DeltaTable) -> dict[str, int]:
    out: dict[str, int] = {}
    for a in pa.table(dt.get_add_actions(flatten=True)).to_pylist():
        key = f"{a['partition.date']}/{a['partition.hour']}"
        out[key] = out.get(key, 0) + 1
    return out


def test_maintenance_compacts_closed_hours_expires_old_days_and_is_idempotent(
    prefect_harness, tmp_path, monkeypatch
):
    monkeypatch.setenv("INFERSTREAM_LAKE_VACUUM_HOURS", "0")  # nothing reads old snapshots here
    tp = TopicPartition("inference-events", 0)
    now = datetime.now(UTC)
    closed = now.replace(minute=10, second=0, microsecond=0) - timedelta(hours=3)
    current = now.replace(second=0, microsecond=0)
    expired = closed - timedelta(days=40)
    sink = LakeSink(tmp_path / "lake")
    sink.assigned({tp: (None, "abc123")})
    whens = [closed, current, expired]
    records = lake_records(tp, 0, 299, lambda off: whens[off // 50 % 3])
    for lo in range(0, 300, 50):  # two small files in each of three hours
        sink.add(tp, records[lo : lo + 50])
        sink.flush()
    uri = str(tmp_path / "lake" / lake.EVENTS_TABLE)
    before = _files_by_hour(DeltaTable(uri))
    assert sorted(before.values()) == [2, 2, 2]

    result = maintenance_flow(retention_days=30, data_dir=str(tmp_path))

    dt = DeltaTable(uri)
    after = _files_by_hour(dt)
    assert after[f"{closed.date()}/{closed.hour}"] == 1  # compacted
    assert after[f"{current.date()}/{current.hour}"] == 2  # still being written: left alone
    assert f"{expired.date()}/{expired.hour}" not in after  # expired
    assert result.rows_expired == 100
    con = lakesql.connect(tmp_path / "lake")
    rows, distinct = con.execute(
        f"SELECT count(*), count(DISTINCT event_id) FROM {lake.EVENTS_TABLE}"
    ).fetchone()
    assert (rows, distinct) == (200, 200)
    assert dt.transaction_version(app_id("lake", tp.topic, 0, "abc123")) == 300  # offsets kept
    live = {a["path"] for a in pa.table(dt.get_add_actions(flatten=True)).to_pylist()}
    on_disk = {
        p.relative_to(uri).as_posix()
        for p in (tmp_path / "lake" / lake.EVENTS_TABLE).glob("model=*/**/*.parquet")
    }
    assert on_disk == live  # vacuumed: only what the snapshot references
    assert list((tmp_path / "lake" / lake.EVENTS_TABLE / "_delta_log").glob("*.checkpoint.parquet"))

    again = maintenance_flow(retention_days=30, data_dir=str(tmp_path))
    assert (again.compacted_files, again.rows_expired) == (0, 0)
    assert _files_by_hour(DeltaTable(uri)) == after
