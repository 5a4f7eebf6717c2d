"""The FastAPI application: routers, one error shape, the edge (limits, auth), metrics, champion and database."""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import __version__, errors, logs
from service.api import applicants, decisions, explanations, health, models, reviews, scores
from service.api import consent_page as consent_page_api
from service.api import consent_requests as consent_api
from service.api import loans as loans_api
from service.api import monitoring as monitoring_api
from service.api import performance as performance_api
from service.api import rescore as rescore_api
from service.api import stress as stress_api
from service.config import Settings, get_settings
from service.crypto import Keyring
from service.db.session import make_engine, migrate, session_factory
from service.db.writer import DecisionWriter
from service.edge import EdgeMiddleware
from service.metrics import Metrics
from service.runtime import CallerCache, Champion, Policies, RateLimiter, RedisRateLimiter
from service.usecases.scoring import Recorder

log = logging.getLogger("smecredit")
access = logging.getLogger("smecredit.access")


class ObserveMiddleware:
    """The request's ID, Prometheus counters and latency, and one access-log line per request, as plain ASGI (no
    per-request task and stream wrapping as with BaseHTTPMiddleware). The ID is the caller's X-Request-ID when it
    is a plain token, or a new one; it is returned in the response and set for every log line and error body
    written meanwhile (service/logs.py). The route template is logged, never the raw path: paths carry
    explanation tokens and decision ids."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees if the app fails before starting a response
        offered = next((v for k, v in scope["headers"] if k == b"x-request-id"), None)
        rid = logs.request_id(offered.decode("latin-1") if offered is not None else None)
        header = (b"x-request-id", rid.encode())
        token = logs.REQUEST_ID.set(rid)

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            seconds = time.perf_counter() - started
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(seconds)
            shown = route if route != "unmatched" else f"unmatched {logs.redacted_path(scope['path'])}"
            access.info("%s %s %d %.1f ms", scope["method"], shown, status, seconds * 1e3)
            logs.REQUEST_ID.reset(token)


# The docs pages load only what the package serves: ReDoc's bundle would fetch its maker's logo from a CDN (a
# request leaving a bank's network for decoration); this makes the browser refuse it without asking.
DOCS_POLICY = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
               "script-src 'self' 'unsafe-inline'; worker-src 'self' blob:; connect-src 'self'")


class DocsPolicyMiddleware:
    """A Content-Security-Policy on the API docs pages (they are not APIRoutes, so no dependency can add it)."""

    def __init__(self, app: ASGIApp, paths: tuple[str, ...]) -> None:
        self.app, self.paths = app, paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return

        async def with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []),
                                      (b"content-security-policy", DOCS_POLICY.encode())]
            await send(message)

        await self.app(scope, receive, with_policy)


def start(app: FastAPI) -> None:
    """What serving needs before the first request, kept out of ``create_app`` so that building the app (for its
    OpenAPI document, say) touches no database and loads no model: the schema at its latest revision and the
    champion loaded. The lifespan runs it; a test or script that uses the database before serving calls it
    first. Once per app."""
    if app.state.started:
        return
    migrate(app.state.engine)
    app.state.champion.refresh(force=True)
    app.state.started = True


def served_app() -> FastAPI:
    """The app as ``smecredit serve`` runs it, one per worker process: its heap is frozen once started."""
    return create_app(freeze_heap=True)


def create_app(settings: Settings | None = None, *, freeze_heap: bool = False) -> FastAPI:
    settings = settings or get_settings()
    if not logging.getLogger().handlers:  # a worker process that nothing configured (tests capture their own)
        logs.configure(settings.log_level, settings.log_format_in_effect)
    docs = settings.docs_enabled
    write_engine = make_engine(settings.database_url)
    read_engine = make_engine(settings.database_url, immediate=False) \
        if write_engine.dialect.name == "sqlite" else write_engine

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        start(app)
        app.state.callers.start()
        if freeze_heap:
            # The model, the app and the imported modules are about 250,000 objects that live as long as the
            # process: the collector's full pass over them paused requests for about 200 ms (the p99 under
            # load). Frozen, they are left out of every collection (docs/benchmarks.md).
            gc.freeze()
        yield
        app.state.writer.close()  # what was accepted is written before the process stops
        app.state.callers.close()
        app.state.engine.dispose()  # close pooled connections when the process stops
        read_engine.dispose()

    # Swagger UI and ReDoc from assets inside the installed package (fastapi-offline): a bank's intranet has no
    # CDN, and the pages rendered blank there. With docs off, neither the pages nor their assets are served.
    make = FastAPIOffline if docs else FastAPI
    app = make(title="smecredit", version=__version__, lifespan=lifespan,
               summary="SME credit scoring from operating data: decisions, offers and reasons.",
               docs_url="/docs" if docs else None, redoc_url="/redoc" if docs else None,
               openapi_url="/openapi.json" if docs else None)
    app.state.settings = settings
    app.state.engine = write_engine
    app.state.started = False
    app.state.sessions = session_factory(app.state.engine)
    app.state.read_engine = read_engine
    app.state.read_sessions = session_factory(read_engine)
    app.state.champion = Champion(settings.registry, settings.model_check_seconds)
    app.state.policies = Policies(settings.policies_dir, settings.model_check_seconds)
    app.state.keyring = Keyring.parse(settings.data_keys.get_secret_value())
    app.state.metrics = metrics = Metrics()
    app.state.writer = DecisionWriter(write_engine, on_commit=metrics.observe_commit)
    metrics.watch(app.state.writer, {"write": write_engine.pool}
                  | ({"read": read_engine.pool} if read_engine is not write_engine else {}))
    app.state.recorder = Recorder(settings, app.state.keyring, app.state.writer, app.state.read_sessions,
                                  local_reads=read_engine.dialect.name == "sqlite")
    app.state.rate_limiter = RedisRateLimiter(settings.redis_url) if settings.redis_url else RateLimiter()
    errors.install(app)
    for module in (scores, decisions, explanations, applicants, models, reviews, health):
        app.include_router(module.router)
    app.include_router(performance_api.router)
    app.include_router(stress_api.router)
    app.include_router(loans_api.router)
    app.include_router(rescore_api.router)
    app.include_router(monitoring_api.router)
    app.include_router(consent_api.router)
    app.include_router(consent_page_api.router)

    # Outermost last: metrics and the access log see what the client sees, the edge's refusals included.
    app.state.callers = CallerCache(settings.key_cache_seconds, settings.redis_url)
    app.add_middleware(EdgeMiddleware, settings=settings, limiter=app.state.rate_limiter,
                       sessions=app.state.read_sessions, callers=app.state.callers)
    if docs:
        app.add_middleware(DocsPolicyMiddleware, paths=("/docs", "/redoc"))
    app.add_middleware(ObserveMiddleware, metrics=metrics)
    if settings.tracing_endpoint:
        from service import tracing

        tracing.install(app, {write_engine, read_engine}, endpoint=settings.tracing_endpoint)
    return app
