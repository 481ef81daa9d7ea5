"""``inferstream compact``: the maintenance flow's lake part by hand, on a lake the lake
sink wrote in many small commits: closed hours compacted, partitions past the retention
deleted, unreferenced files vacuumed, rows of the kept hours untouched; a second run
changes nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from common import lake
from consumers.lake import LakeSink
from inferstream.cli import main

from ..support import lake_records

TP = TopicPartition("inference-events", 0)


def _files(table: Path) -> dict[str, int]:
    """Data files on disk by partition directory."""
    got: dict[str, int] = {}
    for f in table.rglob("*.parquet"):
        if "_delta_log" in f.parts:  # checkpoints
            continue
        key = f.parent.relative_to(table).as_posix()
        got[key] = got.get(key, 0) + 1
    return got


@pytest.fixture(params=["file", "s3"])
def where(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> lake.Lake:
    """The lake the command maintains, on ``file://`` and on ``s3://`` (SeaweedFS)."""
    monkeypatch.setenv("INFERSTREAM_DATA_DIR", str(tmp_path))
    if request.param == "file":
        return lake.Lake(str(tmp_path / "lake"))
    store = request.getfixturevalue("seaweed")
    url = f"s3://{store.bucket}/compact-{uuid.uuid4().hex[:8]}"
    for name, value in {
        "INFERSTREAM_LAKE_URL": url,
        "INFERSTREAM_S3_ENDPOINT": store.endpoint,
        "INFERSTREAM_S3_ACCESS_KEY_ID": store.access_key,
        "INFERSTREAM_S3_SECRET_ACCESS_KEY": store.secret_key,
    }.items():
        monkeypatch.setenv(name, value)
    return lake.Lake(url, store.storage_options())


def test_compact_maintains_every_table_and_a_second_run_changes_nothing(
    where: lake.Lake, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    closed = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)  # a closed hour
    old = closed - timedelta(days=40)  # past the 30-day default retention
    sink = LakeSink(where)
    sink.assigned({TP: (None, "inc")})
    offset = 0
    for _ in range(6):  # six flushes: six small files in each of the two hours
        first = offset

        def when(off: int, first: int = first) -> datetime:  # ten old events, then ten recent
            return (old if off - first < 10 else closed) + timedelta(seconds=off)

        sink.add(TP, lake_records(TP, first, first + 19, when))
        sink.flush()
        offset += 20
    local = where.local_root / lake.EVENTS_TABLE if where.is_local else None
    if local is not None:
        assert sorted(_files(local).values()) == [6, 6]

    assert main(["compact", "--vacuum-hours", "0"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith(f"{lake.EVENTS_TABLE}:"))
    assert "12 files compacted into 2" in line, out  # both hours were closed
    assert f"60 rows dated before {(now - timedelta(days=30)).date()} deleted" in line, out
    assert "unreferenced files vacuumed" in line and f"{lake.FEEDBACK_TABLE}: no table yet" in out
    assert "13 unreferenced files vacuumed" in line, out  # the 12 compacted away, the expired hour's
    size = lake.table_size(where, lake.EVENTS_TABLE)
    assert size is not None and (size.rows, size.files) == (60, 1)  # the kept hour, whole, in one file
    if local is not None:
        assert _files(local) == {f"model=m/date={closed.date()}/hour={closed.hour}": 1}  # vacuumed

    assert main(["compact", "--vacuum-hours", "0"]) == 0
    again = capsys.readouterr().out
    assert (
        "0 files compacted into 0; 0 rows dated before" in again and "0 unreferenced files vacuumed" in again
    )
    assert f"version {size.version} -> {size.version}" in again  # nothing committed
    assert lake.table_size(where, lake.EVENTS_TABLE) == size


def test_compact_with_retention_0_deletes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("INFERSTREAM_DATA_DIR", str(tmp_path))
    old = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=400)
    sink = LakeSink(tmp_path / "lake")
    sink.assigned({TP: (None, "inc")})
    sink.add(TP, lake_records(TP, 0, 4, lambda off: old + timedelta(seconds=off)))
    sink.flush()
    assert main(["compact", "--retention-days", "0"]) == 0
    assert "no retention" in capsys.readouterr().out
    size = lake.table_size(tmp_path / "lake", lake.EVENTS_TABLE)
    assert size is not None and size.rows == 5
