"""One error shape for every error: {"type", "title", "status", "detail", "errors", "request_id"}. No stack trace
leaves; the request's ID (also in the X-Request-ID header and every log line) lets an operator find the rest."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.logs import REQUEST_ID

log = logging.getLogger("smecredit.errors")


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] = []
    request_id: str | None = None  # the X-Request-ID of the response: quote it to the operator


class DomainError(Exception):
    status_code = 400
    type = "bad_request"
    title = "Bad request"

    def __init__(self, detail: str, *, errors: list[dict] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []


class Unauthorized(DomainError):
    status_code, type, title = 401, "unauthorized", "Missing or invalid API key"


class Forbidden(DomainError):
    status_code, type, title = 403, "forbidden", "The API key lacks the scope for this operation"


class NotFound(DomainError):
    status_code, type, title = 404, "not_found", "Not found"


class Conflict(DomainError):
    status_code, type, title = 409, "conflict", "Conflict"


class Invalid(DomainError):
    status_code, type, title = 422, "validation_error", "The request is not valid"


class TooLarge(DomainError):
    status_code, type, title = 413, "payload_too_large", "The request body is too large"


class UnsupportedMediaType(DomainError):
    status_code, type, title = 415, "unsupported_media_type", "The body must be JSON"


class RateLimited(DomainError):
    status_code, type, title = 429, "rate_limited", "Too many requests"


class Unavailable(DomainError):
    status_code, type, title = 503, "unavailable", "The service cannot serve this now"


def error_response(status: int, type_: str, title: str, detail: str, errors: list[dict] | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorBody(type=type_, title=title, status=status, detail=detail, errors=errors or [],
                     request_id=REQUEST_ID.get())
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _route(request: Request) -> str:
    """The route template, never the raw path: paths carry explanation tokens and decision ids."""
    return getattr(request.scope.get("route"), "path", "unmatched route")


def _loc(loc: tuple | list) -> str:
    return ".".join(str(p) for p in loc)


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        headers = {"Retry-After": "60"} if isinstance(exc, RateLimited) else None
        if isinstance(exc, Unauthorized):
            headers = {"WWW-Authenticate": "Bearer"}
        return error_response(exc.status_code, exc.type, exc.title, exc.detail, exc.errors, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": [str(p) if not isinstance(p, int) else p for p in e["loc"]], "msg": e["msg"],
                   "type": e["type"]} for e in exc.errors()]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        return error_response(422, Invalid.type, Invalid.title, f"{_loc(first['loc'])}: {first['msg']}", errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        titles = {404: "Not found", 405: "Method not allowed", 413: TooLarge.title}
        type_ = TooLarge.type if exc.status_code == 413 else "http_error"
        # exc.headers: Allow on a 405, Connection: close on a 413 from the edge (its body is left unread)
        return error_response(exc.status_code, type_, titles.get(exc.status_code, "HTTP error"), str(exc.detail),
                              headers=exc.headers)

    @app.exception_handler(DBAPIError)
    async def _database(request: Request, exc: DBAPIError) -> JSONResponse:
        if not (isinstance(exc, OperationalError | InterfaceError) or exc.connection_invalidated):
            return await _unexpected(request, exc)
        log.warning("database unavailable on %s %s: %s", request.method, _route(request), type(exc.orig).__name__)
        return error_response(503, Unavailable.type, Unavailable.title,
                              "the database is not reachable; nothing was recorded, retry later",
                              headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, _route(request))
        return error_response(500, "internal_error", "Internal error",
                              "The service failed to handle this request; it has been logged.")


ERROR_RESPONSES = {
    # Errors are JSON on every route, HTML pages included: say so explicitly rather than under the route's type.
    code: {"model": ErrorBody, "description": text,
           "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
    for code, text in ((401, "Missing or invalid API key"), (403, "Missing scope"), (404, "Not found"),
                       (409, "Conflict (a concurrent request with the same Idempotency-Key)"),
                       (413, "Body too large"), (415, "The body is not application/json"),
                       (422, "Validation error, naming the field and the rule"),
                       (429, "Rate limited"), (503, "No champion model, or the database is unreachable"))
}
