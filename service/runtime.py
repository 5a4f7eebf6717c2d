"""Long-lived state of a running service: the champion engine (hot-swapped), tenant policies, rate limits and
the authenticated-key cache."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Generic, TypeVar

from lightgbm.basic import LightGBMError

from service.errors import RateLimited, Unavailable
from service.scoring.bundle import Bundle, BundleError, load_bundle
from service.scoring.engine import Engine
from service.scoring.fraud import FraudModelError, registry_fraud_model
from service.scoring.graph import GraphError, registry_graph
from service.scoring.policy import Policy, PolicyError, load_policy
from service.scoring.registry import Registry, RegistryError

log = logging.getLogger("smecredit.runtime")
DEFAULT_POLICY = Path(__file__).with_name("policies") / "default.yaml"
T = TypeVar("T")


class Champion:
    """The champion engine. Replicas notice a new champion.json within ``check_seconds`` and load it. A bundle
    that fails verification or the servability check (in a child process, see bundle.py) is refused: the
    current engine keeps serving, or, with none yet (at start), the newest earlier champion in the registry's
    history that passes. Requests in flight keep the engine object they started with, so a swap never fails
    them."""

    def __init__(self, registry: Path, check_seconds: float = 1.0) -> None:
        self.registry = registry
        self.check_seconds = check_seconds
        self._engine: Engine | None = None
        self._lock = threading.Lock()
        self._checked = 0.0
        self._refused: str | None = None
        self.last_error: str | None = None  # why champion.json's version is not the one serving, if it is not

    def current_version(self) -> str | None:
        try:
            return Registry(self.registry).champion()
        except (OSError, ValueError, KeyError):  # absent, or being rewritten by another replica
            return None

    @property
    def refused(self) -> str | None:
        """The version champion.json names when it was refused (and something else, or nothing, serves)."""
        return self._refused if self._refused == self.current_version() else None

    def refresh(self, *, force: bool = False) -> None:
        """Load the version champion.json names, if it is not the one serving. A load (a child-process check of
        up to ``CHECK_TIMEOUT``) never holds up other callers: one that finds another thread loading returns at
        once and the current engine keeps serving. Only the first load (``force=True`` with nothing serving
        yet, at start) waits for one under way."""
        now = time.monotonic()
        if not force and now - self._checked < self.check_seconds:
            return
        if not self._lock.acquire(blocking=force and self._engine is None):
            return  # another thread is loading
        try:
            if not force and now - self._checked < self.check_seconds:
                return  # another thread checked between this one's look and its lock
            self._checked = now
            version = self.current_version()
            if version is None:
                return
            if self._engine is not None and self._engine.version == version:
                self._refused = self.last_error = None  # e.g. rolled back to the version serving as a fallback
                return
            if version == self._refused:
                return  # checked and refused already: not again on every request
            try:
                engine = _load_engine(self.registry, version)
            except _LOAD_ERRORS as exc:
                self._refused = version
                self.last_error = f"champion.json names {version}, refused: {exc}"
                log.error(self.last_error)
                if self._engine is None:
                    self._engine = self._last_good(exclude=version)
                return
            self._engine, self._refused, self.last_error = engine, None, None
            log.info("serving model %s", version)
        finally:
            self._lock.release()

    def _last_good(self, *, exclude: str) -> Engine | None:
        """The newest earlier champion that still passes every check, so that a bad pointer at start does not
        leave the service without a model."""
        try:
            history = Registry(self.registry).champion_history()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("cannot read the registry's history for a fallback champion: %s", exc)
            return None
        for version in history:
            if version == exclude:
                continue
            try:
                engine = _load_engine(self.registry, version)
            except _LOAD_ERRORS as exc:
                log.error("earlier champion %s refused too: %s", version, exc)
                continue
            log.warning("serving %s, the last good champion, instead of %s", version, exclude)
            return engine
        return None

    def refresh_due(self) -> bool:
        return time.monotonic() - self._checked >= self.check_seconds

    def get(self) -> Engine:
        self.refresh()
        return self.serving()

    def serving(self) -> Engine:
        """The engine serving now, without looking for a new champion."""
        engine = self._engine
        if engine is None:
            raise Unavailable(self.last_error or f"no champion model in {self.registry}; train and promote one "
                              "(smecredit train --data DIR --promote)")
        return engine

    @property
    def loaded(self) -> Engine | None:
        return self._engine


_LOAD_ERRORS = (BundleError, RegistryError, GraphError, FraudModelError, LightGBMError, OSError, ValueError, KeyError,
                TypeError)


def _load_engine(registry: Path, version: str) -> Engine:
    # path() refuses anything but a version; the graph index (smecredit graph build) is checked as it loads
    return Engine(load_bundle(Registry(registry).path(version)), graph=registry_graph(registry),
                  fraud=registry_fraud_model(registry))


class BundleCache:
    """Verified bundles by version. Versions are content-addressed and immutable, so a bundle is loaded
    (digests checked, servability checked in a child process, model parsed) once, not per request; a refusal
    is remembered per content by ``check_servable``, so asking again forks nothing."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._bundles: dict[str, Bundle] = {}
        self._loading: dict[str, threading.Lock] = {}  # version -> held while that version loads
        self._lock = threading.Lock()  # guards both dicts; never held across a load

    def get(self, registry: Path, version: str | None) -> Bundle:
        """The bundle, at once when cached; otherwise loaded by the first caller for that version while later
        callers for the same version wait for it, and callers for any other version do not."""
        if version is None:
            raise RegistryError("no model version given and no champion")
        with self._lock:
            if (bundle := self._bundles.get(version)) is not None:
                return bundle
            loading = self._loading.setdefault(version, threading.Lock())
        with loading:
            with self._lock:
                if (bundle := self._bundles.get(version)) is not None:
                    return bundle  # loaded by the caller this one waited for
            bundle = None
            try:
                bundle = self._load(registry, version)
            finally:
                with self._lock:
                    if bundle is not None:
                        if len(self._bundles) >= self.size:
                            self._bundles.pop(next(iter(self._bundles)))
                        self._bundles[version] = bundle
                    self._loading.pop(version, None)  # a refusal is remembered by check_servable, not here
            return bundle

    @staticmethod
    def _load(registry: Path, version: str) -> Bundle:
        try:
            return load_bundle(Registry(registry).path(version))  # checked in a child before any parse
        except LightGBMError as exc:  # the child passed, yet this parse failed: refuse, never a 500
            raise BundleError(f"bundle {version}: LightGBM cannot load it ({exc})") from exc


class Policies:
    """Tenant policies from ``<dir>/<name>.yaml``, the shipped default otherwise; reloaded within
    ``check_seconds`` of a change to the file (as a new champion is noticed)."""

    def __init__(self, directory: Path | None, check_seconds: float = 1.0) -> None:
        self.directory, self.check_seconds = directory, check_seconds
        self._cache: dict[Path, tuple[float, Policy]] = {}
        self._looked: dict[Path, float] = {}  # when each file's modification time was last read
        self._lock = threading.Lock()

    def for_tenant(self, policy_name: str | None) -> Policy:
        """The tenant's policy. Never silently another lender's: a named policy that cannot be found is a 503
        naming it; a policy file edited into an invalid state keeps its last good version (and logs why)."""
        if policy_name is None:
            path = DEFAULT_POLICY
        elif self.directory is None:
            raise Unavailable(f"the tenant's policy {policy_name!r} needs SMECREDIT_POLICIES_DIR to be set")
        else:
            path = self.directory / f"{policy_name}.yaml"
        cached = self._cache.get(path)
        now = time.monotonic()
        if cached and now - self._looked.get(path, 0.0) < self.check_seconds:
            return cached[1]  # looked at the file less than check_seconds ago: no stat per request
        try:
            mtime = path.stat().st_mtime
        except OSError as exc:
            raise Unavailable(f"the tenant's policy file {path.name} is missing") from exc
        self._looked[path] = now
        if cached and cached[0] == mtime:
            return cached[1]
        with self._lock:
            try:
                policy = load_policy(path)
            except PolicyError as exc:
                if cached:
                    log.error("policy %s is invalid, keeping %s: %s", path.name, cached[1].version, exc)
                    self._cache[path] = (mtime, cached[1])
                    return cached[1]
                raise Unavailable(f"the tenant's policy file {path.name} is invalid") from exc
            self._cache[path] = (mtime, policy)
        return policy


class RateLimiter:
    """Fixed one-minute windows per key ("key:<id>", "authfail:<address>", "page:<address>"), in process: right
    for one replica. Each check names its own limit, so one limiter serves every kind of key."""

    shared = False  # in process: counting never blocks

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], int] = defaultdict(int)
        self._lock = threading.Lock()

    def _window(self) -> int:
        window = int(time.time() // 60)
        if len(self._counts) > 10_000:  # forget old windows (called under the lock)
            self._counts = defaultdict(int, {k: v for k, v in self._counts.items() if k[1] == window})
        return window

    def hit(self, key: str) -> int:
        """Count one event for ``key`` in this window; the count so far."""
        with self._lock:
            window = self._window()
            self._counts[(key, window)] += 1
            return self._counts[(key, window)]

    def peek(self, key: str) -> int:
        """The count for ``key`` in this window, without counting."""
        with self._lock:
            return self._counts.get((key, self._window()), 0)

    def check(self, key: str, limit: int, detail: str) -> None:
        """Count one event; refuse it (429) when it is over ``limit`` in this window."""
        if self.hit(key) > limit:
            raise RateLimited(detail)


class RedisRateLimiter(RateLimiter):
    """The same windows shared by every replica through Redis (INCR + EXPIRE, one round trip).
    If Redis is unreachable the request is let through and the failure logged: scoring stays available. After a
    failure Redis is left alone for ``retry_seconds``, so an outage does not add its timeouts to every request."""

    shared = True  # a round trip to Redis per count

    def __init__(self, url: str, retry_seconds: float = 5.0) -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.errors = (redis.RedisError, OSError)
        self.retry_seconds = retry_seconds
        self._down_until = 0.0

    @staticmethod
    def _name(key: str) -> str:
        return f"smecredit:rl:{key}:{int(time.time() // 60)}"

    def _count(self, key: str, *, increment: bool) -> int:
        if time.monotonic() < self._down_until:
            return 0
        name = self._name(key)
        try:
            if not increment:
                return int(self.client.get(name) or 0)
            pipe = self.client.pipeline()
            pipe.incr(name)
            pipe.expire(name, 120)
            return int(pipe.execute()[0])
        except self.errors as exc:
            self._down_until = time.monotonic() + self.retry_seconds
            log.warning("rate limiter: Redis unavailable (%s); requests allowed for %g s", type(exc).__name__,
                        self.retry_seconds)
            return 0

    def hit(self, key: str) -> int:
        return self._count(key, increment=True)

    def peek(self, key: str) -> int:
        return self._count(key, increment=False)


REVOKED_CHANNEL = "smecredit:keys:revoked"  # Redis: a revoked key's prefix, so that every replica drops it at once


class CallerCache(Generic[T]):
    """Authenticated API keys, kept for ``ttl`` seconds so that a request does not look its key up in the
    database. Only keys that authenticated are kept (a key created a moment ago works at once; failures are
    rate-limited per address instead). With Redis, ``start`` subscribes to ``REVOKED_CHANNEL`` (where `keys
    revoke` announces a revocation) and every replica drops the key within milliseconds; without Redis, or
    while it is down, a revoked key is refused at the latest ``ttl`` seconds after its revocation.

    A lookup that read the key as valid just before a revocation must not cache it afterwards: ``generation``
    counts drops, and ``put`` is refused when a drop happened since the caller read it (``get_generation``)."""

    def __init__(self, ttl: float, redis_url: str | None = None) -> None:
        self.ttl, self.redis_url = ttl, redis_url
        self._entries: dict[str, tuple[float, str, T]] = {}  # SHA-256 of the key -> (expires, prefix, caller)
        self._lock = threading.Lock()
        self.generation = 0  # drops so far
        self.listening = False  # subscribed to revocations through Redis
        self._closed = threading.Event()
        self._pubsub = None

    def start(self) -> None:
        """Listen for revocations (with Redis): at app start, not while the app object is being built."""
        if self.redis_url and self.ttl > 0:
            threading.Thread(target=self._listen, args=(self.redis_url,), name="key-revocations",
                             daemon=True).start()

    @staticmethod
    def _digest(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    def get(self, key: str) -> T | None:
        entry = self._entries.get(self._digest(key))
        return entry[2] if entry is not None and entry[0] > time.monotonic() else None

    def put(self, key: str, prefix: str, caller: T, generation: int) -> None:
        """Keep ``caller``, looked up when ``generation`` was current; not if a key was dropped since."""
        if self.ttl <= 0:
            return
        with self._lock:
            if generation != self.generation:
                return
            if len(self._entries) > 10_000:  # forget expired entries now and then
                now = time.monotonic()
                self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
            self._entries[self._digest(key)] = (time.monotonic() + self.ttl, prefix, caller)

    def drop(self, prefix: str) -> None:
        with self._lock:
            self.generation += 1
            self._entries = {k: v for k, v in self._entries.items() if v[1] != prefix}

    def close(self) -> None:
        """Stop listening (the app shuts down)."""
        self._closed.set()
        if self._pubsub is not None:
            self._pubsub.close()  # ends the blocking listen() in the listener thread

    def _listen(self, url: str) -> None:
        import redis

        down = False
        while not self._closed.is_set():
            try:
                # Health checks: a half-open connection is noticed (and the cache emptied on reconnecting).
                self._pubsub = pubsub = redis.Redis.from_url(url, socket_connect_timeout=0.5,
                                                             health_check_interval=10).pubsub()
                pubsub.subscribe(REVOKED_CHANNEL)
                for message in pubsub.listen():
                    if message["type"] == "subscribe":  # from here on no revocation is missed
                        with self._lock:  # those missed while unsubscribed: start afresh
                            self.generation += 1
                            self._entries.clear()
                        self.listening, down = True, False
                    elif message["type"] == "message":
                        self.drop(message["data"].decode())
            except (redis.RedisError, OSError, AttributeError, ValueError) as exc:  # also: closed under listen()
                self.listening = False
                if not down and not self._closed.is_set():  # once per outage, not once per retry
                    log.warning("key revocations: Redis unavailable (%s); cached keys expire within %g s",
                                type(exc).__name__, self.ttl)
                down = True
                self._closed.wait(1.0)


def announce_revocation(redis_url: str | None, prefix: str) -> bool:
    """Tell every replica that the key with ``prefix`` was revoked (after the revocation committed). False when
    there is no Redis or it cannot be reached: replicas then refuse the key once their cached entry expires."""
    if not redis_url:
        return False
    import redis

    try:
        redis.Redis.from_url(url=redis_url, socket_timeout=1, socket_connect_timeout=1).publish(REVOKED_CHANNEL,
                                                                                              prefix)
    except (redis.RedisError, OSError) as exc:
        log.warning("key revocation not announced: Redis unavailable (%s)", type(exc).__name__)
        return False
    return True
