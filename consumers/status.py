"""Kafka health for ``inferstream kafka status``: brokers (online, offline) and their
log directories' disk usage, topics, partitions, leaders and in-sync replicas (under-
replicated and offline partitions), end offsets, committed offsets and lag per consumer
group, and the lake tables' size (live files of each Delta table's snapshot); as text,
JSON, or Prometheus gauges.

An offline broker is one that partitions name as a replica but the cluster's metadata
no longer lists (Kafka fences a broker that stops heartbeating). A partition is under-
replicated when its ISR is smaller than its replica set, offline when it has no leader.

End offsets come from ListOffsets(latest), the Kafka way. The embedded Tansu broker
answers ListOffsets with the last batch's first offset + 1; on Tansu (recognised by its
cluster id) the end offset is instead the high watermark of a fetch started at the
ListOffsets answer, which is right there (a fetch from there returns at most one batch,
and only its header matters).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Gauge

from common import lake
from common.errors import DependencyUnavailable
from common.topics import start_admin
from consumers.logdirs import LogDirUsage, describe_log_dirs

TANSU_CLUSTER_ID = "tansu_cluster"  # the cluster id Tansu reports in DescribeCluster


@dataclass
class PartitionStatus:
    partition: int
    leader: int
    replicas: list[int]
    isr: list[int]
    end_offset: int | None  # ListOffsets(latest); on Tansu the fetch high watermark

    @property
    def under_replicated(self) -> bool:
        return len(self.isr) < len(self.replicas)

    @property
    def offline(self) -> bool:
        return self.leader < 0


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
class BrokerStatus:
    node_id: int
    address: str | None  # None: offline (not in the cluster's metadata)
    online: bool
    log_dirs: list[LogDirUsage] = field(default_factory=list)
    log_dirs_error: str | None = None


@dataclass
class ClusterStatus:
    bootstrap: str
    cluster_id: str = ""
    brokers: list[BrokerStatus] = field(default_factory=list)
    topics: list[TopicStatus] = field(default_factory=list)
    groups: list[GroupLag] = field(default_factory=list)
    lake: list[LakeTableSize] = field(default_factory=list)

    @property
    def under_replicated(self) -> list[tuple[str, int]]:
        return [(t.name, p.partition) for t in self.topics for p in t.partitions if p.under_replicated]

    @property
    def offline_partitions(self) -> list[tuple[str, int]]:
        return [(t.name, p.partition) for t in self.topics for p in t.partitions if p.offline]

    @property
    def offline_brokers(self) -> list[int]:
        return [b.node_id for b in self.brokers if not b.online]

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["under_replicated_partitions"] = [{"topic": t, "partition": p} for t, p in self.under_replicated]
        out["offline_partitions"] = [{"topic": t, "partition": p} for t, p in self.offline_partitions]
        out["offline_brokers"] = self.offline_brokers
        for t_out, t in zip(out["topics"], self.topics, strict=True):
            for p_out, p in zip(t_out["partitions"], t.partitions, strict=True):
                p_out["under_replicated"] = p.under_replicated
        return out


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
        cluster = await admin.describe_cluster()
        status.cluster_id = str(cluster.get("cluster_id") or "")
        live = {int(b["node_id"]): f"{b['host']}:{b['port']}" for b in cluster["brokers"]}
        parts, named = await _collect_topics(admin, status, include_internal)
        await _collect_brokers(admin, status, live, named)
        ends = await _collect_end_offsets(bootstrap, status)
        await _collect_groups(admin, status, parts, ends)
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


async def _collect_topics(
    admin: AIOKafkaAdminClient, status: ClusterStatus, include_internal: bool
) -> tuple[list[TopicPartition], set[int]]:
    """The topics' partitions into ``status``; returns them, and the brokers they name."""
    names = sorted(t for t in await admin.list_topics() if include_internal or not t.startswith("__"))
    described = await admin.describe_topics(names) if names else []
    parts: list[TopicPartition] = []
    named: set[int] = set()
    for t in described:
        ps = sorted(t["partitions"], key=lambda p: p["partition"])
        status.topics.append(
            TopicStatus(
                t["topic"],
                [PartitionStatus(p["partition"], p["leader"], p["replicas"], p["isr"], None) for p in ps],
            )
        )
        parts += [TopicPartition(t["topic"], p["partition"]) for p in ps]
        named.update(r for p in ps for r in p["replicas"])
    return parts, named


async def _collect_brokers(
    admin: AIOKafkaAdminClient, status: ClusterStatus, live: dict[int, str], named: set[int]
) -> None:
    """Brokers in the metadata (online) or only named by partitions (offline)."""
    for node_id in sorted(set(live) | named):
        broker = BrokerStatus(node_id, live.get(node_id), node_id in live)
        if broker.online and status.cluster_id != TANSU_CLUSTER_ID:
            try:
                broker.log_dirs = await describe_log_dirs(admin, node_id)
            except (KafkaError, OSError, TimeoutError) as exc:
                broker.log_dirs_error = repr(exc)
        status.brokers.append(broker)


async def _collect_end_offsets(bootstrap: str, status: ClusterStatus) -> dict[TopicPartition, int]:
    # a partition with no leader has no end offset to ask for
    led = [TopicPartition(t.name, p.partition) for t in status.topics for p in t.partitions if not p.offline]
    ends = await _end_offsets(bootstrap, led, fetch_high_watermark=status.cluster_id == TANSU_CLUSTER_ID)
    for t in status.topics:
        for p in t.partitions:
            p.end_offset = ends.get(TopicPartition(t.name, p.partition))
    return ends


async def _collect_groups(
    admin: AIOKafkaAdminClient,
    status: ClusterStatus,
    parts: list[TopicPartition],
    ends: dict[TopicPartition, int],
) -> None:
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


async def _end_offsets(
    bootstrap: str, parts: list[TopicPartition], *, fetch_high_watermark: bool
) -> dict[TopicPartition, int]:
    """ListOffsets(latest) per partition; with ``fetch_high_watermark`` (Tansu, whose
    ListOffsets is wrong), the high watermark of a fetch started there instead."""
    if not parts:
        return {}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=1024,
        request_timeout_ms=10_000,
    )
    await consumer.start()
    try:
        listed: dict[TopicPartition, int] = dict(await consumer.end_offsets(parts))
        if not fetch_high_watermark:
            return listed
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
        return ends
    finally:
        await consumer.stop()


def registry(status: ClusterStatus) -> CollectorRegistry:
    """The status as Prometheus gauges (for a scrape endpoint or a textfile collector)."""
    r = CollectorRegistry()
    _broker_gauges(r, status)
    _partition_gauges(r, status)
    _group_gauges(r, status)
    _lake_gauges(r, status)
    return r


def _broker_gauges(r: CollectorRegistry, status: ClusterStatus) -> None:
    brokers = Gauge("inferstream_kafka_brokers", "Brokers by state", ["state"], registry=r)
    online = Gauge(
        "inferstream_kafka_broker_online", "1 if the broker is in the metadata", ["broker"], registry=r
    )
    urp = Gauge(
        "inferstream_kafka_under_replicated_partitions", "Partitions whose ISR < replicas", registry=r
    )
    offline = Gauge("inferstream_kafka_offline_partitions", "Partitions without a leader", registry=r)
    bd = ["broker", "log_dir"]
    dir_bytes = Gauge("inferstream_kafka_log_dir_bytes", "Bytes of partition data", bd, registry=r)
    dir_total = Gauge("inferstream_kafka_log_dir_total_bytes", "Size of the log dir's volume", bd, registry=r)
    dir_usable = Gauge("inferstream_kafka_log_dir_usable_bytes", "Free bytes on the volume", bd, registry=r)
    brokers.labels("online").set(sum(b.online for b in status.brokers))
    brokers.labels("offline").set(len(status.offline_brokers))
    urp.set(len(status.under_replicated))
    offline.set(len(status.offline_partitions))
    for b in status.brokers:
        online.labels(str(b.node_id)).set(int(b.online))
        for d in b.log_dirs:
            dir_bytes.labels(str(b.node_id), d.log_dir).set(d.bytes)
            if d.total_bytes is not None:
                dir_total.labels(str(b.node_id), d.log_dir).set(d.total_bytes)
            if d.usable_bytes is not None:
                dir_usable.labels(str(b.node_id), d.log_dir).set(d.usable_bytes)


def _partition_gauges(r: CollectorRegistry, status: ClusterStatus) -> None:
    tp = ["topic", "partition"]
    parts = Gauge("inferstream_kafka_partitions", "Partitions of a topic", ["topic"], registry=r)
    end = Gauge("inferstream_kafka_end_offset", "End offset (ListOffsets latest)", tp, registry=r)
    replicas = Gauge("inferstream_kafka_replicas", "Assigned replicas", tp, registry=r)
    isr = Gauge("inferstream_kafka_isr", "In-sync replicas", tp, registry=r)
    for t in status.topics:
        parts.labels(t.name).set(len(t.partitions))
        for p in t.partitions:
            isr.labels(t.name, str(p.partition)).set(len(p.isr))
            replicas.labels(t.name, str(p.partition)).set(len(p.replicas))
            if p.end_offset is not None:
                end.labels(t.name, str(p.partition)).set(p.end_offset)


def _group_gauges(r: CollectorRegistry, status: ClusterStatus) -> None:
    committed = Gauge(
        "inferstream_kafka_committed_offset", "Committed offset", ["group", "topic", "partition"], registry=r
    )
    lag = Gauge(
        "inferstream_kafka_group_lag",
        "End offset minus committed",
        ["group", "topic", "partition"],
        registry=r,
    )
    for g in status.groups:
        if g.committed is not None:
            committed.labels(g.group, g.topic, str(g.partition)).set(g.committed)
        if g.lag is not None:
            lag.labels(g.group, g.topic, str(g.partition)).set(g.lag)


def _lake_gauges(r: CollectorRegistry, status: ClusterStatus) -> None:
    files = Gauge("inferstream_lake_files", "Parquet files", ["table"], registry=r)
    size = Gauge("inferstream_lake_bytes", "Parquet bytes on disk", ["table"], registry=r)
    for table in status.lake:
        files.labels(table.table).set(table.files)
        size.labels(table.table).set(table.bytes)


def render(status: ClusterStatus) -> str:
    lines = [f"Kafka at {status.bootstrap} (cluster {status.cluster_id or '?'})", ""]
    health = "healthy"
    if status.offline_brokers or status.under_replicated or status.offline_partitions:
        health = (
            f"DEGRADED: {len(status.offline_brokers)} broker(s) offline, "
            f"{len(status.under_replicated)} under-replicated and "
            f"{len(status.offline_partitions)} offline partition(s)"
        )
    lines.append(f"cluster: {health}")
    lines.append(f"{'broker':>6} {'state':<8} {'address':<22} {'log dir':<44} {'data':>10} {'free':>10}")
    for b in status.brokers:
        state = "online" if b.online else "OFFLINE"
        if not b.log_dirs:
            note = b.log_dirs_error or ("-" if b.online else "")
            lines.append(f"{b.node_id:>6} {state:<8} {b.address or '-':<22} {note:<44}")
        for d in b.log_dirs:
            lines.append(
                f"{b.node_id:>6} {state:<8} {b.address or '-':<22} {d.log_dir[-44:]:<44} "
                f"{_mb(d.bytes):>10} {_mb(d.usable_bytes):>10}"
            )
    lines += ["", f"{'topic':<48} {'part':>4} {'leader':>6} {'replicas':>9} {'isr':>9} {'end':>10}"]
    for t in status.topics:
        for p in t.partitions:
            flag = "  under-replicated" if p.under_replicated else ""
            flag = "  OFFLINE (no leader)" if p.offline else flag
            lines.append(
                f"{t.name:<48} {p.partition:>4} {p.leader:>6} {','.join(map(str, p.replicas)):>9} "
                f"{','.join(map(str, p.isr)):>9} {_n(p.end_offset):>10}{flag}"
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


def _mb(v: int | None) -> str:
    return "-" if v is None else f"{v / 1e6:,.1f} MB"
