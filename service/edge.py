"""The HTTP edge: what an unauthenticated client can make a worker hold, and for how long.

Two layers, both per worker process (settings in service/config.py, applied by `smecredit serve`):

- ``EdgeProtocol``, uvicorn's httptools protocol with what it lacks: a bound on the request head (httptools
  buffers a header of any size, and concatenates it quadratically), a deadline for the head and one for the
  body (slowloris), and caps on open connections and on requests in flight. Refusals are answered here, in the
  one JSON error shape, without running the app.
- ``EdgeMiddleware``, in the app: rate limits per client address for failed authentication and for the public
  explanation pages, the API-key lookup before any body is read (the caller is put in the ASGI scope for
  ``deps.get_caller``), the per-key rate limit, and the body-size limit while the body streams in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from service import errors
from service.config import Settings, get_settings
from service.deps import CALLER_SCOPE_KEY, Caller, lookup_caller
from service.runtime import CallerCache, RateLimiter

log = logging.getLogger("smecredit.edge")

API_KEY_PATHS = "/v1/"  # every route under it takes an API key, but the pages (tests/test_edge.py checks both)
PAGE_PATHS = "/v1/explanations/"  # the applicant's pages: public, opened by a token
UNCAPPED_PATHS = (b"/healthz",)  # liveness answers even when the worker is saturated (its connection counts)
LINGER_SECONDS = 1.0  # after a refusal: the client has this long to read it before the socket is closed
RETRY_AFTER = "5"  # seconds, for 503 (capacity)


def error_bytes(status: int, type_: str, title: str, detail: str,
                headers: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
    """A whole HTTP/1.1 response in the one error shape, closing the connection."""
    body = errors.ErrorBody(type=type_, title=title, status=status, detail=detail).model_dump_json().encode()
    lines = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
             (b"connection", b"close"), *headers]
    return STATUS_LINE[status] + b"".join(name + b": " + value + b"\r\n" for name, value in lines) + b"\r\n" + body


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a head-size bound, head and body deadlines, and capacity caps.

    The head phase runs from the connection (or the first byte of the next request on a kept-alive connection)
    to the end of the headers; the body phase from the start of the request's handling to the end of its body.
    One timer runs at a time. Both deadlines are totals, not idle times: trickling bytes does not extend them.
    Head bytes are counted as they arrive, before httptools buffers them, so a head that never ends is refused
    within one read of the limit. Between requests uvicorn's keep-alive timeout (5 s) applies.
    """

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits: Settings = get_settings()
        self._head_bytes: int | None = 0  # None in the body phase and between requests
        self._deadline: asyncio.TimerHandle | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._refused = False

    # --- timers -------------------------------------------------------------------------------------------
    def _arm(self, seconds: float, phase: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._timed_out, phase, seconds)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self, phase: str, seconds: float) -> None:
        self._deadline = None
        self._refuse(408, "request_timeout", "Request timeout",
                     f"the request {phase} was not received within {seconds:g} s")

    # --- refusals -----------------------------------------------------------------------------------------
    def _refuse(self, status: int, type_: str, title: str, detail: str, *, retry_after: bool = False) -> None:
        """Answer ``status`` and close: half-close at once, stop reading, close after a short linger (closing
        with unread input would reset the connection and could destroy the answer before the client reads it)."""
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        self._disarm()
        busy = self.cycle is not None and not self.cycle.response_complete
        if busy and self.cycle.response_started:  # the app is answering (a pipelined or stalled body): just close
            self.transport.close()
        else:
            headers = [(b"retry-after", RETRY_AFTER.encode())] if retry_after else []
            self.transport.write(error_bytes(status, type_, title, detail, [*self.server_state.default_headers,
                                                                             *headers]))
            self.flow.pause_reading()
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self._linger = self.loop.call_later(LINGER_SECONDS, self.transport.close)
        if busy:  # the app's receive() answers http.disconnect, its send() is dropped
            self.cycle.disconnected = True
            self.cycle.message_event.set()

    # --- protocol events ----------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.limits.header_timeout_seconds, "head")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._linger is not None:
            self._linger.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._head_bytes is not None:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._head_bytes is not None and self._head_bytes > self.limits.max_header_bytes:
            self._too_large()  # the head is still incomplete and already over the limit

    def send_400_response(self, msg: str) -> None:
        """httptools could not parse the request: the one error shape rather than uvicorn's plain text."""
        self._refuse(400, errors.DomainError.type, errors.DomainError.title, "the request is not valid HTTP/1.1")

    def _too_large(self) -> None:
        self._refuse(431, "header_too_large", "Request header fields too large",
                     f"the request line and headers must be at most {self.limits.max_header_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._refused and self._deadline is None:  # the next request on a kept-alive connection
            self._head_bytes = 0
            self._arm(self.limits.header_timeout_seconds, "head")

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._disarm()
        self._head_bytes = None
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.limits.max_header_bytes:  # a whole head that came in one read
            self._too_large()
            return
        if len(self.connections) > self.limits.max_connections:
            self._refuse(503, errors.Unavailable.type, errors.Unavailable.title,
                         f"this worker has {self.limits.max_connections} connections open; retry later",
                         retry_after=True)
            return
        if len(self.tasks) >= self.limits.max_in_flight and self.url.split(b"?")[0] not in UNCAPPED_PATHS:
            self._refuse(503, errors.Unavailable.type, errors.Unavailable.title,
                         f"this worker has {self.limits.max_in_flight} requests in flight; retry later",
                         retry_after=True)
            return
        super().on_headers_complete()

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        """The body deadline starts with the request's handling: at once, or, for a pipelined request, when
        the one before it is answered (uvicorn stops reading meanwhile)."""
        super()._start_asgi_task(cycle, app)
        if cycle.more_body and not self._refused:
            self._arm(self.limits.body_timeout_seconds, "body")

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._disarm()
        super().on_message_complete()


# --- in the app ---------------------------------------------------------------------------------------------


class BodyTooLarge(StarletteHTTPException):
    """Raised by the counting receive(); FastAPI re-raises HTTP exceptions from body reading, so errors.py renders
    it as 413 wherever the body is read (FastAPI's parser or a handler's own ``request.body()``)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"the body must be at most {max_bytes} bytes", headers={"Connection": "close"})


def bearer_key(authorization: str | None) -> str | None:
    scheme, _, key = (authorization or "").partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and key else None


def client_address(scope: Scope) -> str:
    """The peer's address; behind a proxy, uvicorn puts the forwarded one here for FORWARDED_ALLOW_IPS."""
    client = scope.get("client")
    return client[0] if client else "unknown"


class EdgeMiddleware:
    """Per-address limits, the API-key check before the body is read, and the body-size limit, as plain ASGI.

    The key is looked up once per request (one query, in the thread pool), here; ``deps.get_caller`` reads the
    caller from the scope. Failed authentication counts against the client's address: beyond
    ``auth_failures_per_minute`` the address gets 429 without a lookup, so keys cannot be guessed at speed.
    Refusals of a request that may carry a body close the connection, so the body is never read.
    """

    def __init__(self, app: ASGIApp, settings: Settings, limiter: RateLimiter, sessions: Any,
                 callers: CallerCache | None = None) -> None:
        self.app, self.settings, self.limiter, self.sessions = app, settings, limiter, sessions
        self.callers = callers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        path = scope["path"]
        refusal: errors.DomainError | None = None
        if path.startswith(PAGE_PATHS):
            refusal = await run_in_threadpool(self._page_allowed, client_address(scope))
        elif path.startswith(API_KEY_PATHS):
            authorization = headers.get("authorization")
            key = bearer_key(authorization)
            cached = self.callers.get(key) if key is not None and self.callers is not None else None
            if cached is None or self.limiter.shared:
                refusal = await run_in_threadpool(self._authenticate, scope, key, cached)
            else:  # a cached key and in-process limits: microseconds, no thread-pool hop
                refusal = self._authenticate(scope, key, cached)
        declared = headers.get("content-length")
        if refusal is None and declared is not None and declared.isdigit() \
                and int(declared) > self.settings.max_body_bytes:
            refusal = errors.TooLarge(f"the body must be at most {self.settings.max_body_bytes} bytes")
        if refusal is not None:
            extra = {"Connection": "close"} if declared not in (None, "0") or "transfer-encoding" in headers else {}
            if isinstance(refusal, errors.RateLimited):
                extra["Retry-After"] = "60"
            elif isinstance(refusal, errors.Unauthorized):
                extra["WWW-Authenticate"] = "Bearer"
            elif isinstance(refusal, errors.Unavailable):
                extra["Retry-After"] = RETRY_AFTER
            response = errors.error_response(refusal.status_code, refusal.type, refusal.title, refusal.detail,
                                             headers=extra)
            await response(scope, receive, send)
            return
        await self.app(scope, self._counting(receive), send)

    def _counting(self, receive: Receive) -> Receive:
        size, limit = 0, self.settings.max_body_bytes

        async def counted() -> Message:
            nonlocal size
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > limit:
                    raise BodyTooLarge(limit)
            return message

        return counted

    def _page_allowed(self, address: str) -> errors.DomainError | None:
        if self.limiter.hit(f"page:{address}") > self.settings.pages_per_minute:
            return errors.RateLimited(f"more than {self.settings.pages_per_minute} page requests in a minute from "
                                      "this address")
        return None

    def _authenticate(self, scope: Scope, key: str | None, cached: Caller | None) -> errors.DomainError | None:
        """Blocking (a database lookup, Redis) unless ``cached`` holds the caller and the limits are in process."""
        address, limit = client_address(scope), self.settings.auth_failures_per_minute
        if self.limiter.peek(f"authfail:{address}") >= limit:
            return errors.RateLimited(f"more than {limit} failed authentications in a minute from this address")
        if key is None:
            caller, why = None, "send the API key as 'Authorization: Bearer <key>'"
        elif cached is not None:
            caller, why = cached, ""
        else:
            try:
                caller = lookup_caller(self.sessions, key, self.callers)
            except errors.Unavailable as exc:
                return exc
            why = "the API key is not valid (unknown, revoked or mistyped)"
        if caller is None:
            if self.limiter.hit(f"authfail:{address}") > limit:
                return errors.RateLimited(f"more than {limit} failed authentications in a minute from this address")
            return errors.Unauthorized(why)
        per_key = self.settings.rate_limit_per_minute
        if self.limiter.hit(f"key:{caller.key_id}") > per_key:
            return errors.RateLimited(f"more than {per_key} requests in a minute for this API key")
        scope[CALLER_SCOPE_KEY] = caller
        return None
