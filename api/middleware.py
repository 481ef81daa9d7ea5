"""Request metrics: pure ASGI middleware that counts and times requests by route and
status, and stamps the request's arrival for the event's HTTP latency."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any

from api.metrics import ApiMetrics

RECEIVED_AT = "inferstream_received_perf"
ASGIApp = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]


class RequestMetrics:
    """``routes``: the paths counted by name; any other path is counted as "other"."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, routes: Collection[str]) -> None:
        self.app, self.metrics, self.routes = app, metrics, frozenset(routes)

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        # request.state reads scope["state"]: the event's HTTP latency counts from here
        scope.setdefault("state", {})[RECEIVED_AT] = start

        async def _send(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            route = scope["path"] if scope["path"] in self.routes else "other"
            self.metrics.observe_request(route, status, time.perf_counter() - start)
