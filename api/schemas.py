"""Response and request bodies of the API that do not depend on the served model."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from common.events import Text


class PredictResponse(BaseModel):
    prediction_id: uuid.UUID = Field(description="Also the event id in inference-events")
    model_name: str
    model_version: str
    prediction: float | int | str | None
    scores: dict[str, float] | None = None


class BatchItem(BaseModel):
    prediction_id: uuid.UUID
    status: Literal["ok", "error"]
    prediction: float | int | str | None = None
    scores: dict[str, float] | None = None
    error: str | None = None


class BatchResponse(BaseModel):
    model_name: str
    model_version: str
    predictions: list[BatchItem] = Field(description="In the order of the request's items")


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prediction_id: uuid.UUID = Field(description="The prediction_id a /v1/predict call returned")
    label: bool | int | float | Text = Field(description="The observed ground truth")


class FeedbackResponse(BaseModel):
    feedback_id: uuid.UUID
    prediction_id: uuid.UUID


class ModelInfo(BaseModel):
    name: str
    version: str
    task: str
    target: str
    classes: list[Any]
    features: list[dict[str, Any]]
    fast_path: bool = Field(description="Served by the numpy path (same outputs as scikit-learn)")


class Readiness(BaseModel):
    status: Literal["ready"]
    model: str
    broker_connected: bool = Field(description="False while events go to the disk spool")
    queue_depth: int
    spool_bytes: int


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorBody(BaseModel):
    detail: list[ErrorItem]


class ErrorBody(BaseModel):
    detail: str
    prediction_id: uuid.UUID | None = None
