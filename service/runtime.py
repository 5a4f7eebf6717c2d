"""Long-lived state of a running service: the champion engine (hot-swapped), tenant policies, rate limits."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from pathlib import Path

from service.errors import RateLimited, Unavailable
from service.scoring.bundle import Bundle, BundleError, load_bundle
from service.scoring.engine import Engine
from service.scoring.policy import Policy, PolicyError, load_policy
from service.scoring.registry import Registry, RegistryError

log = logging.getLogger("smecredit.runtime")
DEFAULT_POLICY = Path(__file__).with_name("policies") / "default.yaml"


class Champion:
    """The champion engine. Replicas notice a new champion.json within ``check_seconds`` and load it; a bundle
    that fails verification is refused and the current engine keeps serving. Requests in flight keep the
    engine object they started with, so a swap never fails them."""

    def __init__(self, registry: Path, check_seconds: float = 1.0) -> None:
        self.registry = registry
        self.check_seconds = check_seconds
        self._engine: Engine | None = None
        self._lock = threading.Lock()
        self._checked = 0.0
        self._refused: str | None = None
        self.last_error: str | None = None

    def current_version(self) -> str | None:
        try:
            return Registry(self.registry).champion()
        except (OSError, ValueError, KeyError):  # absent, or being rewritten by another replica
            return None

    def refresh(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < self.check_seconds:
            return
        with self._lock:
            if not force and now - self._checked < self.check_seconds:
                return  # another thread checked while this one waited for the lock
            self._checked = now
            version = self.current_version()
            if version is None or (self._engine is not None and self._engine.version == version):
                return
            if version == self._refused:
                return  # verified and refused already: not again on every request
            try:
                engine = Engine(load_bundle(self.registry / version))
            except (BundleError, OSError, ValueError) as exc:
                self._refused = version
                self.last_error = f"champion {version} refused: {exc}"
                log.error(self.last_error)
                return
            self._engine, self.last_error = engine, None
            log.info("serving model %s", version)

    def get(self) -> Engine:
        self.refresh()
        engine = self._engine
        if engine is None:
            raise Unavailable(self.last_error or f"no champion model in {self.registry}; train and promote one "
                              "(smecredit train --data DIR --promote)")
        return engine

    @property
    def loaded(self) -> Engine | None:
        return self._engine


class BundleCache:
    """Verified bundles by version. Versions are content-addressed and immutable, so a bundle is loaded
    (digests checked, model parsed) once, not per request."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._bundles: dict[str, Bundle] = {}
        self._lock = threading.Lock()

    def get(self, registry: Path, version: str | None) -> Bundle:
        if version is None:
            raise RegistryError("no model version given and no champion")
        with self._lock:
            if version not in self._bundles:
                bundle = load_bundle(Registry(registry).path(version))  # path() refuses anything but a version
                if len(self._bundles) >= self.size:
                    self._bundles.pop(next(iter(self._bundles)))
                self._bundles[version] = bundle
            return self._bundles[version]


class Policies:
    """Tenant policies from ``<dir>/<name>.yaml``, the shipped default otherwise; reloaded when the file changes."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._cache: dict[Path, tuple[float, Policy]] = {}
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
        try:
            mtime = path.stat().st_mtime
        except OSError as exc:
            raise Unavailable(f"the tenant's policy file {path.name} is missing") from exc
        cached = self._cache.get(path)
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
    """Fixed one-minute windows per API key, in process: right for one replica."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._counts: dict[tuple[str, int], int] = defaultdict(int)
        self._lock = threading.Lock()

    def check(self, key_id: str) -> None:
        window = int(time.time() // 60)
        with self._lock:
            if len(self._counts) > 10_000:  # forget old windows
                self._counts = defaultdict(int, {k: v for k, v in self._counts.items() if k[1] == window})
            self._counts[(key_id, window)] += 1
            if self._counts[(key_id, window)] > self.per_minute:
                raise RateLimited(f"more than {self.per_minute} requests in a minute for this API key")


class RedisRateLimiter:
    """The same windows shared by every replica through Redis (INCR + EXPIRE, one round trip).
    If Redis is unreachable the request is let through and the failure logged: scoring stays available."""

    def __init__(self, url: str, per_minute: int) -> None:
        import redis

        self.per_minute = per_minute
        self.client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.errors = (redis.RedisError, OSError)

    def check(self, key_id: str) -> None:
        window = int(time.time() // 60)
        name = f"smecredit:rl:{key_id}:{window}"
        try:
            pipe = self.client.pipeline()
            pipe.incr(name)
            pipe.expire(name, 120)
            count = pipe.execute()[0]
        except self.errors as exc:
            log.warning("rate limiter: Redis unavailable (%s); request allowed", type(exc).__name__)
            return
        if count > self.per_minute:
            raise RateLimited(f"more than {self.per_minute} requests in a minute for this API key")
