"""``/v1/feedback``: the observed label of a prediction, published to the feedback topic."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import ModelDep, StateDep
from api.http_errors import ERRORS
from api.schemas import FeedbackRequest, FeedbackResponse
from common import events

router = APIRouter()


@router.post("/v1/feedback", response_model=FeedbackResponse, status_code=202, responses=ERRORS)
async def feedback(body: FeedbackRequest, model: ModelDep, api: StateDep) -> Any:
    feedback_id = events.uuid7()
    event = events.build_feedback(
        feedback_id=feedback_id,
        prediction_id=body.prediction_id,
        event_time=events.utcnow(),
        label=body.label,
        model_name=model.name,
    )
    api.publisher.offer(body.prediction_id.bytes, events.encode(event), topic=api.feedback_topic)
    await api.publisher.durable()
    return {"feedback_id": feedback_id, "prediction_id": body.prediction_id}
