"""Readers of the events table as an analyst and the flows meet them: the README's
one-command query, polars' own Delta reader, and a window read that touches only the
files of the window's partitions (model, date, hour)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from aiokafka import ConsumerRecord, TopicPartition

from common import events, lake
from consumers.lake import LakeSink
from flows.lake_reader import read_window
from flows.window import Window
from inferstream.cli import main

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 1, 10, 58, tzinfo=UTC)  # 300 events a second apart: 10:58:00 .. 11:02:59


def _records(model: str, version: str, tp: TopicPartition, n: int = 300) -> list[ConsumerRecord]:
    out = []
    for off in range(n):
        ev = events.build_event(
            event_id=events.uuid7(),
            event_time=T0 + timedelta(seconds=off),
            model_name=model,
            model_version=version,
            features={"x": float(off)},
            prediction=off % 2,
            scores={"0": 0.5, "1": 0.5},
            latency_ms=float(off % 10),
        )
        out.append(
            ConsumerRecord(
                tp.topic, tp.partition, off, 1_700_000_000_000 + off, 0,
                events.event_key(ev["event_id"]), events.encode(ev), None, 16, 0, (),
            )
        )  # fmt: skip
    return out


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A lake of two models, each landed over two hours by the lake sink."""
    sink = LakeSink(tmp_path / "lake")
    a, b = TopicPartition("inference-events", 0), TopicPartition("inference-events", 1)
    sink.assigned({a: (None, "inc"), b: (None, "inc")})
    sink.add(a, _records("m", "1", a))
    sink.add(b, _records("other", "7", b))
    sink.flush()
    return tmp_path


def test_the_readmes_analyst_query_runs_as_written(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (ROOT / "README.md").read_text()
    found = re.search(r'inferstream lake sql "(SELECT model_version[^"]*)"', readme)
    assert found, "the README's analyst example is gone"
    sql = " ".join(found.group(1).split())
    assert main(["lake", "sql", sql, "--data-dir", str(data_dir)]) == 0
    rows = {
        cells[0]: cells[1:]
        for line in capsys.readouterr().out.splitlines()
        if len(cells := [c.strip() for c in line.strip("│ ").split("│")]) == 3 and cells[0] in ("1", "7")
    }
    assert rows == {"1": ["300", "9.0"], "7": ["300", "9.0"]}, rows  # p99 of 0..9 ms, 30 times each


def test_polars_reads_the_table_with_its_own_delta_reader(data_dir: Path) -> None:
    got = (
        pl.scan_delta(str(data_dir / "lake" / lake.EVENTS_TABLE))
        .filter((pl.col("model") == "m") & (pl.col("hour") == 11))
        .select(pl.len(), pl.col("event_time").min())
        .collect()
    )
    assert got.row(0) == (180, datetime(2026, 3, 1, 11, 0, tzinfo=UTC))


def test_a_window_read_opens_only_its_partitions_files(data_dir: Path) -> None:
    table = data_dir / "lake" / lake.EVENTS_TABLE
    files = sorted(table.rglob("*.parquet"))
    kept = [f for f in files if "model=m" in f.as_posix() and "/hour=11/" in f.as_posix()]
    assert kept and len(kept) < len(files)
    for f in files:  # the other model's and the other hour's files are gone from the disk
        if f not in kept:
            f.unlink()
    hour = Window(datetime(2026, 3, 1, 11, tzinfo=UTC), datetime(2026, 3, 1, 12, tzinfo=UTC))
    frame = read_window(data_dir / "lake", "m", hour, ["x"])
    assert frame.height == 180 and frame["x"].min() == 120.0  # 11:00:00 is the 121st event
    # the control: a window that needs a deleted file fails, so the read above did not open one
    earlier = Window(datetime(2026, 3, 1, 10, tzinfo=UTC), datetime(2026, 3, 1, 11, tzinfo=UTC))
    with pytest.raises(Exception, match=r"(?i)not found|no such file|does not exist"):
        read_window(data_dir / "lake", "m", earlier, ["x"])
