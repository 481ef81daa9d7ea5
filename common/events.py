"""The inference event contract: the one thing the API and the consumers share.

An ``InferenceEvent`` is published for every prediction answered and for every
inference that failed inside the model. On the wire it is UTF-8 JSON (orjson), keyed
by the event id's 16 bytes, which are random past the timestamp prefix and so spread
evenly over partitions.

The pydantic model is the contract and generates ``schemas/inference_event.v1.json``.
The request path does not build the model (4 us an event); it builds the same dict
with :func:`build_event` and encodes it with :func:`encode` (1 us). A test proves both
produce events the model accepts and round-trips unchanged.

Strings: every string a client can put into an event (category features, feedback
labels) is :data:`Text`: valid Unicode (no lone surrogates; pydantic refuses them when
decoding) without C0 control characters other than tab, line feed and carriage return.
NUL is what forces the rule: PostgreSQL's ``json``/``jsonb`` cannot hold ``\u0000``
and ``text`` cannot hold a NUL byte, so one such event stopped the audit consumer. The
other C0 controls are storable but are no feature value or label anyone means to
send; refusing them keeps CSV exports, logs and terminals of every reader safe too.
The API answers 422 naming the field; the JSON Schema carries the rule as a
``pattern``.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

SCHEMA_VERSION = 1
EVENTS_TOPIC = "inference-events"
FEEDBACK_TOPIC = "inference-feedback"
DLQ_TOPIC = "inference-events.dlq"
ALERTS_TOPIC = "inference-alerts"

SCHEMA_PATH = Path(__file__).parent / "schemas" / f"inference_event.v{SCHEMA_VERSION}.json"

# no C0 control character but tab, LF, CR (ECMA 262 and Rust regex alike)
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f]*$"
Text = Annotated[str, StringConstraints(pattern=TEXT_PATTERN)]
FeatureValue = float | int | Text | bool | None


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7): 48-bit Unix milliseconds, then random."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | rand & ((1 << 80) - 1)
    value &= ~(0xF << 76)
    value |= 0x7 << 76  # version 7
    value &= ~(0x3 << 62)
    value |= 0x2 << 62  # RFC 4122 variant
    return uuid.UUID(int=value)


class InferenceEvent(BaseModel):
    """One inference (or failed inference) as published to ``inference-events``."""

    model_config = ConfigDict(extra="forbid", title="InferenceEvent")

    schema_version: Literal[1] = Field(description="Version of this contract")
    event_id: uuid.UUID = Field(description="Time-ordered UUIDv7; also the prediction id")
    event_time: datetime = Field(description="When the API received the request (UTC)")
    model_name: str
    model_version: str
    features: dict[str, FeatureValue] = Field(description="Validated, typed model inputs")
    prediction: float | int | str | None = Field(description="Model output; null on error")
    scores: dict[str, float] | None = Field(
        default=None, description="Class probabilities by class label, for classifiers"
    )
    latency_ms: float = Field(ge=0, description="Time spent inside the model, milliseconds")
    http_latency_ms: float | None = Field(
        default=None,
        ge=0,
        description="Time inside the API from receiving the request to this answer being ready, "
        "milliseconds (excludes the network and the server's accept queue)",
    )
    status: Literal["ok", "error"]
    error: str | None = Field(default=None, description="Why the inference failed")
    synthetic: bool = Field(default=False, description="Synthetic traffic, excluded by monitors")
    client_id: str | None = Field(
        default=None, description="Who asked: the API key's name when authentication is on"
    )


def wire_time(moment: datetime) -> str:
    """An event's time on the wire: UTC, microseconds, ``Z`` (as pydantic writes it)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def build_event(
    *,
    event_id: uuid.UUID,
    event_time: datetime,
    model_name: str,
    model_version: str,
    features: dict[str, FeatureValue],
    prediction: float | int | str | None,
    scores: dict[str, float] | None,
    latency_ms: float,
    status: Literal["ok", "error"] = "ok",
    error: str | None = None,
    synthetic: bool = False,
    client_id: str | None = None,
    http_latency_ms: float | None = None,
) -> dict[str, Any]:
    """The wire form of an :class:`InferenceEvent`, built without pydantic."""
    return {
        "schema_version": SCHEMA_VERSION,
        "event_id": str(event_id),
        "event_time": wire_time(event_time),
        "model_name": model_name,
        "model_version": model_version,
        "features": features,
        "prediction": prediction,
        "scores": scores,
        "latency_ms": latency_ms,
        "http_latency_ms": http_latency_ms,
        "status": status,
        "error": error,
        "synthetic": synthetic,
        "client_id": client_id,
    }


def encode(event: dict[str, Any]) -> bytes:
    """JSON bytes for the wire. NaN/Infinity never reach here: the API rejects them."""
    return orjson.dumps(event)


def event_key(event_id: str) -> bytes:
    """Partition key: the 16 UUID bytes (murmur2 over them balances partitions)."""
    return uuid.UUID(event_id).bytes


def decode(raw: bytes) -> dict[str, Any]:
    event: dict[str, Any] = orjson.loads(raw)  # an event is a JSON object (orjson.loads returns Any)
    return event


def json_schema() -> dict[str, Any]:
    schema = InferenceEvent.model_json_schema()
    schema["$id"] = f"https://inferstream.dev/schemas/inference_event.v{SCHEMA_VERSION}.json"
    return schema


def json_schema_text() -> str:
    return orjson.dumps(json_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"


def utcnow() -> datetime:
    return datetime.now(UTC)


# -- feedback: the ground truth for a prediction, published to inference-feedback ------
FEEDBACK_SCHEMA_PATH = Path(__file__).parent / "schemas" / f"feedback_event.v{SCHEMA_VERSION}.json"


class FeedbackEvent(BaseModel):
    """The observed label of one prediction, keyed by the prediction's id (16 bytes)."""

    model_config = ConfigDict(extra="forbid", title="FeedbackEvent")

    schema_version: Literal[1] = Field(description="Version of this contract")
    feedback_id: uuid.UUID = Field(description="UUIDv7 of this feedback")
    prediction_id: uuid.UUID = Field(description="event_id of the inference it labels")
    event_time: datetime = Field(description="When the API received the feedback (UTC)")
    label: bool | int | float | Text = Field(description="The ground truth")
    model_name: str | None = Field(default=None, description="Model that made the prediction, if known")


def build_feedback(
    *,
    feedback_id: uuid.UUID,
    prediction_id: uuid.UUID,
    event_time: datetime,
    label: bool | int | float | str,
    model_name: str | None,
) -> dict[str, Any]:
    """The wire form of a :class:`FeedbackEvent`, built without pydantic (its key on
    the wire: ``prediction_id.bytes``)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "feedback_id": str(feedback_id),
        "prediction_id": str(prediction_id),
        "event_time": wire_time(event_time),
        "label": label,
        "model_name": model_name,
    }


def feedback_json_schema_text() -> str:
    schema = FeedbackEvent.model_json_schema()
    schema["$id"] = f"https://inferstream.dev/schemas/feedback_event.v{SCHEMA_VERSION}.json"
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"
