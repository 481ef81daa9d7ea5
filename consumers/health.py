"""The consumer's HTTP endpoint: Prometheus ``/metrics``, and ``/healthz`` for liveness.

``/healthz`` answers 200 with the runner's health as JSON, or 503 when the runner says
it is stuck (see ``ConsumerRunner.health``): a liveness probe then restarts the process.
Served from a daemon thread, like prometheus_client's own ``start_http_server``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # the base's name
        """Probes every few seconds would flood the log."""


def start_http_endpoint(
    port: int,
    registry: CollectorRegistry,
    health: Callable[[], dict[str, Any]],
    addr: str = "0.0.0.0",  # noqa: S104
) -> ThreadingWSGIServer:
    """Serve until the process ends; returns the server (``shutdown()`` stops it)."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            body = health()
            code = "503 Service Unavailable" if body.get("status") != "ok" else "200 OK"
            start_response(code, [("Content-Type", "application/json")])
            return [json.dumps(body).encode()]
        return metrics(environ, start_response)  # type: ignore[no-any-return]

    server = make_server(addr, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="consumer-http", daemon=True).start()
    return server
