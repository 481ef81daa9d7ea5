"""Two landers committing to one table at the same moment, on ``file://`` and on
``s3://`` (SeaweedFS): the commit made on a snapshot another lander has since moved past
is refused by the table (Delta's optimistic concurrency: a concurrent application
transaction of the same partition), retried on a fresh snapshot, and lands only what
the other did not; commits of different partitions both land. The race is made
deterministic: the first lander's snapshot is read, then the second commits, then the
first writes on its stale snapshot."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from deltalake import DeltaTable

from common import lake
from common.lake import Lake
from common.lakewrite import app_id
from consumers.lake import LakeSink

from .test_lake_sink import _records

TOPIC = "inference-events"


@pytest.fixture(params=["file", "s3"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Lake:
    if request.param == "file":
        return Lake(str(tmp_path / "lake"))
    store = request.getfixturevalue("seaweed")
    return Lake(f"s3://{store.bucket}/conflicts-{uuid.uuid4().hex[:8]}", store.storage_options())


@pytest.fixture
def race(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Callable[[], object]], None]]:
    """``race(other)``: the next table snapshot read (by any sink) is read first, then
    ``other()`` runs (another lander's whole commit), then the stale snapshot is returned."""
    real_open = Lake.open
    pending: list[Callable[[], object]] = []

    def open_then_let_the_other_commit(self: Lake, table: str) -> DeltaTable | None:
        snapshot = real_open(self, table)
        if pending:
            pending.pop()()
        return snapshot

    monkeypatch.setattr(Lake, "open", open_then_let_the_other_commit)
    yield pending.append


def _offsets(where: Lake) -> list[tuple[int, int]]:
    dt = where.open(lake.EVENTS_TABLE)
    assert dt is not None
    t = dt.to_pyarrow_table(columns=["kafka_partition", "kafka_offset"])
    return sorted(
        zip(t.column("kafka_partition").to_pylist(), t.column("kafka_offset").to_pylist(), strict=True)
    )


def test_a_commit_racing_the_partitions_new_owner_is_retried_and_lands_only_what_is_new(
    where: Lake, race: Callable[[Callable[[], object]], None], caplog: pytest.LogCaptureFixture
) -> None:
    tp = TopicPartition(TOPIC, 2)
    records = _records(0, 24, tp)
    old = LakeSink(where, group="g")
    old.assigned({tp: (None, "inc1")})
    old.add(tp, records[:10])
    assert old.flush() == {tp: (10, "inc1")}
    # a rebalance gave the partition to a new lander; the old one has not noticed yet
    new = LakeSink(where, group="g")
    assert new.assigned({tp: (None, "inc1")}) == {tp: 10}  # the table says where to resume
    new.add(tp, records[10:20])
    old.add(tp, records[10:25])
    race(new.flush)  # the old lander reads its snapshot; the new one commits 10..19
    caplog.set_level(logging.INFO, logger="common.lakewrite")
    assert old.flush() == {tp: (25, "inc1")}
    assert "lake commit conflict" in caplog.text  # refused once on its stale snapshot, then retried
    assert _offsets(where) == [(2, off) for off in range(25)]  # each offset once: none lost, none twice
    dt = where.open(lake.EVENTS_TABLE)
    assert dt is not None and dt.version() == 2  # three commits: 0..9, the new owner's, the rest
    assert dt.transaction_version(app_id("g", TOPIC, 2, "inc1")) == 25


def test_racing_commits_of_different_partitions_both_land_without_a_retry(
    where: Lake, race: Callable[[Callable[[], object]], None], caplog: pytest.LogCaptureFixture
) -> None:
    a_tp, b_tp = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
    a, b = LakeSink(where, group="g"), LakeSink(where, group="g")
    a.assigned({a_tp: (None, "inc1")})
    b.assigned({b_tp: (None, "inc1")})
    a.add(a_tp, _records(0, 9, a_tp))
    assert a.flush() == {a_tp: (10, "inc1")}  # the table exists
    a.add(a_tp, _records(10, 19, a_tp))
    b.add(b_tp, _records(0, 14, b_tp))
    race(b.flush)
    caplog.set_level(logging.INFO, logger="common.lakewrite")
    assert a.flush() == {a_tp: (20, "inc1")}
    assert "lake commit conflict" not in caplog.text  # an append on another partition is rebased
    assert _offsets(where) == [(0, off) for off in range(20)] + [(1, off) for off in range(15)]
    dt = where.open(lake.EVENTS_TABLE)
    assert dt is not None
    assert dt.transaction_version(app_id("g", TOPIC, 0, "inc1")) == 20
    assert dt.transaction_version(app_id("g", TOPIC, 1, "inc1")) == 15
