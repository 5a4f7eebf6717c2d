"""Faults survived, with the real service process on loopback: kill -9 under load, promotion under load,
the database going away and coming back, SIGTERM with requests in flight, a tampered champion.

Every load loop is bounded in requests and seconds, and every process started here is stopped.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from service.cli import app as cli
from service.config import get_settings
from service.runtime import Champion
from service.scoring.registry import Registry
from tests.api_fixtures import PG_URL, make_api, postgres_available, running_service

runner = CliRunner()


def prepared(database_url: str, registry: Path) -> str:
    """Migrate the database, create keys; return an all-scopes key."""
    api = make_api(database_url, registry)
    api.client.app.state.engine.dispose()
    return api.keys["all"]


def post(client: httpx.Client, base: str, key: str, body: dict, timeout: float = 10) -> httpx.Response:
    return client.post(f"{base}/v1/scores", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=timeout)


def load(base: str, key: str, body: dict, *, seconds: float, workers: int = 4, max_requests: int = 400,
         stop: threading.Event | None = None) -> list[tuple[int, dict | None]]:
    """Concurrent POST /v1/scores until ``seconds`` pass, ``max_requests`` are sent or ``stop`` is set."""
    results: list[tuple[int, dict | None]] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def worker() -> None:
        with httpx.Client() as client:
            while time.monotonic() < deadline and not (stop and stop.is_set()):
                with lock:
                    if len(results) >= max_requests:
                        return
                try:
                    r = post(client, base, key, body)
                    outcome = (r.status_code, r.json() if r.headers.get("content-type", "").startswith(
                        "application/json") else None)
                except httpx.HTTPError:
                    outcome = (0, None)  # connection refused or reset: never acknowledged
                with lock:
                    results.append(outcome)

    with ThreadPoolExecutor(workers) as pool:
        for _ in range(workers):
            pool.submit(worker)
    return results


@pytest.fixture()
def registry_copy(champion_registry: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(champion_registry, tmp_path / "models"))


def test_kill_9_under_load_loses_no_acknowledged_decision(registry_copy: Path, tmp_path: Path,
                                                          example_request: dict,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path}/db.sqlite"
    key = prepared(url, registry_copy)
    acknowledged: list[str] = []
    with running_service(url, registry_copy) as (base, proc):
        stop = threading.Event()
        killer = threading.Timer(1.5, lambda: (proc.send_signal(signal.SIGKILL), stop.set()))
        killer.start()
        results = load(base, key, example_request, seconds=6, max_requests=20_000, stop=stop)
        killer.join()
        acknowledged = [body["decision_id"] for status, body in results if status == 200]
        assert proc.wait(timeout=10) == -signal.SIGKILL
    assert len(acknowledged) >= 5, "the load ran before the kill"
    with running_service(url, registry_copy) as (base, _), httpx.Client() as client:
        for decision_id in acknowledged:
            r = client.get(f"{base}/v1/decisions/{decision_id}", headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200, decision_id
    monkeypatch.setenv("SMECREDIT_DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        verified = runner.invoke(cli, ["audit", "verify"])
    finally:
        get_settings.cache_clear()
    assert verified.exit_code == 0, verified.output


def test_promotion_under_load_fails_no_request(registry_copy: Path, tmp_path: Path, example_request: dict,
                                               small_dir: Path) -> None:
    from training.config import load_config
    from training.dataset import from_folder
    from training.pipeline import train

    new = train(from_folder(small_dir), load_config(None).model_copy(update={"seed": 23}),
                Registry(registry_copy)).version
    url = f"sqlite:///{tmp_path}/db.sqlite"
    key = prepared(url, registry_copy)
    with running_service(url, registry_copy) as (base, _):
        stop = threading.Event()
        promoted: list[int] = []

        def promote() -> None:
            time.sleep(1.0)
            r = httpx.post(f"{base}/v1/models/{new}/promote", json={"reason": "promotion under load test"},
                           headers={"Authorization": f"Bearer {key}"}, timeout=10)
            promoted.append(r.status_code)
            time.sleep(1.0)  # keep the load going on the new champion for a while, however fast the machine
            stop.set()

        promoter = threading.Thread(target=promote)
        promoter.start()
        results = load(base, key, example_request, seconds=15, max_requests=20_000, stop=stop)
        promoter.join()
    assert promoted == [200]
    statuses = [s for s, _ in results]
    assert statuses and all(s == 200 for s in statuses), sorted(set(statuses))
    versions = [body["model_version"] for _, body in results]
    assert versions[-1] == new and len(set(versions)) == 2


class TcpProxy:
    """A loopback TCP proxy in front of PostgreSQL that the test can cut and restore: the database 'goes away'."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = threading.Event()
        self.up.set()
        self.conns: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up.is_set():
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self.up.clear()
        for s in self.conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.conns.clear()

    def restore(self) -> None:
        self.up.set()

    def close(self) -> None:
        self.closed = True
        self.cut()
        self.listener.close()


def test_the_database_going_away_gives_503_then_recovers(registry_copy: Path, example_request: dict) -> None:
    reason = postgres_available()
    if reason:
        pytest.skip(reason)
    import uuid

    from sqlalchemy import create_engine, text

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    proxy = TcpProxy(("127.0.0.1", 5432))
    url = f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/test?options=-csearch_path%3D{schema}" \
          "&connect_timeout=3"
    try:
        key = prepared(url, registry_copy)
        with running_service(url, registry_copy) as (base, _), httpx.Client() as client:
            assert post(client, base, key, example_request).status_code == 200
            proxy.cut()
            down = [post(client, base, key, example_request) for _ in range(3)]
            assert [r.status_code for r in down] == [503, 503, 503]
            assert all(r.json()["type"] == "unavailable" for r in down)
            ready = client.get(f"{base}/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith("unreachable")
            proxy.restore()
            deadline = time.monotonic() + 15
            while (r := post(client, base, key, example_request)).status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.5)
            assert r.status_code == 200, r.text  # recovered without a restart
    finally:
        proxy.close()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_sigterm_drains_requests_in_flight(registry_copy: Path, tmp_path: Path, example_request: dict) -> None:
    url = f"sqlite:///{tmp_path}/db.sqlite"
    key = prepared(url, registry_copy)
    batch = {"items": [example_request] * 100}  # slow enough (~1 s) to be in flight at the signal
    with running_service(url, registry_copy) as (base, proc):
        def send() -> httpx.Response:
            return httpx.post(f"{base}/v1/scores/batch", json=batch, headers={"Authorization": f"Bearer {key}"},
                              timeout=30)

        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(send) for _ in range(3)]
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            responses = [f.result() for f in futures]
        # uvicorn drains, then re-raises the signal it caught: a graceful exit reports SIGTERM, within the timeout
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert all(len(r.json()["items"]) == 100 for r in responses)


def test_a_tampered_champion_is_refused_and_the_previous_keeps_serving(registry_copy: Path,
                                                                      small_dir: Path) -> None:
    from training.config import load_config
    from training.dataset import from_folder
    from training.pipeline import train

    registry = Registry(registry_copy)
    before = registry.champion()
    champion = Champion(registry_copy, check_seconds=0)
    champion.refresh(force=True)
    assert champion.get().version == before
    new = train(from_folder(small_dir), load_config(None).model_copy(update={"seed": 31}), registry).version
    metadata = registry_copy / new / "metadata.json"
    metadata.write_text(metadata.read_text().replace('"seed": 31', '"seed": 32'))
    (registry_copy / "champion.json").write_text(json.dumps({"version": new}))  # another replica's doing
    assert champion.get().version == before
    assert champion.last_error and "metadata.json has SHA-256" in champion.last_error
