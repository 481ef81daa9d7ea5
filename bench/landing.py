"""Landing benchmark: how fast the lake lander turns Kafka records into Parquet.

In one run, against each broker chosen with ``--broker`` (bench/brokers.py: the
embedded Tansu and a 1-node Apache Kafka, side by side; KAFKA_BOOTSTRAP_SERVERS
instead measures that one broker):

1. produce N realistic events (30 numeric features of scikit-learn's bundled
   breast-cancer data, a category and a boolean; confluent-kafka, lz4);
2. raw consume: aiokafka ``getmany`` over all N doing nothing (the ceiling);
3. landing: the real ``ConsumerRunner`` + ``LakeSink`` (parse, validate, Parquet,
   fsync, rename, commit) over the same N, in a fresh consumer group;
4. freshness: a steady produce rate for a while with the lander running; per event,
   the time from its event_time to the moment its Parquet file became visible.

Usage: ``python bench/landing.py [--broker tansu|kafka|both] [--events 1000000] [--rate 20000]
[--fresh-seconds 20]``. The last line is ``<broker>_landing_events_per_s=…
<broker>_ratio_to_raw=… <broker>_freshness_p99_s=…`` for each broker.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import brokers
import polars as pl
from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka import Producer
from sklearn.datasets import load_breast_cancer

from common import events, lake
from common.topics import ensure_topics
from consumers.lake import LakeSink
from consumers.runner import ConsumerRunner

PARTITIONS = 4
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


async def raw_consume(bootstrap: str, topic: str, n: int) -> float:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        start = time.perf_counter()
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            seen += sum(len(m) for m in batch.values())
        return time.perf_counter() - start
    finally:
        await consumer.stop()


def runner_for(bootstrap: str, topic: str, lake_dir: Path) -> ConsumerRunner:
    return ConsumerRunner(
        bootstrap_servers=bootstrap,
        topics=[topic],
        group_id=f"bench-{uuid.uuid4().hex[:8]}",
        sink=LakeSink(lake_dir),
        max_batch_rows=50_000,
        max_batch_age_s=2.0,
    )


async def land(bootstrap: str, topic: str, n: int, lake_dir: Path) -> float:
    runner = runner_for(bootstrap, topic, lake_dir)
    task = asyncio.create_task(runner.run())
    start = None
    while runner.records < n:
        if start is None and (runner.ready or runner.records):
            # from the assignment: group join excluded (a small run can be fetched whole
            # within one poll of this loop, so the first record is too late a mark)
            start = time.perf_counter()
        if task.done():
            task.result()
        await asyncio.sleep(0.001 if start is None else 0.01)
    runner.stop()
    await task  # the final flush and commit are part of landing
    assert start is not None
    return time.perf_counter() - start


class Watcher(threading.Thread):
    """Records when each Parquet file first became visible (polls every 20 ms)."""

    def __init__(self, root: Path) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.seen: dict[Path, float] = {}
        self.running = True

    def run(self) -> None:
        while self.running:
            now = time.time()
            if self.root.exists():
                for path in self.root.rglob("*.parquet"):
                    self.seen.setdefault(path, now)
            time.sleep(0.02)


def freshness(
    bootstrap: str, topic: str, lake_dir: Path, rows: list[dict[str, object]], rate: float, seconds: float
) -> tuple[float, float, int]:
    watcher = Watcher(lake.table_dir(lake_dir))
    watcher.start()
    runner = runner_for(bootstrap, topic, lake_dir)
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
    for path, seen in watcher.seen.items():
        times = pl.read_parquet(path, columns=["event_time"])["event_time"]
        lags.append(seen - times.dt.epoch("us").cast(pl.Float64) / 1e6)
    all_lags = pl.concat(lags)
    return float(all_lags.quantile(0.5)), float(all_lags.quantile(0.99)), all_lags.len()


@dataclass
class Result:
    n: int
    value_bytes: int
    produce_s: float
    raw_s: float
    land_s: float
    landed: int
    files: int
    parquet_bytes: int
    p50: float
    p99: float
    fresh_n: int


def measure(bootstrap: str, args: argparse.Namespace, rows: list[dict[str, object]]) -> Result:
    """The four phases against one broker."""
    topic, fresh_topic = f"bench-{uuid.uuid4().hex[:8]}", f"bench-fresh-{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_topics(bootstrap, {topic: PARTITIONS, fresh_topic: PARTITIONS}))
    n = args.events
    t0 = time.perf_counter()
    value_bytes = produce(bootstrap, topic, n, rows)
    produce_s = time.perf_counter() - t0
    raw_s = asyncio.run(raw_consume(bootstrap, topic, n))
    with tempfile.TemporaryDirectory(prefix="bench-lake-") as tmp:
        lake_dir = Path(tmp)
        land_s = asyncio.run(land(bootstrap, topic, n, lake_dir))
        files = list(lake.table_dir(lake_dir).rglob("*.parquet"))
        parquet_bytes = sum(f.stat().st_size for f in files)
        landed = (
            pl.scan_parquet(lake.parquet_glob(lake_dir), hive_partitioning=False)
            .select(pl.len())
            .collect()
            .item()
        )
    with tempfile.TemporaryDirectory(prefix="bench-fresh-") as tmp:
        p50, p99, fresh_n = freshness(bootstrap, fresh_topic, Path(tmp), rows, args.rate, args.fresh_seconds)
    return Result(
        n, value_bytes, produce_s, raw_s, land_s, landed, len(files), parquet_bytes, p50, p99, fresh_n
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    brokers.add_argument(ap)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--rate", type=float, default=20_000, help="steady produce rate of the freshness phase")
    ap.add_argument("--fresh-seconds", type=float, default=20)
    args = ap.parse_args()
    rows = feature_rows()
    results: dict[str, Result] = {}
    for name in brokers.selected(args.broker):
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as work:
            print(f"{brokers.LABELS[name]}: starting", flush=True)
            with brokers.running(name, Path(work)) as bootstrap:
                r = results[name] = measure(bootstrap, args, rows)
            print(
                f"{brokers.LABELS[name]}: produced {r.n:,} events ({r.value_bytes / r.n:.0f} B each) in "
                f"{r.produce_s:.1f}s ({r.n / r.produce_s:,.0f}/s, confluent-kafka, lz4)",
                flush=True,
            )
    print()
    print("| broker | phase | events | seconds | events/s | MB/s (JSON values) |")
    print("|---|---|---:|---:|---:|---:|")
    for name, r in results.items():
        mb = r.value_bytes / 1e6
        label = brokers.LABELS[name]
        print(
            f"| {label} | raw consume (getmany, nothing else) | {r.n:,} | {r.raw_s:.2f} "
            f"| {r.n / r.raw_s:,.0f} | {mb / r.raw_s:.1f} |"
        )
        print(
            f"| {label} | landing (parse, Parquet, fsync, commit) | {r.landed:,} | {r.land_s:.2f} "
            f"| {r.n / r.land_s:,.0f} | {mb / r.land_s:.1f} |"
        )
    print()
    print("| broker | freshness (max batch age 2 s) | events | p50 s | p99 s |")
    print("|---|---|---:|---:|---:|")
    for name, r in results.items():
        print(
            f"| {brokers.LABELS[name]} | steady {args.rate:,.0f} events/s for {args.fresh_seconds:.0f} s "
            f"| {r.fresh_n:,} | {r.p50:.2f} | {r.p99:.2f} |"
        )
    print()
    for name, r in results.items():
        print(
            f"{brokers.LABELS[name]}: Parquet {r.files} files, {r.parquet_bytes / 1e6:.1f} MB, "
            f"{r.parquet_bytes / r.n:.0f} B per event (JSON on the wire: {r.value_bytes / r.n:.0f} B)"
        )
        if r.landed != r.n:
            print(f"WARNING: {name}: {r.landed:,} rows landed for {r.n:,} events")
    print(
        " ".join(
            f"{name}_landing_events_per_s={r.n / r.land_s:.0f} {name}_ratio_to_raw={r.raw_s / r.land_s:.2f} "
            f"{name}_freshness_p99_s={r.p99:.2f}"
            for name, r in results.items()
        )
    )


if __name__ == "__main__":
    main()
