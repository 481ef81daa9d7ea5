"""Prometheus metrics of a consumer process (one registry per runner, so tests and
several runners in one process do not collide)."""

from __future__ import annotations

import platform
from importlib.metadata import version

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics


class ConsumerMetrics:
    def __init__(self, group: str, registry: CollectorRegistry | None = None) -> None:
        # no `_created` twin per counter (the ignore: the function is unannotated in prometheus_client)
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry or CollectorRegistry()
        self.group = group
        Gauge(
            "inferstream_build_info",
            "Always 1; labels say which inferstream and Python run the consumer",
            ["version", "python"],
            registry=self.registry,
        ).labels(version("inferstream"), platform.python_version()).set(1)
        labels = ["group"]
        self.records = Counter(
            "inferstream_consumer_records", "Records consumed", labels, registry=self.registry
        ).labels(group)
        self.batches = Counter(
            "inferstream_consumer_batches",
            "Batches made durable and committed",
            labels,
            registry=self.registry,
        ).labels(group)
        self.dead_letters = Counter(
            "inferstream_consumer_dead_letters",
            "Poison records sent to the DLQ",
            labels,
            registry=self.registry,
        ).labels(group)
        self.flush_failures = Counter(
            "inferstream_consumer_flush_failures",
            "Failed flush attempts (retried)",
            labels,
            registry=self.registry,
        ).labels(group)
        self.flush_seconds = Histogram(
            "inferstream_consumer_flush_seconds",
            "Flush + commit latency",
            labels,
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        ).labels(group)
        self._lag = Gauge(
            "inferstream_consumer_lag",
            "High watermark minus position, per partition",
            ["group", "topic", "partition"],
            registry=self.registry,
        )
        self.log_changes = Counter(
            "inferstream_consumer_log_changes",
            "Partitions whose log was replaced under the consumer (broker restarted empty, topic re-created)",
            labels,
            registry=self.registry,
        ).labels(group)
        self.pending = Gauge(
            "inferstream_consumer_pending_records",
            "Records added but not yet durable",
            labels,
            registry=self.registry,
        ).labels(group)

        self.stuck = Gauge(
            "inferstream_consumer_stuck",
            "1 when nothing was committed for stuck_after_s while records wait",
            labels,
            registry=self.registry,
        ).labels(group)
        self.seconds_since_progress = Gauge(
            "inferstream_consumer_seconds_since_progress",
            "Seconds since the last commit (or since the last moment with nothing to read)",
            labels,
            registry=self.registry,
        ).labels(group)

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        self._lag.labels(self.group, topic, str(partition)).set(lag)

    def forget_partition(self, topic: str, partition: int) -> None:
        try:
            self._lag.remove(self.group, topic, str(partition))
        except KeyError:
            pass
