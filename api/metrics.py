"""Prometheus metrics of the API (a registry per app, so tests can build many).

The publisher keeps plain integer counters (the request path pays nothing for
them); ``sync`` copies their increments into real prometheus counters and gauges,
at every scrape and once a second. That is what makes several uvicorn workers work:
in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set before the workers start, as
``inferstream api --workers N`` does) each worker writes its values to files there and
``/metrics`` served by any worker sums the whole service.

Labels: a process serves one model version, so the request and model-time families
carry ``model`` and ``version`` (the model's, as the drift families name them): a
dashboard or an alert can split or join by them across API replicas and drift.
``inferstream_build_info`` says which inferstream (``version``, as the convention for
build info has it) and Python serve. The publisher's families (events, spool, queue,
broker) describe the process's delivery, whatever the model, and carry none.
"""

from __future__ import annotations

import platform
from importlib.metadata import version
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

from api.publisher import EventPublisher

_VERSION = version("inferstream")
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
_STAT_COUNTERS = ("enqueued", "published", "spooled", "replayed", "failed_sends", "stalled_sends")


class ApiMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(
        self, multiprocess_dir: Path | None = None, *, model: str = "", model_version: str = ""
    ) -> None:
        # counters without a `_created` twin each: nobody graphs process start times
        disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated in prometheus_client
        self.multiprocess_dir = multiprocess_dir
        self.registry = r = CollectorRegistry()
        self.model = (model, model_version)
        Gauge(
            "inferstream_build_info",
            "Always 1; labels say which inferstream and Python serve",
            ["version", "python"],
            registry=r,
            multiprocess_mode="max",
        ).labels(_VERSION, platform.python_version()).set(1)
        self.requests = Counter(
            "inferstream_requests", "HTTP requests", ["model", "version", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "inferstream_request_seconds",
            "Request latency by route and status",
            ["model", "version", "route", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.model_latency = Histogram(
            "inferstream_model_seconds",
            "Time inside the model",
            ["model", "version"],
            buckets=(0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05),
            registry=r,
        ).labels(model, model_version)
        self.delivery_latency = Histogram(
            "inferstream_delivery_seconds",
            "Age of a batch's oldest event when Kafka acknowledged the batch",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.events = {
            name: Counter(f"inferstream_events_{name}", f"Events {name.replace('_', ' ')}", registry=r)
            for name in _STAT_COUNTERS
        }
        self.dropped = Counter(
            "inferstream_events_dropped", "Events dropped, by reason", ["reason"], registry=r
        )
        self.sampled_out = Counter(
            "inferstream_events_sampled_out", "Events not published by sampling", ["model"], registry=r
        )
        self.oversized = Counter(
            "inferstream_events_oversized", "Events whose features were replaced by a digest", registry=r
        )
        self.spool_corrupt = Counter(
            "inferstream_spool_corrupt_records", "Corrupt spool records skipped", registry=r
        )
        self.queue_depth = Gauge(
            "inferstream_publisher_queue_depth",
            "Events waiting in memory",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.spool_bytes = Gauge(
            "inferstream_spool_bytes", "Bytes held by the disk spool", registry=r, multiprocess_mode="livesum"
        )
        self.broker_connected = Gauge(
            "inferstream_broker_connected",
            "1 if the publisher can reach Kafka (min over workers)",
            registry=r,
            multiprocess_mode="livemin",
        )
        self._publisher: EventPublisher | None = None
        self._seen: dict[str, int] = {}

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(*self.model, route, str(status)).inc()
        self.latency.labels(*self.model, route, str(status)).observe(seconds)

    def watch(self, publisher: EventPublisher) -> None:
        self._publisher = publisher

    def sync(self) -> None:
        """Copy the publisher's counters (as increments) and gauges into prometheus."""
        p = self._publisher
        if p is None:
            return
        s = p.stats
        for name in _STAT_COUNTERS:
            self._inc(name, self.events[name], getattr(s, name))
        for reason, n in list(s.dropped.items()):
            self._inc(f"dropped:{reason}", self.dropped.labels(reason), n)
        self._inc("corrupt", self.spool_corrupt, p.spool_corrupt)
        self.queue_depth.set(p.queue_depth)
        self.spool_bytes.set(p.spool_bytes)
        self.broker_connected.set(int(p.broker_connected))

    def _inc(self, key: str, counter: Counter, value: int) -> None:
        delta = value - self._seen.get(key, 0)
        if delta > 0:
            counter.inc(delta)
            self._seen[key] = value

    def render(self) -> bytes:
        self.sync()
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=str(self.multiprocess_dir))  # type: ignore[no-untyped-call]  # unannotated in prometheus_client
        return generate_latest(merged)
