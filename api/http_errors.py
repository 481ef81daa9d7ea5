"""The API's error answers: the exception handlers, and the error responses the
OpenAPI schema documents."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.schemas import ErrorBody, ValidationErrorBody


async def spool_full(request: Request, exc: Exception) -> JSONResponse:
    """Durable mode: an event that cannot be stored is not acknowledged."""
    return JSONResponse(
        status_code=503,
        content={"detail": f"{exc}: nothing was acknowledged; retry later"},
        headers={"Retry-After": "1"},
    )


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """Like FastAPI's handler, without echoing the input: NaN in an echo breaks JSON."""
    assert isinstance(exc, RequestValidationError)
    detail = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in exc.errors()
    ]
    return JSONResponse(status_code=422, content={"detail": detail})


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The body is not parseable (not UTF-8 JSON)"},
    401: {"model": ErrorBody, "description": "No API key, or an unknown one"},
    403: {"model": ErrorBody, "description": "The key lacks the route's role"},
    413: {"model": ErrorBody, "description": "Body over the size limit"},
    422: {"model": ValidationErrorBody, "description": "Invalid input; loc names the field"},
    503: {"model": ErrorBody, "description": "Durable mode only: the event spool is full"},
    429: {
        "model": ErrorBody,
        "description": "The key is over its rate limit (a batch costs one token per item)",
        "headers": {"Retry-After": {"description": "Seconds until a token", "schema": {"type": "integer"}}},
    },
}
