"""Dependencies, defined once as Annotated aliases: settings, database session, caller, engine, policies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from service.config import Settings
from service.db import repo
from service.db.tables import Tenant
from service.errors import Forbidden, Unauthorized, Unavailable
from service.runtime import CallerCache, Champion, Policies
from service.scoring.engine import Engine

bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer sk_...`")


# Dependencies that only read the app's state are async: a sync one costs a thread-pool hop per request.
async def get_settings(request: Request) -> Settings:
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


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
ReadSessionDep = Annotated[Session, Depends(get_read_session)]


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
