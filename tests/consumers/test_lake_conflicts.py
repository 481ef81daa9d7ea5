"""Two landers committing to one table at the same moment, on ``file://`` and on
``s3://`` (SeaweedFS): the commit made on a snapshot another lander has since moved past
is refused by the table (Delta's optimistic concurrency: a concurrent application
transaction of the same partition), retried on a fresh snapshot, and lands only what
the other did not; commits of different partitions both land. The race is made
deterministic: the first lander's snapshot is read, then the second commits, then the
first writes on its stale snapshot."""

from __future__ import annotations

import logging
import re
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


WRITER = """
import logging, os, sys, time
from datetime import UTC, datetime, timedelta
from aiokafka import ConsumerRecord, TopicPartition
from common import events
from common.lake import Lake
from consumers.lake import LakeSink

part, commits, per, gate, url = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
options = dict(a.split("=", 1) for a in sys.argv[6:])
tp = TopicPartition("inference-events", part)
sink = LakeSink(Lake(url, options), group="g")
sink.assigned({tp: (None, "inc1")})
t0 = datetime(2026, 3, 1, 10, tzinfo=UTC)
logging.basicConfig(level=logging.INFO, format="%(message)s")
# every writer starts at the same moment: once all have imported what they need
open(os.path.join(gate, f"ready-{part}"), "w").close()
deadline = time.time() + 120
while not os.path.exists(os.path.join(gate, "go")) and time.time() < deadline:
    time.sleep(0.005)
for c in range(commits):
    recs = []
    for off in range(c * per, (c + 1) * per):
        ev = events.build_event(event_id=events.uuid7(), event_time=t0 + timedelta(seconds=off),
            model_name="m", model_version="1", features={"x": float(off)}, prediction=1,
            scores={"1": 0.6}, latency_ms=1.0)
        recs.append(ConsumerRecord(tp.topic, part, off, 0, 0, events.event_key(ev["event_id"]),
            events.encode(ev), None, 16, 0, ()))
    sink.add(tp, recs)
    began = time.time()
    assert sink.flush() == {tp: ((c + 1) * per, "inc1")}
    print(f"commit {began} {time.time()}", flush=True)
"""


@pytest.mark.slow
def test_writers_in_separate_processes_committing_at_once_lose_no_commit(
    where: Lake, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Four processes, each landing its own partition in five commits, all started at one
    moment on an empty table (they race to create it, then to each next version): every
    commit is in the table, none overwrote another."""
    import subprocess
    import sys
    import time

    writers, commits, per = 4, 5, 20
    script, gate = tmp_path / "writer.py", tmp_path / "gate"
    script.write_text(WRITER)
    gate.mkdir()
    url = where.root if not where.is_local else str(where.local_root)
    options = [f"{k}={v}" for k, v in (where.options() or {}).items()]
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(p), str(commits), str(per), str(gate), url, *options],
            cwd=Path(__file__).resolve().parents[2],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for p in range(writers)
    ]
    deadline = time.monotonic() + 120
    while len(list(gate.glob("ready-*"))) < writers and all(p.poll() is None for p in procs):
        assert time.monotonic() < deadline, "the writers did not start"
        time.sleep(0.05)
    (gate / "go").touch()
    outs = [p.communicate(timeout=180)[0].decode(errors="replace") for p in procs]
    assert [p.returncode for p in procs] == [0] * writers, "\n".join(o[-2000:] for o in outs)
    expected = [(p, off) for p in range(writers) for off in range(commits * per)]
    assert _offsets(where) == expected  # every row of every commit, once
    dt = where.open(lake.EVENTS_TABLE)
    assert dt is not None
    assert dt.version() == writers * commits - 1  # one version per commit: none overwritten
    assert all(dt.transaction_version(app_id("g", TOPIC, p, "inc1")) == commits * per for p in range(writers))
    # the commits did overlap in time: each writer's commits against the others'
    spans = [
        [(p, float(a), float(b)) for a, b in re.findall(r"^commit (\S+) (\S+)$", o, re.M)]
        for p, o in enumerate(outs)
    ]
    assert all(len(s) == commits for s in spans), outs
    flat = [x for s in spans for x in s]
    overlapping = sum(1 for p, a, b in flat for q, c, d in flat if p < q and a < d and c < b)
    assert overlapping >= writers, f"only {overlapping} overlapping commits: the writers did not race"
