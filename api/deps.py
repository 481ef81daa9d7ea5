"""Dependency aliases for the endpoints; tests swap them with ``app.dependency_overrides``.

They are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in its thread
pool, a thread hop per dependency per request (measured: most of a request's cost). Each
reads the lifespan's state itself rather than through another dependency: a dependency
costs FastAPI several microseconds a request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.model import ServedModel
from api.state import ApiState, LifespanState


def _state(request: Request) -> ApiState:
    state: LifespanState = request.scope["state"]
    return state["api"]


async def get_state(request: Request) -> ApiState:
    return _state(request)


async def get_model(request: Request) -> ServedModel:
    return _state(request).model


StateDep = Annotated[ApiState, Depends(get_state)]
ModelDep = Annotated[ServedModel, Depends(get_model)]
