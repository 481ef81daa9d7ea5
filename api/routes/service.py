"""What the service says about itself: the model it serves (``/v1/models``), liveness
and readiness, and the Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from api.deps import ModelDep, StateDep
from api.http_errors import ERRORS
from api.schemas import ModelInfo, Readiness

models_router = APIRouter()  # behind the key check, like the predictions
ops_router = APIRouter()  # open: probes and the scraper


@models_router.get("/v1/models", response_model=list[ModelInfo], responses=ERRORS)
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


@ops_router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@ops_router.get("/readyz", response_model=Readiness)
async def readyz(model: ModelDep, api: StateDep) -> Any:
    # ready once the model is loaded; the broker state is reported, not required
    publisher = api.publisher
    return {
        "status": "ready",
        "model": f"{model.name}:{model.version}",
        "broker_connected": publisher.broker_connected,
        "queue_depth": publisher.queue_depth,
        "spool_bytes": publisher.spool_bytes,
    }


@ops_router.get("/metrics", include_in_schema=False)
async def metrics_endpoint(api: StateDep) -> Response:
    return Response(api.metrics.render(), media_type=api.metrics.content_type)
