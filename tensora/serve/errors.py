"""OpenAI-style error bodies, `{"error": {"message", "type", "param", "code"}}`, for every failure.

Bad input of any kind (malformed JSON, wrong types, values out of range, unknown routes) is
a 4xx naming the problem; only a genuine server fault is a 500, and it too has this shape.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

log = logging.getLogger("tensora.serve")


class APIError(Exception):
    """An error answered to the client as `status` with an OpenAI-style body."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {"msg": "invalid request", "loc": ()}
    if first.get("type") == "json_invalid":
        return APIError(400, f"the request body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}",
                        code="invalid_json").response()
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    where = f" at '{param}'" if param else ""
    return APIError(400, f"invalid request{where}: {first['msg']}", param=param, code="invalid_value").response()


def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    kind = {401: "authentication_error", 404: "not_found_error"}.get(exc.status_code, "invalid_request_error")
    return APIError(exc.status_code, str(exc.detail), type=kind, headers=getattr(exc, "headers", None)).response()


def _api_error(request: Request, exc: APIError) -> JSONResponse:
    return exc.response()


def _server_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error serving %s", request.url.path)
    return APIError(500, f"internal server error: {type(exc).__name__}: {exc}", type="server_error").response()


def install(app: FastAPI) -> None:
    """Answer every kind of failure with an OpenAI-style body."""
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(Exception, _server_error)
