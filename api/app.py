"""The inference API: ``create_app(settings)`` builds it; the lifespan owns the model,
the publisher and the metrics. The request path validates, predicts, encodes the event
and offers it to the publisher's queue; it never awaits Kafka, the disk or a database."""

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPBearer
from pydantic import ConfigDict, Field, create_model

from api.access import KeyCheck
from api.auth import KeyStore, Principal
from api.deps import ModelDep, PublisherDep
from api.emit import Emitter
from api.limits import BodyLimit
from api.metrics import ApiMetrics
from api.model import NonFiniteOutput, ServedModel, features_model
from api.publisher import EventPublisher, SpoolFull
from api.schemas import (
    BatchItem,
    BatchResponse,
    ErrorBody,
    FeedbackRequest,
    FeedbackResponse,
    ModelInfo,
    PredictResponse,
    Readiness,
    ValidationErrorBody,
)
from api.settings import ApiSettings
from api.shaping import PiiMasker
from api.spool import Spool
from common import artifact, events
from common.artifact import ModelMetadata
from common.errors import ConfigError

log = logging.getLogger(__name__)

ROUTES = {
    "/v1/predict",
    "/v1/predict/batch",
    "/v1/feedback",
    "/v1/models",
    "/healthz",
    "/readyz",
    "/metrics",
}


async def _spool_full(request: Request, exc: Exception) -> JSONResponse:
    """Durable mode: an event that cannot be stored is not acknowledged."""
    return JSONResponse(
        status_code=503,
        content={"detail": f"{exc}: nothing was acknowledged; retry later"},
        headers={"Retry-After": "1"},
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """Like FastAPI's handler, without echoing the input: NaN in an echo breaks JSON."""
    assert isinstance(exc, RequestValidationError)
    detail = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in exc.errors()
    ]
    return JSONResponse(status_code=422, content={"detail": detail})


RECEIVED_AT = "inferstream_received_perf"
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
        # request.state reads scope["state"]: the event's HTTP latency counts from here
        scope.setdefault("state", {})[RECEIVED_AT] = start

        async def _send(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            route = scope["path"] if scope["path"] in self.routes else "other"
            self.metrics.observe_request(route, status, time.perf_counter() - start)


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The body is not parseable (not UTF-8 JSON)"},
    401: {"model": ErrorBody, "description": "No API key, or an unknown one"},
    403: {"model": ErrorBody, "description": "The key lacks the route's role"},
    413: {"model": ErrorBody, "description": "Body over the size limit"},
    422: {"model": ValidationErrorBody, "description": "Invalid input; loc names the field"},
    503: {"model": ErrorBody, "description": "Durable mode only: the event spool is full"},
    429: {
        "model": ErrorBody,
        "description": "The key is over its rate limit (a batch costs one token per item)",
        "headers": {"Retry-After": {"description": "Seconds until a token", "schema": {"type": "integer"}}},
    },
}


def _security_docs(keys: KeyStore | None) -> list[Any]:
    """Route dependencies that only declare the key schemes in the OpenAPI schema (the
    check itself is :class:`api.access.KeyCheck`, before the body is read); none when
    auth is off: each dependency costs FastAPI ~30 us a request."""
    if keys is None:
        return []
    return [
        Security(APIKeyHeader(name="X-API-Key", auto_error=False)),
        Security(HTTPBearer(auto_error=False)),
    ]


def _roles(settings: ApiSettings) -> dict[str, str]:
    """Path → the role its key needs (with auth on)."""
    roles = {
        "/v1/predict": "predict",
        "/v1/predict/batch": "predict",
        "/v1/feedback": "feedback",
        "/v1/models": "predict",
    }
    if settings.metrics_access == "key":
        roles["/metrics"] = "metrics"
    if settings.docs_access == "key":
        roles["/openapi.json"] = "predict"
    return roles


def _key_store(settings: ApiSettings) -> KeyStore | None:
    if not settings.auth_enabled:
        return None
    if not settings.api_keys:
        raise ConfigError(
            "authentication is on but INFERSTREAM_API_KEYS is empty: add a key (make one with "
            "`inferstream api-key`), or set INFERSTREAM_AUTH_ENABLED=false for a local demo"
        )
    return KeyStore(settings.api_keys, settings.rate_limit_per_key)


def _masker(settings: ApiSettings) -> PiiMasker:
    if settings.pii_fields and settings.pii_hmac_key is None:
        raise ConfigError("INFERSTREAM_PII_FIELDS is set but INFERSTREAM_PII_HMAC_KEY is not: set the key")
    key = settings.pii_hmac_key.get_secret_value().encode() if settings.pii_hmac_key else b""
    return PiiMasker(settings.pii_fields, key)


def create_app(settings: ApiSettings, *, publisher: EventPublisher | None = None) -> FastAPI:
    """Build the app for the configured model. Reads the artifact's metadata (to type the
    request schema); the lifespan loads the estimator and starts the publisher."""
    model_dir = artifact.resolve_dir(settings.models_dir, settings.model_name, settings.model_version)
    meta = artifact.read_metadata(model_dir)
    unknown_pii = set(settings.pii_fields) - {f.name for f in meta.features}
    if unknown_pii:
        raise ConfigError(f"INFERSTREAM_PII_FIELDS names no feature of the model: {sorted(unknown_pii)}")
    Features = features_model(meta, settings.max_abs_feature_value)  # noqa: N806
    PredictRequest = create_model(  # noqa: N806
        "PredictRequest",
        __config__=ConfigDict(extra="forbid"),
        features=(Features, Field(description=f"Inputs of model {meta.name} v{meta.version}")),
    )
    PredictBatchRequest = create_model(  # noqa: N806
        "PredictBatchRequest",
        __config__=ConfigDict(extra="forbid"),
        items=(
            list[PredictRequest],
            Field(min_length=1, max_length=settings.batch_max_items, description="At most batch_max_items"),
        ),
    )
    metrics = ApiMetrics(settings.prometheus_multiproc_dir, model=meta.name, model_version=meta.version)
    keys = _key_store(settings)
    emitter = Emitter(
        metrics,
        sample_rates=settings.sample_rates,
        max_event_bytes=settings.max_event_bytes,
        masker=_masker(settings),
    )
    synthetic_header = settings.synthetic_header.lower()
    docs_pages = settings.docs_access == "open" or (keys is None and settings.docs_access != "off")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        model = _load_model(settings.models_dir, meta, fast=settings.fast_inference)
        log.info(
            "serving model %s version %s on http://%s:%d; events to topic %s via KAFKA_BOOTSTRAP_SERVERS=%s",
            model.name,
            model.version,
            settings.host,
            settings.port,
            settings.events_topic,
            settings.kafka_bootstrap_servers,
        )
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
        description=(
            "Predictions whose every inference becomes a Kafka event. Send an API key as "
            f"'Authorization: Bearer <key>' or 'X-API-Key'. Header '{settings.synthetic_header}: true' "
            "flags synthetic traffic."
        ),
        lifespan=lifespan,
        exception_handlers={RequestValidationError: _validation_error, SpoolFull: _spool_full},
        # with keys required, /openapi.json needs one and the HTML pages are not served:
        # a browser loading them cannot send the key
        openapi_url=None if settings.docs_access == "off" else "/openapi.json",
        docs_url="/docs" if docs_pages else None,
        redoc_url="/redoc" if docs_pages else None,
    )
    predict_role = feedback_role = _security_docs(keys)

    def is_synthetic(request: Request) -> bool:
        if request.headers.get(synthetic_header, "").lower() in ("1", "true", "yes"):
            return True
        principal: Principal | None = getattr(request.state, "principal", None)
        return principal is not None and principal.synthetic

    def client_of(request: Request) -> str | None:
        principal: Principal | None = getattr(request.state, "principal", None)
        return principal.name if principal is not None else None

    def received_perf(request: Request) -> float | None:
        return getattr(request.state, RECEIVED_AT, None)

    def infer(
        model: ServedModel,
        features: dict[str, Any],
        publisher: EventPublisher,
        synthetic: bool,
        client_id: str | None = None,
        received_perf: float | None = None,
    ) -> tuple[uuid.UUID, Any, str | None]:
        """Predict and emit the event; returns (event id, inference or None, error)."""
        received = events.utcnow()
        event_id = events.uuid7()
        result, error = None, None
        try:
            result = model.predict(features)
        except Exception as exc:  # noqa: BLE001 - any model failure becomes an error event
            error = f"{type(exc).__name__}: {exc}"[:1000]
            if not isinstance(exc, NonFiniteOutput):
                log.warning("model error on %s: %s", event_id, error)
        else:
            metrics.model_latency.observe(result.latency_ms / 1000.0)
        event = events.build_event(
            event_id=event_id,
            event_time=received,
            model_name=model.name,
            model_version=model.version,
            features=features,
            prediction=result.prediction if result else None,
            scores=result.scores if result else None,
            latency_ms=result.latency_ms if result else 0.0,
            status="ok" if result else "error",
            error=error,
            synthetic=synthetic,
            client_id=client_id,
            http_latency_ms=None if received_perf is None else (time.perf_counter() - received_perf) * 1000.0,
        )
        emitter.emit(publisher, event_id, event)
        return event_id, result, error

    @app.post(
        "/v1/predict",
        response_model=PredictResponse,
        responses={
            **_ERRORS,
            500: {"model": ErrorBody, "description": "Model error (an error event is published)"},
        },
        dependencies=predict_role,
    )
    async def predict(
        body: PredictRequest,
        request: Request,
        model: ModelDep,
        publisher: PublisherDep,
    ) -> Any:
        features = body.features.model_dump()  # type: ignore[attr-defined]
        event_id, result, error = infer(
            model, features, publisher, is_synthetic(request), client_of(request), received_perf(request)
        )
        await publisher.durable()  # durable mode: the event is fsynced before any answer
        if result is None and error and error.startswith(NonFiniteOutput.__name__):
            # valid numbers the model cannot compute with: the client's to fix, and an error event
            return JSONResponse(
                status_code=422,
                content={
                    "detail": [{"loc": ["body", "features"], "msg": error, "type": "value_out_of_range"}]
                },
            )
        if result is None:
            return JSONResponse(
                status_code=500, content={"detail": f"model error: {error}", "prediction_id": str(event_id)}
            )
        # serialized here with orjson: a returned Response skips FastAPI's re-validation
        # through PredictResponse (the schemathesis test checks the shape instead)
        return Response(
            orjson.dumps(
                {
                    "prediction_id": str(event_id),
                    "model_name": model.name,
                    "model_version": model.version,
                    "prediction": result.prediction,
                    "scores": result.scores,
                }
            ),
            media_type="application/json",
        )

    @app.post("/v1/predict/batch", response_model=BatchResponse, responses=_ERRORS, dependencies=predict_role)
    async def predict_batch(
        body: PredictBatchRequest,
        request: Request,
        model: ModelDep,
        publisher: PublisherDep,
    ) -> Any:
        synthetic, client = is_synthetic(request), client_of(request)
        principal: Principal | None = getattr(request.state, "principal", None)
        if keys is not None and principal is not None:
            keys.charge(principal, len(body.items) - 1)  # type: ignore[attr-defined]  # a token each
        out: list[BatchItem] = []
        for item in body.items:  # type: ignore[attr-defined]
            event_id, result, error = infer(
                model, item.features.model_dump(), publisher, synthetic, client, received_perf(request)
            )
            if result is None:
                out.append(BatchItem(prediction_id=event_id, status="error", error=error))
            else:
                out.append(
                    BatchItem(
                        prediction_id=event_id,
                        status="ok",
                        prediction=result.prediction,
                        scores=result.scores,
                    )
                )
        await publisher.durable()
        return BatchResponse(model_name=model.name, model_version=model.version, predictions=out)

    @app.post(
        "/v1/feedback",
        response_model=FeedbackResponse,
        status_code=202,
        responses=_ERRORS,
        dependencies=feedback_role,
    )
    async def feedback(
        body: FeedbackRequest,
        model: ModelDep,
        publisher: PublisherDep,
    ) -> Any:
        feedback_id = events.uuid7()
        event = {
            "schema_version": events.SCHEMA_VERSION,
            "feedback_id": str(feedback_id),
            "prediction_id": str(body.prediction_id),
            "event_time": events.utcnow().strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "label": body.label,
            "model_name": model.name,
        }
        publisher.offer(body.prediction_id.bytes, events.encode(event), topic=settings.feedback_topic)
        await publisher.durable()
        return {"feedback_id": feedback_id, "prediction_id": body.prediction_id}

    @app.get("/v1/models", response_model=list[ModelInfo], responses=_ERRORS, dependencies=predict_role)
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
                "fast_path": model.fast,
            }
        ]

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", response_model=Readiness)
    async def readyz(model: ModelDep, publisher: PublisherDep) -> Any:
        # ready once the model is loaded; the broker state is reported, not required
        return {
            "status": "ready",
            "model": f"{model.name}:{model.version}",
            "broker_connected": publisher.broker_connected,
            "queue_depth": publisher.queue_depth,
            "spool_bytes": publisher.spool_bytes,
        }

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if keys is not None:  # outside BodyLimit: no key, no body read
        app.add_middleware(KeyCheck, keys=keys, roles=_roles(settings))
    app.add_middleware(_RequestMetrics, metrics=metrics, routes=ROUTES)
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


def create_app_from_env() -> FastAPI:
    """uvicorn factory entry point (``--factory api.app:create_app_from_env``)."""
    return create_app(ApiSettings())
