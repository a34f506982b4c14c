"""Every error in OpenAI's shape, `{"error": {"message", "type", "code"}}`, so clients raise their usual exceptions;
and a body-size limit enforced before any JSON is parsed.

A client mistake is a 4xx; only a failure of the server itself is a 500, and that too answers in this shape.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("tunelab.serving")
TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers


def error_response(status: int, message: str, code: str | None = None, headers: dict | None = None) -> JSONResponse:
    kind = TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    """Handlers for tunelab's ApiError, FastAPI's validation errors, HTTP errors (404 route, 405), and the rest."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, describe_validation(exc.errors()), "invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), None, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("serving: unexpected error on %s", request.url.path)
        return error_response(500, f"internal error: {type(exc).__name__}", "internal_error")


def describe_validation(errors: Any) -> str:
    """One line per problem: `messages.0.role: Input should be 'system', 'user' or 'assistant'`."""
    lines = []
    for error in list(errors)[:5]:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
        lines.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(lines) or "invalid request"


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is answered 413 without being parsed (a Content-Length
    over it at once, a chunked body once it passes it); a body within it is replayed to the app unchanged."""

    def __init__(self, app: Any, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.limit:
            return await self._refuse(scope, receive, send, int(declared) if declared.isdigit() else None)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await self._refuse(scope, receive, send, None)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    async def _refuse(self, scope: dict, receive: Any, send: Any, size: int | None) -> None:
        if size is None and not dict(scope["headers"]).get(b"content-length", b"0").isdigit():
            response = error_response(400, "Content-Length must be a number", "invalid_request")
        else:
            response = error_response(413, f"request body over {self.limit} bytes", "request_too_large")
        await response(scope, receive, send)
