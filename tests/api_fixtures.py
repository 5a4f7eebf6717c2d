"""Fixtures for API tests: a trained champion, a real database (SQLite file or PostgreSQL), keys per scope."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from service.batch.requests import request_for
from service.config import Environment, Settings
from service.db import repo
from service.main import create_app, start
from service.scoring.graph import publish_graph
from service.scoring.raw import load_folder
from service.scoring.registry import Registry
from training.config import load_config
from training.dataset import from_folder
from training.pipeline import train

PG_URL = os.environ.get("SMECREDIT_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def postgres_available() -> str | None:
    """None when reachable, else why not."""
    try:
        with create_engine(PG_URL, connect_args={"connect_timeout": 3}).connect() as conn:
            conn.execute(text("SELECT 1"))
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means: skip, and say why
        return f"PostgreSQL not reachable at {PG_URL} ({type(exc).__name__}); PostgreSQL API tests skipped"


@pytest.fixture(scope="session")
def champion_registry(small_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with a champion trained on the small synthetic data set."""
    root = tmp_path_factory.mktemp("served-models")
    registry = Registry(root)
    result = train(from_folder(small_dir), load_config(None), registry)
    registry.promote(result.version, by="tests", reason="champion for API tests")
    return root


@pytest.fixture(scope="session")
def linked_registry(linked_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A champion trained on linked firms, with their graph published as make run does (the service matches
    online applicants against it)."""
    root = tmp_path_factory.mktemp("linked-models")
    registry = Registry(root)
    result = train(from_folder(linked_dir), load_config(None), registry)
    registry.promote(result.version, by="tests", reason="champion for the graph tests")
    publish_graph(load_folder(linked_dir).graph, root)
    return root


@pytest.fixture(scope="session")
def example_request(small_dir: Path) -> dict:
    return request_for(load_folder(small_dir))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/smecredit.db"
        return
    reason = postgres_available()
    if reason:
        pytest.skip(reason)
    schema = f"t_{uuid.uuid4().hex[:12]}"  # a fresh schema per test: real database, no cross-test leftovers
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


# The per-address limits (service/edge.py) off, as the per-key one is below: tests that exercise them set them.
UNLIMITED_ADDRESSES = {"auth_failures_per_minute": 1_000_000, "pages_per_minute": 1_000_000}


@dataclass
class Api:
    client: TestClient
    keys: dict[str, str]  # "score", "review", "admin", "all", "other" (another tenant, all scopes)
    settings: Settings

    def headers(self, who: str = "all", **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}", **extra}

    def score(self, body: dict, who: str = "all", **headers: str):  # noqa: ANN201
        return self.client.post("/v1/scores", json=body, headers=self.headers(who, **headers))


def make_api(database_url: str, registry: Path, **overrides: object) -> Api:
    overrides = {**UNLIMITED_ADDRESSES, **overrides}  # every test client shares one address
    settings = Settings(environment=Environment.test, database_url=database_url, registry=registry,
                        model_check_seconds=0.0, **overrides)
    app = create_app(settings)
    start(app)  # the schema, before the keys are written (the client's lifespan finds it done)
    keys = {}
    with app.state.sessions.begin() as session:
        lender = repo.get_or_create_tenant(session, name="lender-a")
        for scope in ("score", "review", "admin", "platform"):
            keys[scope] = repo.create_api_key(session, tenant=lender, scopes=[scope])
        keys["all"] = repo.create_api_key(session, tenant=lender, scopes=["score", "review", "admin", "platform"])
        other = repo.get_or_create_tenant(session, name="lender-b")
        keys["other"] = repo.create_api_key(session, tenant=other, scopes=["score", "review", "admin"])
    return Api(client=TestClient(app), keys=keys, settings=settings)


@pytest.fixture()
def api(database_url: str, champion_registry: Path) -> Iterator[Api]:
    a = make_api(database_url, champion_registry)
    with a.client:
        yield a
    a.client.app.state.engine.dispose()


@contextlib.contextmanager
def running_service(database_url: str, registry: Path, *, port: int | None = None,
                    extra_env: dict[str, str] | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """`smecredit serve` as a real process on loopback; yields its base URL and the process; always stopped."""
    port = port or free_port()
    env = {**os.environ, "SMECREDIT_DATABASE_URL": database_url, "SMECREDIT_REGISTRY": str(registry),
           "SMECREDIT_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", "SMECREDIT_ENVIRONMENT": "test",
           "SMECREDIT_RATE_LIMIT_PER_MINUTE": "1000000",
           **{f"SMECREDIT_{name.upper()}": str(value) for name, value in UNLIMITED_ADDRESSES.items()},
           **(extra_env or {})}
    smecredit = str(Path(sys.executable).with_name("smecredit"))
    proc = subprocess.Popen([smecredit, "serve", "--host", "127.0.0.1", "--port", str(port)], env=env,  # noqa: S603
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=15)


def wait_ready(base: str, proc: subprocess.Popen, seconds: float = 30) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the service at {base} was not ready within {seconds} s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def error_of(response) -> dict:  # noqa: ANN001
    """The one error shape, checked, as a dict."""
    body = response.json()
    assert set(body) == {"type", "title", "status", "detail", "errors", "request_id"}, body
    assert body["status"] == response.status_code
    assert body["request_id"] == response.headers["x-request-id"]  # the operator can find the request's lines
    return body


def body_with(example: dict, **paths: object) -> dict:
    """A deep copy of ``example`` with dotted paths replaced, e.g. body_with(ex, **{"application.term_months": 0})."""
    body = copy.deepcopy(example)
    for path, value in paths.items():
        node = body
        *parents, last = path.split(".")
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        if last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value
    return body


def dumps(body: dict) -> bytes:
    return json.dumps(body).encode()
