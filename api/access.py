"""Who may call what, decided before the body is read.

``KeyCheck`` is pure ASGI middleware in front of the routes: for a path that needs a
role it authenticates the key from the headers (``Authorization: Bearer <key>`` or
``X-API-Key``) and answers 401/403/429 itself, so a request without a valid key never
has its body read or parsed (malformed JSON without a key is a 401, not a 422). An
admitted request carries its :class:`~api.auth.Principal` in ``scope["state"]``
(``request.state.principal``). Paths not in the map (``/healthz``, ``/readyz``, and
whatever the settings leave open) pass through untouched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from api.auth import AuthError, KeyStore

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


def presented_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The key from ``X-API-Key``, else from ``Authorization: Bearer``."""
    bearer: str | None = None
    for name, value in headers:
        if name == b"x-api-key" and value:
            return value.decode("latin-1")
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                bearer = credentials.strip()
    return bearer


class KeyCheck:
    def __init__(self, app: ASGIApp, keys: KeyStore, roles: dict[str, str]) -> None:
        """``roles``: path → the role a key needs for it."""
        self.app, self.keys, self.roles = app, keys, roles

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        role = self.roles.get(scope["path"]) if scope["type"] == "http" else None
        if role is None:
            await self.app(scope, receive, send)
            return
        try:
            principal = self.keys.authenticate(presented_key(scope["headers"]), role)
        except AuthError as exc:
            await _reject(send, exc)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


async def _reject(send: Any, exc: AuthError) -> None:
    body = orjson.dumps({"detail": exc.detail})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if exc.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if exc.retry_after is not None:
        headers.append((b"retry-after", str(exc.retry_after).encode()))
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
