"""Prometheus metrics of one API process (a registry per app, so tests can build many)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from api.publisher import EventPublisher


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "inferstream_requests", "HTTP requests", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "inferstream_request_seconds",
            "Request latency",
            ["route"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.model_latency = Histogram(
            "inferstream_model_seconds",
            "Time inside the model",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05),
            registry=self.registry,
        )

    def watch(self, publisher: EventPublisher) -> None:
        self.registry.register(_PublisherCollector(publisher))


class _PublisherCollector(Collector):
    def __init__(self, publisher: EventPublisher) -> None:
        self.p = publisher

    def collect(self):  # type: ignore[no-untyped-def]
        s = self.p.stats
        yield CounterMetricFamily("inferstream_events_enqueued", "Events handed to the publisher", s.enqueued)
        yield CounterMetricFamily("inferstream_events_published", "Events acknowledged by Kafka", s.published)
        yield CounterMetricFamily(
            "inferstream_events_send_failures", "Failed send attempts (retried)", s.failed_sends
        )
        dropped = CounterMetricFamily(
            "inferstream_events_dropped", "Events dropped, by reason", labels=["reason"]
        )
        for reason, n in sorted(s.dropped.items()):
            dropped.add_metric([reason], n)
        yield dropped
        yield GaugeMetricFamily("inferstream_publisher_queue_depth", "Events waiting", self.p.queue_depth)
        yield GaugeMetricFamily(
            "inferstream_broker_connected", "1 if the last send succeeded", int(self.p.broker_connected)
        )
