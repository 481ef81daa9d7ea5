"""Dependency aliases for the endpoints; tests swap them with ``app.dependency_overrides``.

They are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in its thread
pool, a thread hop per dependency per request (measured: most of a request's cost).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.metrics import ApiMetrics
from api.model import ServedModel
from api.publisher import EventPublisher


async def get_model(request: Request) -> ServedModel:
    return request.state.model  # type: ignore[no-any-return]


async def get_publisher(request: Request) -> EventPublisher:
    return request.state.publisher  # type: ignore[no-any-return]


async def get_metrics(request: Request) -> ApiMetrics:
    return request.state.metrics  # type: ignore[no-any-return]


ModelDep = Annotated[ServedModel, Depends(get_model)]
PublisherDep = Annotated[EventPublisher, Depends(get_publisher)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]
