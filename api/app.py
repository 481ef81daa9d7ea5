"""The inference API: ``create_app(settings)`` builds it; the lifespan owns the model,
the publisher and the metrics. The request path validates, predicts, encodes the event
and offers it to the publisher's queue; it never awaits Kafka."""

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, create_model

from api.deps import MetricsDep, ModelDep, PublisherDep
from api.metrics import ApiMetrics
from api.model import ServedModel, features_model
from api.publisher import EventPublisher
from api.settings import ApiSettings
from api.spool import Spool
from common import artifact, events
from common.artifact import ModelMetadata

log = logging.getLogger(__name__)


class PredictResponse(BaseModel):
    prediction_id: uuid.UUID = Field(description="Also the event id in inference-events")
    model_name: str
    model_version: str
    prediction: float | int | str | None
    scores: dict[str, float] | None = None


class ModelInfo(BaseModel):
    name: str
    version: str
    task: str
    target: str
    classes: list[Any]
    features: list[dict[str, Any]]


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorBody(BaseModel):
    detail: list[ErrorItem]


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """Like FastAPI's handler, without echoing the input: NaN in an echo breaks JSON."""
    assert isinstance(exc, RequestValidationError)
    detail = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in exc.errors()
    ]
    return JSONResponse(status_code=422, content={"detail": detail})


ASGIApp = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]


class _RequestMetrics:
    """Pure ASGI middleware: count and time requests by route template and status."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, routes: set[str]) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def _send(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            route = scope["path"] if scope["path"] in self.routes else "other"
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route, str(status)).observe(time.perf_counter() - start)


def create_app(settings: ApiSettings, *, publisher: EventPublisher | None = None) -> FastAPI:
    """Build the app for the configured model. Reads the artifact's metadata (to type the
    request schema); the lifespan loads the estimator and starts the publisher."""
    model_dir = artifact.resolve_dir(settings.models_dir, settings.model_name, settings.model_version)
    meta = artifact.read_metadata(model_dir)
    Features = features_model(meta)
    PredictRequest = create_model(  # noqa: N806
        "PredictRequest",
        __config__=ConfigDict(extra="forbid"),
        features=(Features, Field(description=f"Inputs of model {meta.name} v{meta.version}")),
    )
    metrics = ApiMetrics(settings.prometheus_multiproc_dir)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        model = _load_model(settings.models_dir, meta, fast=settings.fast_inference)
        pub = publisher or _build_publisher(settings, metrics)
        metrics.watch(pub)
        await pub.start()
        syncer = asyncio.create_task(_sync_metrics(metrics), name="metrics-sync")
        try:
            yield {"model": model, "publisher": pub, "metrics": metrics}
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

    app = FastAPI(
        title="inferstream",
        version="0.1.0",
        lifespan=lifespan,
        exception_handlers={RequestValidationError: _validation_error},
        responses={422: {"model": ValidationErrorBody, "description": "Invalid input"}},
    )

    @app.post("/v1/predict", response_model=PredictResponse, responses={500: {"description": "Model error"}})
    async def predict(body: PredictRequest, model: ModelDep, publisher: PublisherDep, m: MetricsDep) -> Any:  # type: ignore[valid-type]
        received = events.utcnow()
        event_id = events.uuid7()
        features = body.features.model_dump()  # type: ignore[attr-defined]
        try:
            result = model.predict(features)
        except Exception as exc:  # noqa: BLE001 - any model failure becomes an error event
            event = events.build_event(
                event_id=event_id,
                event_time=received,
                model_name=model.name,
                model_version=model.version,
                features=features,
                prediction=None,
                scores=None,
                latency_ms=0.0,
                status="error",
                error=f"{type(exc).__name__}: {exc}"[:1000],
            )
            publisher.offer(event_id.bytes, events.encode(event))
            return JSONResponse(
                status_code=500,
                content={"detail": "model error", "prediction_id": str(event_id)},
            )
        m.model_latency.observe(result.latency_ms / 1000.0)
        event = events.build_event(
            event_id=event_id,
            event_time=received,
            model_name=model.name,
            model_version=model.version,
            features=features,
            prediction=result.prediction,
            scores=result.scores,
            latency_ms=result.latency_ms,
        )
        publisher.offer(event_id.bytes, events.encode(event))
        return {
            "prediction_id": event_id,
            "model_name": model.name,
            "model_version": model.version,
            "prediction": result.prediction,
            "scores": result.scores,
        }

    @app.get("/v1/models", response_model=list[ModelInfo])
    async def models(model: ModelDep) -> Any:
        md = model.meta
        return [
            {
                "name": md.name,
                "version": md.version,
                "task": md.task,
                "target": md.target,
                "classes": md.classes,
                "features": [f.to_json() for f in md.features],
            }
        ]

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(model: ModelDep, publisher: PublisherDep) -> dict[str, Any]:
        # ready once the model is loaded; the broker state is reported, not required
        return {
            "status": "ready",
            "model": f"{model.name}:{model.version}",
            "broker_connected": publisher.broker_connected,
            "queue_depth": publisher.queue_depth,
        }

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint(m: MetricsDep) -> Response:
        return Response(m.render(), media_type=m.content_type)

    routes = {"/v1/predict", "/v1/models", "/healthz", "/readyz", "/metrics"}
    app.add_middleware(_RequestMetrics, metrics=metrics, routes=routes)  # type: ignore[arg-type]
    return app


async def _sync_metrics(metrics: ApiMetrics) -> None:
    # other workers' scrapes read this process's values from files: keep them fresh
    while True:
        await asyncio.sleep(1.0)
        metrics.sync()


def _build_publisher(settings: ApiSettings, metrics: ApiMetrics) -> EventPublisher:
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
        spool_sync_interval_s=settings.spool_fsync_interval_ms / 1000.0,
        on_delivered=metrics.delivery_latency.observe,
    )


def _load_model(models_dir: Path, meta: ModelMetadata, *, fast: bool) -> ServedModel:
    loaded_meta, estimator = artifact.load(models_dir, meta.name, meta.version)
    return ServedModel(loaded_meta, estimator, fast=fast)


def create_app_from_env() -> FastAPI:
    """uvicorn factory entry point (``--factory api.app:create_app_from_env``)."""
    return create_app(ApiSettings())
