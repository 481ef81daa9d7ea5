"""Cheap validation of one inference event, for sinks that decode records one by one.

A poison message is one no sink can store: not JSON, not an object, another schema
version, or a required field missing or of the wrong type. Validation checks only
what the sinks rely on (required keys, their JSON types, the schema version), not the
whole pydantic contract: that costs ~4 us an event and the sinks do not need it.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import orjson

from common.errors import InferstreamError
from common.events import SCHEMA_VERSION

# key → accepted JSON types; a required key may not be null
REQUIRED: dict[str, tuple[type, ...]] = {
    "event_id": (str,),
    "event_time": (str,),
    "model_name": (str,),
    "model_version": (str,),
    "features": (dict,),
    "latency_ms": (int, float),
    "status": (str,),
}
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class PoisonError(InferstreamError, ValueError):
    """Why a record cannot be stored; the message is the dead letter's reason."""


def check_event(row: Any) -> dict[str, Any]:
    """``row`` if it is a storable event, else PoisonError with the reason."""
    if not isinstance(row, dict):
        raise PoisonError(f"not a JSON object but {type(row).__name__}")
    version = row.get("schema_version")
    if version != SCHEMA_VERSION:
        raise PoisonError(f"unknown schema_version {version!r} (this consumer reads {SCHEMA_VERSION})")
    for key, types in REQUIRED.items():
        value = row.get(key)
        if value is None:
            raise PoisonError(f"missing field {key}")
        if not isinstance(value, types) or isinstance(value, bool):
            raise PoisonError(f"field {key} has JSON type {type(value).__name__}")
    if not UUID_RE.match(row["event_id"]):
        raise PoisonError(f"event_id {row['event_id'][:40]!r} is not a UUID")
    return row


def nesting(value: Any) -> int:
    """How deep JSON containers nest in ``value`` (a scalar: 0, ``{"a": 1}``: 1)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def parse_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise PoisonError(f"event_time {value[:40]!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise PoisonError("event_time has no time zone")
    return parsed


def decode_object(raw: bytes | None) -> dict[str, Any]:
    """The JSON object in ``raw``, or PoisonError with the reason."""
    if raw is None:
        raise PoisonError("empty value (tombstone)")
    try:
        row = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PoisonError(f"not JSON: {exc}") from None
    if not isinstance(row, dict):
        raise PoisonError(f"not a JSON object but {type(row).__name__}")
    return row


def decode_event(raw: bytes | None) -> dict[str, Any]:
    """The event in ``raw``, or PoisonError with the reason."""
    return check_event(decode_object(raw))
