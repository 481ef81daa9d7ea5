"""Kafka health for ``inferstream kafka status``: topics, partitions, leaders and
in-sync replicas, end offsets, committed offsets and lag per consumer group, and the
lake tables' size (live files of each Delta table's snapshot); as text, JSON, or Prometheus gauges.

End offsets come from two sources. ListOffsets(latest) is the Kafka way and is right
on Kafka; Tansu answers it with the last batch's first offset + 1. The fetch response's
high watermark is right on both. So the end offset reported is the high watermark of
a fetch started at the ListOffsets answer (a fetch from there returns at most one
batch, and only its header matters), and the ListOffsets figure is shown next to it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Gauge

from common import lake
from common.errors import DependencyUnavailable
from common.topics import start_admin


@dataclass
class PartitionStatus:
    partition: int
    leader: int
    replicas: list[int]
    isr: list[int]
    end_offset: int | None  # fetch high watermark
    list_offsets_end: int | None  # ListOffsets(latest): wrong on Tansu


@dataclass
class TopicStatus:
    name: str
    partitions: list[PartitionStatus]


@dataclass
class GroupLag:
    group: str
    topic: str
    partition: int
    committed: int | None
    lag: int | None


@dataclass
class LakeTableSize:
    table: str
    files: int
    bytes: int
    rows: int
    version: int


@dataclass
class ClusterStatus:
    bootstrap: str
    topics: list[TopicStatus] = field(default_factory=list)
    groups: list[GroupLag] = field(default_factory=list)
    lake: list[LakeTableSize] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def collect(
    bootstrap: str,
    where: lake.Lake | Path | None = None,
    *,
    include_internal: bool = False,
    timeout_s: float = 15,
) -> ClusterStatus:
    admin = await start_admin(bootstrap, timeout_s)
    status = ClusterStatus(bootstrap)
    try:
        names = sorted(t for t in await admin.list_topics() if include_internal or not t.startswith("__"))
        described = await admin.describe_topics(names) if names else []
        parts: list[TopicPartition] = []
        for t in described:
            ps = sorted(t["partitions"], key=lambda p: p["partition"])
            status.topics.append(
                TopicStatus(
                    t["topic"],
                    [
                        PartitionStatus(p["partition"], p["leader"], p["replicas"], p["isr"], None, None)
                        for p in ps
                    ],
                )
            )
            parts += [TopicPartition(t["topic"], p["partition"]) for p in ps]
        ends, listed = await _end_offsets(bootstrap, parts)
        for t in status.topics:
            for p in t.partitions:
                tp = TopicPartition(t.name, p.partition)
                p.end_offset, p.list_offsets_end = ends.get(tp), listed.get(tp)
        groups = sorted(g[0] if isinstance(g, tuple) else g for g in await admin.list_consumer_groups())
        for group in groups:
            # explicit partitions: Tansu answers an open-ended request with nothing
            offsets = await admin.list_consumer_group_offsets(group, partitions=parts)
            for tp, meta in sorted(offsets.items()):
                if meta is None or meta.offset < 0:
                    continue
                end = ends.get(tp)
                status.groups.append(
                    GroupLag(
                        group, tp.topic, tp.partition, meta.offset, None if end is None else end - meta.offset
                    )
                )
    except KafkaError as exc:
        raise DependencyUnavailable(f"Kafka at {bootstrap} failed a metadata request: {exc!r}") from exc
    finally:
        await admin.close()
    if where is not None:
        for table in lake.TABLES:
            size = lake.table_size(where, table)
            if size is not None:
                status.lake.append(LakeTableSize(table, size.files, size.bytes, size.rows, size.version))
    return status


async def _end_offsets(
    bootstrap: str, parts: list[TopicPartition]
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    if not parts:
        return {}, {}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, max_partition_fetch_bytes=1024
    )
    await consumer.start()
    try:
        listed = await consumer.end_offsets(parts)
        consumer.assign(parts)
        for tp in parts:
            consumer.seek(tp, max(0, listed[tp] - 1))
        ends: dict[TopicPartition, int] = {}
        for _ in range(10):
            await consumer.getmany(timeout_ms=200, max_records=1)
            for tp in parts:
                high = consumer.highwater(tp)
                if high is not None:
                    ends[tp] = high
            if len(ends) == len(parts):
                break
        return ends, dict(listed)
    finally:
        await consumer.stop()


def registry(status: ClusterStatus) -> CollectorRegistry:
    """The status as Prometheus gauges (for a scrape endpoint or a textfile collector)."""
    r = CollectorRegistry()
    parts = Gauge("inferstream_kafka_partitions", "Partitions of a topic", ["topic"], registry=r)
    end = Gauge("inferstream_kafka_end_offset", "High watermark", ["topic", "partition"], registry=r)
    isr = Gauge("inferstream_kafka_isr", "In-sync replicas", ["topic", "partition"], registry=r)
    committed = Gauge(
        "inferstream_kafka_committed_offset", "Committed offset", ["group", "topic", "partition"], registry=r
    )
    lag = Gauge(
        "inferstream_kafka_group_lag",
        "End offset minus committed",
        ["group", "topic", "partition"],
        registry=r,
    )
    files = Gauge("inferstream_lake_files", "Parquet files", ["table"], registry=r)
    size = Gauge("inferstream_lake_bytes", "Parquet bytes on disk", ["table"], registry=r)
    for t in status.topics:
        parts.labels(t.name).set(len(t.partitions))
        for p in t.partitions:
            isr.labels(t.name, str(p.partition)).set(len(p.isr))
            if p.end_offset is not None:
                end.labels(t.name, str(p.partition)).set(p.end_offset)
    for g in status.groups:
        if g.committed is not None:
            committed.labels(g.group, g.topic, str(g.partition)).set(g.committed)
        if g.lag is not None:
            lag.labels(g.group, g.topic, str(g.partition)).set(g.lag)
    for t in status.lake:
        files.labels(t.table).set(t.files)
        size.labels(t.table).set(t.bytes)
    return r


def render(status: ClusterStatus) -> str:
    lines = [f"Kafka at {status.bootstrap}", ""]
    lines.append(
        f"{'topic':<48} {'part':>4} {'leader':>6} {'isr':>8} {'end (fetch)':>12} {'end (ListOffsets)':>18}"
    )
    for t in status.topics:
        for p in t.partitions:
            lines.append(
                f"{t.name:<48} {p.partition:>4} {p.leader:>6} {','.join(map(str, p.isr)):>8} "
                f"{_n(p.end_offset):>12} {_n(p.list_offsets_end):>18}"
            )
    lines += ["", f"{'group':<24} {'topic':<48} {'part':>4} {'committed':>10} {'lag':>8}"]
    for g in status.groups:
        lines.append(f"{g.group:<24} {g.topic:<48} {g.partition:>4} {_n(g.committed):>10} {_n(g.lag):>8}")
    totals: dict[str, int] = {}
    for g in status.groups:
        totals[g.group] = totals.get(g.group, 0) + (g.lag or 0)
    lines += ["", "lag per group: " + (", ".join(f"{k}={v}" for k, v in totals.items()) or "no groups")]
    lines += [
        f"lake {t.table}: {t.rows} rows, {t.files} files, {t.bytes / 1e6:.1f} MB, version {t.version}"
        for t in status.lake
    ]
    return "\n".join(lines)


def _n(v: int | None) -> str:
    return "-" if v is None else str(v)
