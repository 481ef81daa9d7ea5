"""The drift alert: a JSON POST to an optional webhook URL."""

from __future__ import annotations

from typing import Any

import httpx


def post_alert(url: str, payload: dict[str, Any], timeout: float = 10.0) -> int:
    """POST ``payload``; returns the HTTP status, raises on a transport error or a non-2xx."""
    resp = httpx.post(url, json=payload, timeout=timeout)
    resp.raise_for_status()
    return resp.status_code
