"""Dependencies, defined once as Annotated aliases: settings, database sessions and engines, caller, champion
engine, policies, keyring, metrics, the decision recorder. Handlers take what they need from here and never
reach into ``request.app.state`` themselves: the app's parts are named in one place."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine as SqlEngine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from service.config import Settings
from service.crypto import Keyring
from service.db import repo
from service.db.tables import Tenant
from service.errors import Forbidden, Unauthorized, Unavailable
from service.metrics import Metrics
from service.runtime import CallerCache, Champion, Policies, RateLimiter
from service.scoring.engine import Engine
from service.usecases.scoring import Recorder

bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer sk_...`")


# Dependencies that only read the app's state are async: a sync one costs a thread-pool hop per request.
async def get_app_settings(request: Request) -> Settings:
    """The running app's settings (service.config.get_settings reads the environment; this is what the app was
    built with, which a test may have set)."""
    return request.app.state.settings


def _open(factory: sessionmaker[Session]) -> Iterator[Session]:
    session = factory()
    try:
        yield session
    finally:
        session.close()


def get_session(request: Request) -> Iterator[Session]:
    """A session for handlers that write (on SQLite its transactions take the write lock at BEGIN)."""
    yield from _open(request.app.state.sessions)


def get_read_session(request: Request) -> Iterator[Session]:
    """A session for handlers that only read: it never waits for a writer."""
    yield from _open(request.app.state.read_sessions)


async def get_session_factory(request: Request) -> sessionmaker[Session]:
    """For handlers that open their session inside a thread-pool function of their own."""
    return request.app.state.sessions


async def get_read_session_factory(request: Request) -> sessionmaker[Session]:
    return request.app.state.read_sessions


async def get_write_engine(request: Request) -> SqlEngine:
    return request.app.state.engine


async def get_read_engine(request: Request) -> SqlEngine:
    return request.app.state.read_engine


async def get_keyring(request: Request) -> Keyring:
    return request.app.state.keyring


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_recorder(request: Request) -> Recorder:
    return request.app.state.recorder


async def get_rate_limiter(request: Request) -> RateLimiter:
    return request.app.state.rate_limiter


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
ReadSessionDep = Annotated[Session, Depends(get_read_session)]
SessionsDep = Annotated[sessionmaker[Session], Depends(get_session_factory)]
ReadSessionsDep = Annotated[sessionmaker[Session], Depends(get_read_session_factory)]
WriteEngineDep = Annotated[SqlEngine, Depends(get_write_engine)]
ReadEngineDep = Annotated[SqlEngine, Depends(get_read_engine)]
KeyringDep = Annotated[Keyring, Depends(get_keyring)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
RecorderDep = Annotated[Recorder, Depends(get_recorder)]
RateLimiterDep = Annotated[RateLimiter, Depends(get_rate_limiter)]


@dataclass(frozen=True)
class Caller:
    tenant: Tenant
    scopes: frozenset[str]
    key_id: str


CALLER_SCOPE_KEY = "smecredit.caller"  # set by the edge middleware (service/edge.py) once per request


def lookup_caller(sessions: sessionmaker[Session], key: str, cache: CallerCache[Caller] | None = None) -> Caller | None:
    """The caller an API key belongs to, or None for an unknown, revoked or malformed key (blocking: one query
    unless ``cache`` holds the key)."""
    if cache is not None and (caller := cache.get(key)) is not None:
        return caller
    generation = cache.generation if cache is not None else 0  # read before the database is
    try:
        # A session of its own, closed at once: the handler's transaction starts only when it writes.
        with sessions() as session:
            found = repo.authenticate(session, key=key)
    except OperationalError as exc:
        raise Unavailable("the database is not reachable") from exc
    if found is None:
        return None
    tenant, scopes = found
    caller = Caller(tenant=tenant, scopes=scopes, key_id=key.split("_")[1])
    if cache is not None:
        cache.put(key, caller.key_id, caller, generation)
    return caller


async def get_caller(request: Request,
                     credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Caller:
    """The caller the edge middleware authenticated (and rate-limited) before the body was read. ``credentials``
    is declared for the OpenAPI security scheme only: the key is looked up once, by the middleware. Async: it
    only reads the scope, so it skips the thread-pool hop of a sync dependency."""
    caller = request.scope.get(CALLER_SCOPE_KEY)
    if caller is None:  # a key route outside the middleware's API-key paths: a wiring error, tested against
        raise Unauthorized("send the API key as 'Authorization: Bearer <key>'")
    return caller


def require(*scopes: str) -> Callable[..., Awaitable[Caller]]:
    """A dependency that admits callers holding any of ``scopes``."""

    async def check(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:  # no blocking work: no thread hop
        if not caller.scopes & set(scopes):
            raise Forbidden(f"this operation needs the scope {' or '.join(scopes)}; the key has "
                            f"{', '.join(sorted(caller.scopes))}")
        return caller

    return check


async def get_champion(request: Request) -> Champion:
    return request.app.state.champion


async def get_engine(champion: Annotated[Champion, Depends(get_champion)]) -> Engine:
    """The champion engine; the periodic look for a new champion (a file read, and a model load with its
    child-process check when one was promoted) runs in the thread pool, never on the event loop."""
    if champion.refresh_due():
        await run_in_threadpool(champion.refresh)
    return champion.serving()


async def get_policies(request: Request) -> Policies:
    return request.app.state.policies


ScorerDep = Annotated[Caller, Depends(require("score"))]
ReviewerDep = Annotated[Caller, Depends(require("review"))]
AdminDep = Annotated[Caller, Depends(require("admin"))]
PlatformDep = Annotated[Caller, Depends(require("platform"))]  # acts on what every tenant shares (the champion)
ReaderDep = Annotated[Caller, Depends(require("score", "review", "admin"))]
EngineDep = Annotated[Engine, Depends(get_engine)]
ChampionDep = Annotated[Champion, Depends(get_champion)]
PoliciesDep = Annotated[Policies, Depends(get_policies)]
