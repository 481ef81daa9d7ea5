"""The app's lifespan: load the model, start the publisher and the metrics sync; on
shutdown drain the publisher. The requests see it all as one :class:`~api.state.ApiState`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI

from api.auth import KeyStore
from api.emit import Emitter
from api.metrics import ApiMetrics
from api.model import ServedModel
from api.publisher import EventPublisher
from api.settings import ApiSettings
from api.spool import Spool
from api.state import ApiState, LifespanState
from common import artifact
from common.artifact import ModelMetadata

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lifespan:
    """What :func:`api.app.create_app` prepared; called by Starlette with the app.
    ``publisher``: one to use instead of building it from the settings (tests, bench)."""

    settings: ApiSettings
    meta: ModelMetadata
    metrics: ApiMetrics
    emitter: Emitter
    keys: KeyStore | None
    publisher: EventPublisher | None = None

    @asynccontextmanager
    async def __call__(self, app: FastAPI) -> AsyncIterator[LifespanState]:
        settings, metrics = self.settings, self.metrics
        model = _load_model(settings.models_dir, self.meta, fast=settings.fast_inference)
        log.info(
            "serving model %s version %s on http://%s:%d; events to topic %s via KAFKA_BOOTSTRAP_SERVERS=%s",
            model.name,
            model.version,
            settings.host,
            settings.port,
            settings.events_topic,
            settings.kafka_bootstrap_servers,
        )
        pub = self.publisher or build_publisher(settings, metrics)
        metrics.watch(pub)
        await pub.start()
        syncer = asyncio.create_task(_sync_metrics(metrics), name="metrics-sync")
        state = ApiState(
            model=model,
            publisher=pub,
            metrics=metrics,
            emitter=self.emitter,
            keys=self.keys,
            synthetic_header=settings.synthetic_header.lower(),
            feedback_topic=settings.feedback_topic,
        )
        try:
            yield {"api": state}
        finally:
            await pub.stop(settings.drain_timeout_s)
            syncer.cancel()
            metrics.sync()
            s = pub.stats
            log.info(
                "publisher closed: enqueued=%d published=%d spooled=%d replayed=%d dropped=%s",
                s.enqueued,
                s.published,
                s.spooled,
                s.replayed,
                dict(s.dropped),
            )


async def _sync_metrics(metrics: ApiMetrics) -> None:
    # other workers' scrapes read this process's values from files: keep them fresh
    while True:
        await asyncio.sleep(1.0)
        metrics.sync()


def build_publisher(settings: ApiSettings, metrics: ApiMetrics) -> EventPublisher:
    """This process's publisher: its own spool slot, plus the slots of dead processes."""
    root = settings.spool_root
    spool = Spool.claim(root, max_bytes=settings.spool_max_bytes, segment_bytes=settings.spool_segment_bytes)
    adopted = Spool.orphans(root, exclude=spool.path)
    if not spool.empty or adopted:
        log.info("spool %s holds events from a previous run; they are replayed first", root)
    acks: str | int = settings.kafka_acks
    if settings.kafka_acks.lstrip("-").isdigit():
        acks = int(settings.kafka_acks)
    return EventPublisher(
        bootstrap_servers=settings.require_bootstrap(),
        topic=settings.events_topic,
        spool=spool,
        adopted=adopted,
        queue_size=settings.queue_size,
        batch_max_events=settings.batch_max_events,
        linger_ms=settings.linger_ms,
        compression=settings.compression,
        acks=acks,
        enable_idempotence=settings.kafka_enable_idempotence,
        client_id=f"{settings.kafka_client_id}-api",
        send_timeout_s=settings.send_timeout_s,
        probe_interval_s=settings.probe_interval_s,
        probe_max_interval_s=settings.probe_max_interval_s,
        spool_sync_interval_s=settings.spool_fsync_interval_ms / 1000.0,
        on_delivered=metrics.delivery_latency.observe,
        partitioning=settings.partitioning,
        client=settings.kafka_client,
        stall_s=settings.broker_stall_s,
        durable=settings.durable,
    )


def _load_model(models_dir: Path, meta: ModelMetadata, *, fast: bool) -> ServedModel:
    loaded_meta, estimator = artifact.load(models_dir, meta.name, meta.version)
    return ServedModel(loaded_meta, estimator, fast=fast)
