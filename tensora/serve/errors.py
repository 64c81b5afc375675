"""OpenAI-style error bodies, `{"error": {"message", "type", "param", "code"}}`, for every failure.

Bad input of any kind (malformed JSON, wrong types, values out of range, unknown routes) is
a 4xx naming the problem; only a genuine server fault is a 500, and it too has this shape.
"""

from __future__ import annotations

import json
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
        return _AsciiJSON(self.body(), status_code=self.status, headers=self.headers)


class _AsciiJSON(JSONResponse):
    """JSON with non-ASCII characters escaped: an error may quote the request, and a lone surrogate
    from it ("\\ud800", valid JSON) has no UTF-8 encoding, so starlette's own rendering raised (a 500)."""

    def render(self, content: object) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def _is_field(part: object) -> bool:
    """A loc part that names a field or an index, not the member of a union pydantic tried ('str', 'list[int]')."""
    return isinstance(part, int) or (part != "body" and "[" not in str(part) and str(part) not in _UNION_TAGS)


_UNION_TAGS = {"str", "int", "float", "bool", "none", "dict", "list", "function-after"}


def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors()) or [{"msg": "invalid request", "loc": (), "type": ""}]
    first = errors[0]
    if first.get("type") == "json_invalid":
        return APIError(400, f"the request body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}",
                        code="invalid_json").response()
    if tuple(first.get("loc", ())) == ("body",):  # the body as a whole: empty, or JSON that is not an object
        what = "empty" if first.get("type") == "missing" else "not a JSON object"
        return APIError(400, f"the request body is {what}: send a JSON object such as "
                             '{"model": ..., "messages": [...]}', code="invalid_value").response()

    def path(error: dict) -> tuple:
        return tuple(p for p in error.get("loc", ()) if _is_field(p))

    # A value that fits no member of a union gives one error per member; report the member it went
    # furthest into (a list of the wrong items says which item, or that it is too long, rather than
    # "should be a valid string"): the deepest error, and one past the type check before a type mismatch.
    same = [e for e in errors if path(e)[:len(path(first))] == path(first)]
    chosen = max(same or [first], key=lambda e: (len(path(e)), not str(e.get("type", "")).endswith("_type")))
    param = ".".join(str(p) for p in path(chosen)) or None
    where = f" at '{param}'" if param else ""
    message = chosen["msg"].removeprefix("Value error, ")
    return APIError(400, f"invalid request{where}: {message}", param=param, code="invalid_value").response()


def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    kind = {401: "authentication_error", 404: "not_found_error"}.get(exc.status_code, "invalid_request_error")
    message, code = str(exc.detail), None
    if exc.status_code == 400 and message == "There was an error parsing the body":  # e.g. bytes that are not UTF-8
        message, code = "the request body could not be read as JSON (UTF-8 text, not nested too deep)", "invalid_json"
    elif exc.status_code == 404 and message == "Not Found":
        message = f"there is no route {request.method} {request.url.path}"
    elif exc.status_code == 405:
        allowed = (getattr(exc, "headers", None) or {}).get("Allow", "")
        message = f"{request.url.path} does not take {request.method}" + (f"; use {allowed}" if allowed else "")
    return APIError(exc.status_code, message, type=kind, code=code, headers=getattr(exc, "headers", None)).response()


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
