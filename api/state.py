"""What the lifespan makes for the requests: one typed state, read by the dependencies
of :mod:`api.deps`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

from api.auth import KeyStore
from api.emit import Emitter
from api.metrics import ApiMetrics
from api.model import ServedModel
from api.publisher import EventPublisher


@dataclass(frozen=True, slots=True)
class ApiState:
    """The running app: its model and publisher (made by the lifespan), and what the
    routes use beside them."""

    model: ServedModel
    publisher: EventPublisher
    metrics: ApiMetrics
    emitter: Emitter
    keys: KeyStore | None  # None: authentication is off
    synthetic_header: str  # lower case
    feedback_topic: str


class LifespanState(TypedDict):
    """What the lifespan yields; Starlette hands a copy to every request as
    ``scope["state"]`` (one key: the copy is per request)."""

    api: ApiState
