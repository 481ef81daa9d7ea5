"""``/v1/predict`` and ``/v1/predict/batch``.

Their bodies are typed by the served model's features, so the router is made per app
(:func:`router`); everything else a handler needs comes from dependencies."""

# no `from __future__ import annotations`: FastAPI reads the handlers' annotations,
# which name this function's local request models

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ConfigDict, Field, create_model

from api.deps import ModelDep, StateDep
from api.http_errors import ERRORS
from api.inference import Caller, Outcome, infer
from api.model import ServedModel, features_model
from api.schemas import BatchItem, BatchResponse, ErrorBody, PredictResponse
from common.artifact import ModelMetadata
from common.errors import NonFiniteOutput

PREDICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    500: {"model": ErrorBody, "description": "Model error (an error event is published)"},
}


def router(meta: ModelMetadata, *, max_abs_feature_value: float, batch_max_items: int) -> APIRouter:
    """The prediction routes of the model ``meta`` describes: strict bodies of its features
    (numbers within ``max_abs_feature_value``), at most ``batch_max_items`` in a batch."""
    features = features_model(meta, max_abs_feature_value)
    PredictRequest = create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid"),
        features=(features, Field(description=f"Inputs of model {meta.name} v{meta.version}")),
    )
    PredictBatchRequest = create_model(
        "PredictBatchRequest",
        __config__=ConfigDict(extra="forbid"),
        items=(
            list[PredictRequest],
            Field(min_length=1, max_length=batch_max_items, description="At most batch_max_items"),
        ),
    )
    routes = APIRouter()

    @routes.post("/v1/predict", response_model=PredictResponse, responses=PREDICT_RESPONSES)
    async def predict(body: PredictRequest, request: Request, model: ModelDep, api: StateDep) -> Any:
        caller = Caller.of(request, api.synthetic_header)
        outcome = infer(api, model, body.features.model_dump(), caller)  # type: ignore[attr-defined]
        await api.publisher.durable()  # durable mode: the event is fsynced before any answer
        return predict_answer(model, outcome)

    @routes.post("/v1/predict/batch", response_model=BatchResponse, responses=ERRORS)
    async def predict_batch(
        body: PredictBatchRequest, request: Request, model: ModelDep, api: StateDep
    ) -> Any:
        items: list[Any] = body.items  # type: ignore[attr-defined]
        caller = Caller.of(request, api.synthetic_header)
        if api.keys is not None and caller.principal is not None:
            api.keys.charge(caller.principal, len(items) - 1)  # a token each
        out = [batch_item(infer(api, model, item.features.model_dump(), caller)) for item in items]
        await api.publisher.durable()
        return BatchResponse(model_name=model.name, model_version=model.version, predictions=out)

    return routes


def predict_answer(model: ServedModel, outcome: Outcome) -> Response:
    """One prediction's answer: 200, 422 (out of the model's range) or 500."""
    if isinstance(outcome.error, NonFiniteOutput):
        # valid numbers the model cannot compute with: the client's to fix, and an error event
        return JSONResponse(
            status_code=422,
            content={
                "detail": [
                    {"loc": ["body", "features"], "msg": outcome.error.detail, "type": "value_out_of_range"}
                ]
            },
        )
    if outcome.result is None:
        body = {"detail": f"model error: {outcome.error_detail}", "prediction_id": str(outcome.event_id)}
        return JSONResponse(status_code=500, content=body)
    # serialized here with orjson: a returned Response skips FastAPI's re-validation
    # through PredictResponse (the schemathesis test checks the shape instead)
    return Response(
        orjson.dumps(
            {
                "prediction_id": str(outcome.event_id),
                "model_name": model.name,
                "model_version": model.version,
                "prediction": outcome.result.prediction,
                "scores": outcome.result.scores,
            }
        ),
        media_type="application/json",
    )


def batch_item(outcome: Outcome) -> BatchItem:
    if outcome.result is None:
        return BatchItem(
            prediction_id=outcome.event_id,
            status="error",
            error=outcome.error_detail,
        )
    return BatchItem(
        prediction_id=outcome.event_id,
        status="ok",
        prediction=outcome.result.prediction,
        scores=outcome.result.scores,
    )
