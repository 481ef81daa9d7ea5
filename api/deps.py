"""Dependency aliases for the endpoints; tests swap them with ``app.dependency_overrides``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.metrics import ApiMetrics
from api.model import ServedModel
from api.publisher import EventPublisher


def get_model(request: Request) -> ServedModel:
    return request.state.model  # type: ignore[no-any-return]


def get_publisher(request: Request) -> EventPublisher:
    return request.state.publisher  # type: ignore[no-any-return]


def get_metrics(request: Request) -> ApiMetrics:
    return request.state.metrics  # type: ignore[no-any-return]


ModelDep = Annotated[ServedModel, Depends(get_model)]
PublisherDep = Annotated[EventPublisher, Depends(get_publisher)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]
