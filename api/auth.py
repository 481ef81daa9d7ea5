"""API keys: stored hashed, compared in constant time, with roles and a per-key rate.

A key is a random token (``inferstream api-key`` makes one). The API stores only its
SHA-256 (a key has ~256 bits of entropy, so a fast hash is enough; it is not a
password). Presented keys are hashed and compared with ``hmac.compare_digest``
against every stored hash, without stopping at the first match, so timing reveals
nothing about which stored hash is near.

Roles: ``predict`` (predictions, models and the OpenAPI schema), ``feedback``,
``synthetic`` (every prediction made with the key is flagged synthetic), ``metrics``
(``/metrics``, for a Prometheus scraper). 401 without a known key, 403 for a key without
the route's role, 429 over the key's rate.

Rate: a token bucket per key holding one second of tokens (at least one). A request is
admitted while the bucket holds a whole token and takes one; a batch is then charged
one more token for each further prediction (``charge``), which may take the bucket
below zero: the key's next requests get 429 until it has refilled, so a key gets its
rate in predictions, whatever the batch size. A 429 says how long until a token
(``AuthError.retry_after``, the ``Retry-After`` header).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from common.errors import InferstreamError

ROLES = ("predict", "feedback", "synthetic", "metrics")


class ApiKeySpec(BaseModel):
    """One configured key (``INFERSTREAM_API_KEYS`` is a JSON list of these)."""

    name: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the key")
    roles: list[str] = Field(default_factory=lambda: ["predict", "feedback"])


@dataclass
class Principal:
    name: str
    roles: frozenset[str]
    tokens: float = float("inf")  # a full bucket on first use
    stamp: float = field(default_factory=time.monotonic)

    @property
    def synthetic(self) -> bool:
        return "synthetic" in self.roles


class AuthError(InferstreamError):
    """401, 403 or 429; ``retry_after`` (whole seconds until a token) only on 429."""

    def __init__(self, status: int, detail: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.retry_after = status, detail, retry_after


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return "isk_" + secrets.token_urlsafe(32)


class KeyStore:
    def __init__(self, specs: list[ApiKeySpec], rate_per_s: float = 0.0) -> None:
        """``rate_per_s``: predictions a second per key (a burst of one second's worth, at
        least one); 0 = no limit."""
        self._keys = [(bytes.fromhex(s.sha256), Principal(s.name, frozenset(s.roles))) for s in specs]
        self.rate = rate_per_s

    def authenticate(self, presented: str | None, role: str) -> Principal:
        if not presented:
            raise AuthError(401, "missing API key: send it as 'Authorization: Bearer <key>' or 'X-API-Key'")
        digest = hashlib.sha256(presented.encode()).digest()
        found: Principal | None = None
        for stored, principal in self._keys:  # no early exit: constant time over the store
            if hmac.compare_digest(stored, digest):
                found = principal
        if found is None:
            raise AuthError(401, "unknown API key")
        if role not in found.roles:
            raise AuthError(403, f"API key '{found.name}' lacks the '{role}' role")
        if self.rate > 0:
            self._refill(found)
            if found.tokens < 1.0:
                wait = math.ceil((1.0 - found.tokens) / self.rate)
                raise AuthError(
                    429,
                    f"API key '{found.name}' is over its rate of {self.rate:g} predictions/s; "
                    f"retry in {wait}s",
                    retry_after=wait,
                )
            found.tokens -= 1.0
        return found

    def charge(self, principal: Principal, n: int) -> None:
        """Take ``n`` more tokens for an admitted request (the further predictions of a
        batch). Never refuses: the bucket may go below zero, and the key waits it off."""
        if self.rate > 0 and n > 0:
            self._refill(principal)
            principal.tokens -= n

    def _refill(self, p: Principal) -> None:
        now = time.monotonic()
        # at least one token of room, or a rate under 1/s would never admit anything
        p.tokens = min(max(self.rate, 1.0), p.tokens + (now - p.stamp) * self.rate)
        p.stamp = now
