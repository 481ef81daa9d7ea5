"""One inference on the request path: who asked, the prediction, its event.

Never awaits: the event is encoded and offered to the publisher's queue.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from api.auth import Principal
from api.middleware import RECEIVED_AT
from api.model import Inference, ServedModel
from api.state import ApiState
from common import events
from common.errors import ModelError, ModelFailed, NonFiniteOutput

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Caller:
    """What the request says about who asked and when it arrived."""

    synthetic: bool
    client_id: str | None  # the API key's name, with authentication on
    principal: Principal | None
    received_perf: float | None  # perf_counter() when the request came in

    @classmethod
    def of(cls, request: Request, synthetic_header: str) -> Caller:
        state = request.scope.get("state", {})
        principal: Principal | None = state.get("principal")
        synthetic = request.headers.get(synthetic_header, "").lower() in ("1", "true", "yes") or (
            principal is not None and principal.synthetic
        )
        return cls(
            synthetic=synthetic,
            client_id=principal.name if principal is not None else None,
            principal=principal,
            received_perf=state.get(RECEIVED_AT),
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """The prediction (``result``) or why there is none (``error``); ``event_id`` is
    also the prediction id."""

    event_id: uuid.UUID
    result: Inference | None
    error: ModelError | None

    @property
    def error_detail(self) -> str | None:
        return self.error.detail if self.error is not None else None


def infer(api: ApiState, model: ServedModel, features: dict[str, Any], caller: Caller) -> Outcome:
    """Predict and emit the event (an error event when the model gives no answer)."""
    received = events.utcnow()
    event_id = events.uuid7()
    result: Inference | None = None
    error: ModelError | None = None
    try:
        result = model.predict(features)
    except ModelError as exc:
        error = exc
    except Exception as exc:  # any model failure becomes an error event
        error = ModelFailed(exc)
    else:
        api.metrics.model_latency.observe(result.latency_ms / 1000.0)
    if error is not None and not isinstance(error, NonFiniteOutput):
        log.warning("model error on %s: %s", event_id, error.detail)
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
        error=error.detail if error is not None else None,
        synthetic=caller.synthetic,
        client_id=caller.client_id,
        http_latency_ms=None
        if caller.received_perf is None
        else (time.perf_counter() - caller.received_perf) * 1000.0,
    )
    api.emitter.emit(api.publisher, event_id, event)
    return Outcome(event_id, result, error)
