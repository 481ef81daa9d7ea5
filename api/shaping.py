"""What a prediction's event looks like on the wire: sampling, PII and the size guard.

- Sampling is deterministic by event id: the id's hash decides, so any replica makes
  the same call for the same id, and a rate of 0.1 keeps ~10 % per model.
- PII fields are replaced by ``"hmac-sha256:" + HMAC(key, value)`` before publishing:
  the same input always gives the same token (joinable), the value is not readable.
- An event larger than the limit (Kafka's default max message is 1 MB) is not sent
  whole: its ``features`` become ``{"_digest": "sha256:<hex of the encoded features>",
  "_oversized_bytes": <size of the whole event>}`` and the caller counts it.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from typing import Any

import orjson

from common.events import encode

OVERSIZED_KEYS = ("_digest", "_oversized_bytes")


def keep(event_id: uuid.UUID, rate: float) -> bool:
    """True if the event is in the sample. Rate 1 keeps all, 0 none."""
    if rate >= 1.0:
        return True
    h = int.from_bytes(hashlib.blake2b(event_id.bytes, digest_size=8).digest(), "big")
    return h < rate * 2**64


class PiiMasker:
    def __init__(self, fields: list[str], key: bytes) -> None:
        self.fields = [f for f in fields]
        self._key = key

    def token(self, value: Any) -> str:
        raw = value if isinstance(value, str) else orjson.dumps(value).decode()
        return "hmac-sha256:" + hmac.new(self._key, raw.encode(), hashlib.sha256).hexdigest()

    def mask(self, features: dict[str, Any]) -> dict[str, Any]:
        if not self.fields:
            return features
        out = dict(features)
        for f in self.fields:
            if f in out and out[f] is not None:
                out[f] = self.token(out[f])
        return out


def encode_guarded(event: dict[str, Any], max_bytes: int) -> tuple[bytes, bool]:
    """The encoded event, and whether it was over ``max_bytes`` and had its features
    replaced by their digest."""
    raw = encode(event)
    if len(raw) <= max_bytes:
        return raw, False
    digest = hashlib.sha256(orjson.dumps(event["features"], option=orjson.OPT_SORT_KEYS)).hexdigest()
    slim = {**event, "features": {"_digest": f"sha256:{digest}", "_oversized_bytes": len(raw)}}
    return encode(slim), True
