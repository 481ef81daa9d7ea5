"""Landing benchmark: how fast the lake lander turns Kafka records into Delta table commits.

In one run, against each broker chosen with ``--broker`` (bench/brokers.py: the
embedded Tansu and a 1-node Apache Kafka, side by side; KAFKA_BOOTSTRAP_SERVERS
instead measures that one broker), phases 1-4 per broker:

1. produce N realistic events (30 numeric features of scikit-learn's bundled
   breast-cancer data, a category and a boolean; confluent-kafka, lz4);
2. raw consume: aiokafka ``getmany`` over all N doing nothing (the ceiling); beside it
   (bench/landing_clients.py) confluent-kafka's batch ``consume`` over the same N, bare
   and with each message made the runner's record, and the landing ceiling of each
   client without the runner (consume → ``LakeSink`` → flush in a thread, file://);
3. landing: the real ``ConsumerRunner`` + ``LakeSink`` (parse, validate, dedupe by
   event id against the table, Parquet, one Delta commit with the offsets, group
   commit) over the same N, in a fresh consumer group, on ``file://`` and on ``s3://``
   (a local SeaweedFS, ``common.seaweed``);
4. freshness (file://): a steady produce rate for a while with the lander running; per
   event, the time from its event_time to the moment the table version holding it
   became visible to a reader;
5. table metadata (file://, once: no broker involved): ``--meta-commits`` small
   commits as the lander makes them (one per flush), then the log's size and the time
   to open the table and list its files, before and after maintenance (compaction,
   checkpoint, log cleanup). The default, 1,800, is an hour of landing at 20,000
   events/s: the lander flushes every 2 s (``max_batch_age_s``; 40,000 events stay
   under its 50,000-row bound). The log grows by commit and by data file, not by row
   (an add action holds one file's statistics), so each commit here holds 1,000 events.

Usage: ``python bench/landing.py [--broker tansu|kafka|both] [--events 1000000] [--rate 20000]
[--fresh-seconds 20] [--meta-commits 1800] [--no-s3] [--gc-gen0 N]`` (``--gc-gen0``: the cyclic GC's
first threshold, as ``INFERSTREAM_GC_GEN0_THRESHOLD`` sets it in a consumer process;
700 is Python's own). The last line is, for each broker,
``<broker>_landing_events_per_s=… <broker>_ratio_to_raw=… <broker>_s3_landing_events_per_s=…
<broker>_s3_ratio_to_raw=… <broker>_freshness_p99_s=…`` (landing_* is file://; no s3_*
keys with ``--no-s3``), then ``<broker>_confluent_raw_events_per_s=…
<broker>_ceiling_aiokafka_events_per_s=… <broker>_ceiling_confluent_events_per_s=…``.
Each row also shows this process's CPU time per event (all its threads; the broker is
another process), steadier than the wall rate on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import re
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import brokers
import landing_clients
import polars as pl
import pyarrow as pa
from aiokafka import TopicPartition
from confluent_kafka import Producer
from sklearn.datasets import load_breast_cancer

from common import events, lake, lakemaint
from common.lakewrite import PartitionBatch, commit_batch
from common.seaweed import SeaweedS3
from common.topics import ensure_topics
from consumers.lake import LakeSink
from consumers.runner import ConsumerRunner
from consumers.service import tune_gc
from consumers.settings import ConsumerSettings

PARTITIONS = 4
STORAGES = {"file": "file://", "s3": "s3:// (SeaweedFS, loopback)"}
RNG = random.Random(7)  # noqa: S311 - synthetic traffic, reproducible


def feature_rows() -> list[dict[str, object]]:
    raw = load_breast_cancer(as_frame=True).frame
    raw.columns = [re.sub(r"\W+", "_", c.strip()) for c in raw.columns]
    rows = []
    for rec in raw.drop(columns=["target"]).to_dict("records"):
        rec = {k: float(v) for k, v in rec.items()}
        r = rec["mean_radius"]
        rec["size_band"] = "small" if r < 12 else "medium" if r < 16 else "large"
        rec["high_texture"] = rec["mean_texture"] > 18.8
        rows.append(rec)
    return rows


def make_value(rows: list[dict[str, object]]) -> tuple[bytes, bytes]:
    ev = events.build_event(
        event_id=events.uuid7(),
        event_time=events.utcnow(),
        model_name="breast-cancer",
        model_version="20260301T000000Z",
        features=RNG.choice(rows),
        prediction=RNG.randint(0, 1),
        scores={"0": 0.25, "1": 0.75},
        latency_ms=round(RNG.uniform(0.1, 2.0), 3),
    )
    return events.event_key(ev["event_id"]), events.encode(ev)


def produce(
    bootstrap: str, topic: str, n: int, rows: list[dict[str, object]], rate: float | None = None
) -> int:
    """Produce ``n`` events (at ``rate`` per second if given); returns the value bytes."""
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "acks": "all",
            "queue.buffering.max.messages": 500_000,
        }
    )
    total = 0
    start = time.perf_counter()
    for i in range(n):
        key, value = make_value(rows)
        total += len(value)
        while True:
            try:
                p.produce(topic, value, key)
                break
            except BufferError:
                p.poll(0.05)
        if i % 1000 == 0:
            p.poll(0)
            if rate:
                ahead = (i / rate) - (time.perf_counter() - start)
                if ahead > 0:
                    time.sleep(ahead)
    remaining = p.flush(120)
    if remaining:
        raise RuntimeError(f"{remaining} events not delivered")
    return total


async def raw_consume(bootstrap: str, topic: str, n: int) -> landing_clients.Timed:
    consumer = landing_clients.reader(bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        start, cpu = time.perf_counter(), time.process_time()
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            seen += sum(len(m) for m in batch.values())
        return landing_clients.Timed(time.perf_counter() - start, time.process_time() - cpu)
    finally:
        await consumer.stop()


def runner_for(bootstrap: str, topic: str, where: lake.Lake) -> ConsumerRunner:
    group = f"bench-{uuid.uuid4().hex[:8]}"
    return ConsumerRunner(
        bootstrap_servers=bootstrap,
        topics=[topic],
        group_id=group,
        sink=LakeSink(where, group=group),
        max_batch_rows=50_000,
        max_batch_age_s=2.0,
    )


async def land(bootstrap: str, topic: str, n: int, where: lake.Lake) -> landing_clients.Timed:
    runner = runner_for(bootstrap, topic, where)
    task = asyncio.create_task(runner.run())
    start = None
    cpu = 0.0
    while runner.records < n:
        if start is None and (runner.ready or runner.records):
            # from the assignment: group join excluded (a small run can be fetched whole
            # within one poll of this loop, so the first record is too late a mark)
            start, cpu = time.perf_counter(), time.process_time()
        if task.done():
            task.result()
        await asyncio.sleep(0.001 if start is None else 0.01)
    runner.stop()
    await task  # the final flush and commit are part of landing
    assert start is not None
    return landing_clients.Timed(time.perf_counter() - start, time.process_time() - cpu)


class Watcher(threading.Thread):
    """Records when each table version first became visible to a reader (polls every 20 ms)."""

    def __init__(self, where: lake.Lake) -> None:
        super().__init__(daemon=True)
        self.where = where
        self.seen: dict[int, float] = {}
        self.running = True

    def run(self) -> None:
        dt = None
        while self.running:
            if dt is None:
                dt = self.where.open(lake.EVENTS_TABLE)
            else:
                dt.update_incremental()
            if dt is not None:
                self.seen.setdefault(dt.version(), time.time())
            time.sleep(0.02)


def _paths(where: lake.Lake, version: int) -> set[str]:
    from deltalake import DeltaTable

    dt = DeltaTable(where.uri(lake.EVENTS_TABLE), version=version)
    return set(pa.table(dt.get_add_actions(flatten=True)).column("path").to_pylist())


def freshness(
    bootstrap: str, topic: str, where: lake.Lake, rows: list[dict[str, object]], rate: float, seconds: float
) -> tuple[float, float, int]:
    watcher = Watcher(where)
    watcher.start()
    runner = runner_for(bootstrap, topic, where)
    n = int(rate * seconds)

    async def main() -> None:
        task = asyncio.create_task(runner.run())
        while not runner.ready:  # noqa: ASYNC110 - polls the runner's own state
            await asyncio.sleep(0.05)
        await asyncio.to_thread(produce, bootstrap, topic, n, rows, rate)
        while runner.records < n:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await asyncio.sleep(3)  # the last batch reaches its age bound
        runner.stop()
        await task

    asyncio.run(main())
    time.sleep(0.1)
    watcher.running = False
    watcher.join()
    lags = []
    seen = sorted(watcher.seen.items())
    for i, (version, at) in enumerate(seen):
        before = _paths(where, seen[i - 1][0]) if i else set()
        for path in _paths(where, version) - before:
            times = pl.read_parquet(Path(where.uri(lake.EVENTS_TABLE)) / path, columns=["event_time"])
            lags.append(at - times["event_time"].dt.epoch("us").cast(pl.Float64) / 1e6)
    all_lags = pl.concat(lags)
    return float(all_lags.quantile(0.5)), float(all_lags.quantile(0.99)), all_lags.len()


def metadata(where: lake.Lake, rows: list[dict[str, object]], commits: int) -> list[tuple[str, str, str]]:
    """``commits`` lander-sized commits (1,000 events over 4 partitions, like a 2 s
    flush at 500 events/s), then the table metadata before and after maintenance."""
    from consumers.lake import LakeSink as _Sink

    sink = _Sink(where, group="meta")
    offsets = [0] * PARTITIONS
    for _ in range(commits):
        frames, parts = [], []
        for p in range(PARTITIONS):
            values = [make_value(rows)[1] for _ in range(250)]
            df = pl.read_ndjson(b"\n".join(values)).with_columns(
                pl.lit(p, pl.Int32).alias("kafka_partition"),
                pl.int_range(offsets[p], offsets[p] + 250, dtype=pl.Int64).alias("kafka_offset"),
                pl.col("event_time").str.to_datetime(time_unit="us", time_zone="UTC"),
            )
            offsets[p] += 250
            frames.append(df)
            parts.append(PartitionBatch(f"meta/t/{p}/x", p, offsets[p]))
        commit_batch(where, lake.EVENTS_TABLE, sink._partitioned(frames), parts, time_column="event_time")
    log_dir = Path(where.uri(lake.EVENTS_TABLE)) / "_delta_log"

    def measure() -> tuple[int, int, int, int, float]:
        start = time.perf_counter()
        size = lake.table_size(where, lake.EVENTS_TABLE)
        lake.dataset(where, lake.EVENTS_TABLE)
        opened = time.perf_counter() - start
        logs = list(log_dir.glob("*.json"))
        ckpt = sum(f.stat().st_size for f in log_dir.glob("*.checkpoint*.parquet"))
        assert size is not None
        return len(logs), sum(f.stat().st_size for f in logs), ckpt, size.files, opened

    before = measure()
    # what the maintenance flow and `inferstream compact` run (no partition is past the
    # retention here); vacuum at 0 h: the benchmark has no reader of old snapshots
    lakemaint.maintain(
        where, lake.EVENTS_TABLE, compact_before=datetime.now(UTC) + timedelta(hours=2), expire_before=None,
        vacuum_hours=0,
    )  # fmt: skip
    after = measure()
    names = ["commit files in _delta_log", "their bytes", "checkpoint bytes", "live data files"]
    names.append("open + list (s)")

    def fmt(x: float) -> str:
        return f"{x:,.3f}" if isinstance(x, float) else f"{x:,}"

    return [(name, fmt(b), fmt(a)) for name, b, a in zip(names, before, after, strict=True)]


@dataclass
class Result:
    n: int
    value_bytes: int
    produce_s: float
    raw: landing_clients.Timed
    p50: float = 0.0
    p99: float = 0.0
    fresh_n: int = 0
    # storage key -> (time, what landed)
    landed: dict[str, tuple[landing_clients.Timed, lake.TableSize]] = field(default_factory=dict)
    clients: landing_clients.Comparison | None = None

    @property
    def raw_s(self) -> float:
        return self.raw.wall_s


def measure(bootstrap: str, args: argparse.Namespace, rows: list[dict[str, object]], label: str) -> Result:
    """Phases 1-4 against one broker: produce, raw consume, landing on file:// (and
    s3://), freshness."""
    topic, fresh_topic = f"bench-{uuid.uuid4().hex[:8]}", f"bench-fresh-{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_topics(bootstrap, {topic: PARTITIONS, fresh_topic: PARTITIONS}))
    n = args.events
    t0 = time.perf_counter()
    value_bytes = produce(bootstrap, topic, n, rows)
    produce_s = time.perf_counter() - t0
    print(
        f"{label}: produced {n:,} events ({value_bytes / n:.0f} B each) in {produce_s:.1f}s "
        f"({n / produce_s:,.0f}/s, confluent-kafka, lz4)",
        flush=True,
    )
    r = Result(n, value_bytes, produce_s, asyncio.run(raw_consume(bootstrap, topic, n)))
    r.clients = landing_clients.compare(bootstrap, topic, PARTITIONS, n)
    with tempfile.TemporaryDirectory(prefix="bench-lake-") as tmp:
        where = lake.Lake(tmp)
        land_s = asyncio.run(land(bootstrap, topic, n, where))
        r.landed["file"] = (land_s, lake.table_size(where, lake.EVENTS_TABLE))  # type: ignore[assignment]
        if not args.no_s3:
            store = SeaweedS3(Path(tmp) / "seaweedfs")
            try:
                store.start()
                s3 = lake.Lake(f"s3://{store.bucket}/bench", store.storage_options())
                s3_s = asyncio.run(land(bootstrap, topic, n, s3))
                r.landed["s3"] = (s3_s, lake.table_size(s3, lake.EVENTS_TABLE))  # type: ignore[assignment]
            finally:
                store.stop()
    print(f"{label}: landed", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-fresh-") as tmp:
        r.p50, r.p99, r.fresh_n = freshness(
            bootstrap, fresh_topic, lake.Lake(tmp), rows, args.rate, args.fresh_seconds
        )
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    brokers.add_argument(ap)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--rate", type=float, default=20_000, help="steady produce rate of the freshness phase")
    ap.add_argument("--fresh-seconds", type=float, default=20)
    ap.add_argument(
        "--meta-commits", type=int, default=1800, help="commits of the metadata phase (an hour at 2 s)"
    )
    ap.add_argument("--no-s3", action="store_true", help="skip landing on s3:// (SeaweedFS)")
    ap.add_argument(
        "--gc-gen0",
        type=int,
        default=ConsumerSettings().gc_gen0_threshold,
        help="the cyclic GC's first threshold for the whole run, as INFERSTREAM_GC_GEN0_THRESHOLD sets it "
        "for a consumer (default: that setting; Python's own is 700)",
    )
    args = ap.parse_args()
    tune_gc(args.gc_gen0)
    print(f"gc thresholds {gc.get_threshold()}, enabled {gc.isenabled()}", flush=True)
    rows = feature_rows()
    results: dict[str, Result] = {}
    for name in brokers.selected(args.broker):
        label = brokers.LABELS[name]
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as work:
            print(f"{label}: starting", flush=True)
            with brokers.running(name, Path(work)) as bootstrap:
                results[name] = measure(bootstrap, args, rows, label)
    with tempfile.TemporaryDirectory(prefix="bench-meta-") as tmp:
        meta = metadata(lake.Lake(tmp), rows, args.meta_commits)
    _print_throughput(args, results)
    _print_metadata(args, meta)
    _print_figures(results)


def _print_throughput(args: argparse.Namespace, results: dict[str, Result]) -> None:
    print()
    print("| broker | phase | events | seconds | events/s | x raw | MB/s (JSON values) | CPU us/event |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        label = brokers.LABELS[name]
        for phase, rows, timed in _phases(r):
            print(
                f"| {label} | {phase} | {rows:,} | {timed.wall_s:.2f} | {r.n / timed.wall_s:,.0f} "
                f"| {r.raw_s / timed.wall_s:.2f} | {r.value_bytes / 1e6 / timed.wall_s:.1f} "
                f"| {timed.cpu_s / r.n * 1e6:.1f} |"
            )
    print()
    print("| broker | freshness (max batch age 2 s, file://) | events | p50 s | p99 s |")
    print("|---|---|---:|---:|---:|")
    for name, r in results.items():
        print(
            f"| {brokers.LABELS[name]} | steady {args.rate:,.0f} events/s for {args.fresh_seconds:.0f} s "
            f"| {r.fresh_n:,} | {r.p50:.2f} | {r.p99:.2f} |"
        )
    print()
    for name, r in results.items():
        for key, (_, size) in r.landed.items():
            print(
                f"{brokers.LABELS[name]}, {STORAGES[key]}: {size.version + 1} commits, {size.files} data "
                f"files, {size.bytes / 1e6:.1f} MB ({size.bytes / r.n:.0f} B per event; JSON on the wire "
                f"{r.value_bytes / r.n:.0f} B)"
            )
            if size.rows != r.n:
                print(f"WARNING: {name}, {STORAGES[key]}: {size.rows:,} rows landed for {r.n:,} events")
        for client, rows in (r.clients.rows if r.clients else {}).items():
            if rows != r.n:
                print(f"WARNING: {name}, ceiling with {client}: {rows:,} rows landed for {r.n:,} events")


def _phases(r: Result) -> list[tuple[str, int, landing_clients.Timed]]:
    """The throughput table's rows of one broker: (phase, rows, time)."""
    phases = [("raw consume (aiokafka getmany, nothing else)", r.n, r.raw)]
    c = r.clients
    if c is not None:
        phases += [
            ("raw consume (confluent-kafka consume, nothing else)", r.n, c.confluent_raw),
            ("raw consume (confluent-kafka, each made a ConsumerRecord)", r.n, c.confluent_wrapped),
        ]
    for key, (timed, size) in r.landed.items():
        phases.append((f"landing to {STORAGES[key]} (runner, aiokafka)", size.rows, timed))
    if c is not None:
        for client in ("aiokafka", "confluent"):
            timed = c.aiokafka_ceiling if client == "aiokafka" else c.confluent_ceiling
            phases.append((f"landing ceiling, no runner ({client}, file://)", c.rows[client], timed))
    return phases


def _print_metadata(args: argparse.Namespace, meta: list[tuple[str, str, str]]) -> None:
    print()
    print(f"table metadata after {args.meta_commits} lander commits (file://), before and after maintenance:")
    print("| | before | after compaction + checkpoint |")
    print("|---|---:|---:|")
    for name, before, after in meta:
        print(f"| {name} | {before} | {after} |")


def _print_figures(results: dict[str, Result]) -> None:
    figures = []
    for name, r in results.items():
        for key, (timed, _) in r.landed.items():
            prefix = name if key == "file" else f"{name}_{key}"
            figures += [
                f"{prefix}_landing_events_per_s={r.n / timed.wall_s:.0f}",
                f"{prefix}_ratio_to_raw={r.raw_s / timed.wall_s:.2f}",
            ]
        figures.append(f"{name}_freshness_p99_s={r.p99:.2f}")
        if r.clients is not None:
            figures += [
                f"{name}_confluent_raw_events_per_s={r.n / r.clients.confluent_raw.wall_s:.0f}",
                f"{name}_ceiling_aiokafka_events_per_s={r.n / r.clients.aiokafka_ceiling.wall_s:.0f}",
                f"{name}_ceiling_confluent_events_per_s={r.n / r.clients.confluent_ceiling.wall_s:.0f}",
            ]
    print(" ".join(figures))


if __name__ == "__main__":
    main()
