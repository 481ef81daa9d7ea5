"""Assembles one consumer process from its settings: topics, sink, dead letters,
metrics endpoint, signal handling. The CLI's ``consume`` command calls :func:`serve`."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal

from prometheus_client import CollectorRegistry

from common.errors import ConfigError
from common.topics import ensure_topics
from consumers.deadletters import DeadLetterProducer
from consumers.health import start_http_endpoint
from consumers.metrics import ConsumerMetrics
from consumers.producers import OutputProducer
from consumers.runner import ConsumerRunner
from consumers.settings import ConsumerSettings
from consumers.sink import Sink
from consumers.transactions import TransactionalCommitter, probe

log = logging.getLogger(__name__)

DEFAULT_GROUPS = {"drift": "drift-monitor"}
SINKS = ("lake", "audit", "fraud", "drift")
OUTPUT_SINKS = ("fraud", "drift")  # the sinks whose take_outputs() has alerts


def tune_gc(gen0_threshold: int) -> None:
    """Set the cyclic GC's first threshold for this process (0: the cyclic GC off).

    A consumer allocates container objects by the million (a record, its headers, the
    sink's lists) and keeps a batch of them alive until its flush; with Python's default
    of 700 the young collections run every few records and the older generations, which
    hold the pending batch, are walked again and again. Reference counting still frees
    almost everything; the threshold only bounds uncollected cycles."""
    if gen0_threshold == 0:
        gc.disable()
        return
    gc.enable()
    gc.set_threshold(gen0_threshold, *gc.get_threshold()[1:])


def build_sink(
    settings: ConsumerSettings, name: str, registry: CollectorRegistry | None = None
) -> tuple[Sink, list[str]]:
    """The sink and the topics it reads (``registry``: where a sink's own metrics go)."""
    if name == "lake":
        from consumers.episodes import EpisodesLakeSink
        from consumers.feedback import FeedbackLakeSink, RoutingSink
        from consumers.lake import LakeSink

        # the drift monitor's episode alerts too: the drift flow reads them from the lake
        topics = [settings.events_topic, settings.feedback_topic, settings.alerts_topic]
        group = settings.group_id or name
        sinks = {
            settings.events_topic: LakeSink(settings.lake(), group=group),
            settings.feedback_topic: FeedbackLakeSink(settings.lake(), group=group),
            settings.alerts_topic: EpisodesLakeSink(settings.lake(), group=group),
        }
        return RoutingSink(sinks), topics
    if name == "audit":
        from consumers.audit import AuditSink

        return AuditSink(settings.require_postgres(), schema=settings.audit_schema), [settings.events_topic]
    if name == "fraud":
        from consumers.fraud import FraudSink

        sink = FraudSink(
            alerts_topic=settings.alerts_topic,
            window_s=settings.fraud_window_s,
            rate_threshold=settings.fraud_rate_threshold,
            zscore_threshold=settings.fraud_zscore_threshold,
        )
        return sink, [settings.events_topic]
    if name == "drift":
        from consumers.drift import DriftSink
        from consumers.drift_window import Reference

        models_dir = settings.models_dir
        drift = DriftSink(
            load_reference=lambda model, version: Reference.from_artifact(models_dir, model, version),
            alerts_topic=settings.alerts_topic,
            window_events=settings.drift_window_events,
            min_events=settings.drift_min_events,
            eval_interval_s=settings.drift_eval_interval_s,
            consecutive=settings.drift_consecutive,
            registry=registry,
            webhook_url=settings.drift_webhook_url,
        )
        return drift, [settings.events_topic]
    raise ConfigError(f"unknown consumer {name!r}: choose one of {', '.join(SINKS)}")


async def fraud_transactions(
    settings: ConsumerSettings, bootstrap: str, group: str, client_id: str
) -> TransactionalCommitter | None:
    """The scorer's transactional committer, or None for at least once (logged in one
    line either way). ``on`` without broker transactions is a ConfigError."""
    mode = settings.fraud_transactions
    if mode == "off":
        log.info("fraud alerts at least once: INFERSTREAM_FRAUD_TRANSACTIONS=off")
        return None
    prefix = settings.fraud_transactional_id_prefix
    refused = await probe(bootstrap, f"{prefix}.{group}.probe")
    if refused is not None:
        if mode == "on":
            raise ConfigError(
                f"the broker at {bootstrap} has no transactions ({refused}): "
                "set INFERSTREAM_FRAUD_TRANSACTIONS=auto or off"
            )
        log.warning(
            "the broker at %s has no transactions (%s): fraud alerts fall back to at least once "
            "(published, then offsets committed)",
            bootstrap,
            refused,
        )
        return None
    log.info("fraud alerts exactly once: alerts and offsets commit in one transaction")
    return TransactionalCommitter(
        bootstrap_servers=bootstrap,
        group_id=group,
        transactional_id_prefix=prefix,
        dlq_topic=settings.dlq_topic,
        client_id=client_id,
        dead_letter_limit=settings.dlq_max_message_bytes,
    )


async def serve(settings: ConsumerSettings, name: str) -> ConsumerRunner:
    """Run the consumer ``name`` until SIGTERM/SIGINT; returns the stopped runner."""
    bootstrap = settings.require_bootstrap()
    group = settings.group_id or DEFAULT_GROUPS.get(name, name)
    metrics = ConsumerMetrics(group)
    sink, topics = build_sink(settings, name, metrics.registry)
    await ensure_topics(
        bootstrap,
        {
            settings.events_topic: settings.events_partitions,
            settings.feedback_topic: settings.events_partitions,
            settings.dlq_topic: settings.events_partitions,
            settings.alerts_topic: settings.events_partitions,
        },
    )
    if name == "drift":
        from consumers.drift import DriftSink
        from consumers.drift_recover import recover_episodes

        assert isinstance(sink, DriftSink)
        found = await recover_episodes(bootstrap, settings.alerts_topic, settings.drift_alerts_read_back)
        sink.restore(found)
        log.info("drift: recovered %d open episodes from %s", len(found), settings.alerts_topic)
    client_id = f"{settings.kafka_client_id}-{name}"
    transactions = (
        await fraud_transactions(settings, bootstrap, group, client_id) if name == "fraud" else None
    )
    runner = ConsumerRunner(
        bootstrap_servers=bootstrap,
        topics=topics,
        group_id=group,
        sink=sink,
        max_batch_rows=settings.max_batch_rows,
        max_batch_bytes=settings.max_batch_bytes,
        max_batch_age_s=settings.max_batch_age_s,
        poll_timeout_ms=settings.poll_timeout_ms,
        session_timeout_ms=settings.session_timeout_ms,
        client_id=client_id,
        pause_before_commit_s=settings.fault_pause_before_commit_s,
        fault_kill_at=settings.fault_kill_at,
        dead_letter_producer=DeadLetterProducer(
            bootstrap_servers=bootstrap,
            topic=settings.dlq_topic,
            group=group,
            client_id=client_id,
            max_message_bytes=settings.dlq_max_message_bytes,
        ),
        # alerts, unless they commit in the scorer's transactions
        output_producer=(
            OutputProducer(bootstrap_servers=bootstrap, client_id=client_id)
            if name in OUTPUT_SINKS and transactions is None
            else None
        ),
        metrics=metrics,
        dlq_retry_timeout_s=settings.dlq_retry_timeout_s,
        stuck_after_s=settings.stuck_after_s,
        transactions=transactions,
    )
    if settings.metrics_port is not None:
        start_http_endpoint(settings.metrics_port, metrics.registry, runner.health)
        log.info(
            "metrics on :%d/metrics, health on :%d/healthz", settings.metrics_port, settings.metrics_port
        )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runner.stop)
    log.info("consumer started sink=%s group=%s topics=%s", name, group, topics)
    try:
        await runner.run()
    finally:
        sink.close()
    log.info(
        "consumer stopped sink=%s group=%s records=%d batches=%d dead_letters=%d",
        name,
        group,
        runner.records,
        runner.batches,
        runner.dead_letters,
    )
    return runner
