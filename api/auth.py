"""API keys: stored hashed, compared in constant time, with roles and a per-key rate.

A key is a random token (``inferstream api-key`` makes one). The API stores only its
SHA-256 (a key has ~256 bits of entropy, so a fast hash is enough; it is not a
password). Presented keys are hashed and compared with ``hmac.compare_digest``
against every stored hash, without stopping at the first match, so timing reveals
nothing about which stored hash is near.

Roles: ``predict`` (predictions and models), ``feedback``, ``synthetic`` (every
prediction made with the key is flagged synthetic). 401 without a known key, 403 for a
key without the route's role, 429 over the key's rate.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

ROLES = ("predict", "feedback", "synthetic")


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


class AuthError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return "isk_" + secrets.token_urlsafe(32)


class KeyStore:
    def __init__(self, specs: list[ApiKeySpec], rate_per_s: float = 0.0) -> None:
        """``rate_per_s``: requests a second per key (burst of one second); 0 = no limit."""
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
            self._take_token(found)
        return found

    def _take_token(self, p: Principal) -> None:
        now = time.monotonic()
        p.tokens = min(self.rate, p.tokens + (now - p.stamp) * self.rate)
        p.stamp = now
        if p.tokens < 1.0:
            raise AuthError(429, f"API key '{p.name}' is over its rate of {self.rate:g} requests/s")
        p.tokens -= 1.0
