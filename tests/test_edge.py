"""The HTTP edge (service/edge.py): what an unauthenticated or slow client can make a worker hold.

Against the real server (`smecredit serve` on loopback) with raw sockets: head-size limit and memory, head and
body deadlines, the API key checked before any body is read, connection and in-flight caps, and per-address
rate limits. Each client binds its own loopback address (127.0.0.0/8 is all local), so the per-address
counters of one test never touch another's. In process: the wiring (which routes take a key, one lookup per
request), the metrics token, the 405 Allow header and the model card's headers. Every loop is bounded.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from service.config import Environment, Settings
from service.edge import API_KEY_PATHS, PAGE_PATHS
from tests.api_fixtures import Api, make_api, running_service

HEAD_TIMEOUT, BODY_TIMEOUT, MAX_HEAD = 1.0, 1.5, 8192
FAILURES, PAGES = 5, 5
_addresses = iter(range(2, 250))


def fresh_address() -> str:
    """A loopback source address no other test in this module uses."""
    return f"127.0.0.{next(_addresses)}"


def port_of(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def connect(base: str, address: str | None = None, timeout: float = 5.0) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(timeout)
    sock.bind((address or fresh_address(), 0))
    sock.connect(("127.0.0.1", port_of(base)))
    return sock


def read_response(sock: socket.socket, seconds: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one response (Content-Length framed), within ``seconds``."""
    deadline, data = time.monotonic() + seconds, b""
    while b"\r\n\r\n" not in data and time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)) and time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes (EOF or reset) within ``seconds``; whatever else arrives is discarded."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


def rss_mb(proc: subprocess.Popen) -> float:
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def away_from_a_minute_boundary() -> None:
    """Rate limits count in fixed one-minute windows: do not start a count just before one rolls over."""
    left = 60 - time.time() % 60
    if left < 3:
        time.sleep(left + 0.1)


@pytest.fixture(scope="module")
def keyed_db(champion_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str]]:
    """A SQLite database with API keys, for the served process to use."""
    url = f"sqlite:///{tmp_path_factory.mktemp('edge')}/db.sqlite"
    api = make_api(url, champion_registry)
    api.client.app.state.engine.dispose()
    return url, api.keys


@pytest.fixture(scope="module")
def edge(keyed_db: tuple[str, dict[str, str]], champion_registry: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    env = {"SMECREDIT_MAX_HEADER_BYTES": str(MAX_HEAD), "SMECREDIT_HEADER_TIMEOUT_SECONDS": str(HEAD_TIMEOUT),
           "SMECREDIT_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
           "SMECREDIT_AUTH_FAILURES_PER_MINUTE": str(FAILURES), "SMECREDIT_PAGES_PER_MINUTE": str(PAGES)}
    with running_service(keyed_db[0], champion_registry, extra_env=env) as served:
        yield served


def score_head(key: str, length: int) -> bytes:
    return (f"POST /v1/scores HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode()


class TestHeadSize:
    def test_a_head_over_the_limit_gets_431(self, edge: tuple[str, subprocess.Popen]) -> None:
        with contextlib.closing(connect(edge[0])) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * MAX_HEAD + b"\r\n\r\n")
            status, headers, body = read_response(sock)
        assert status == 431 and headers["connection"] == "close"
        assert json.loads(body)["type"] == "header_too_large"

    def test_a_head_under_the_limit_is_served(self, edge: tuple[str, subprocess.Popen]) -> None:
        with contextlib.closing(connect(edge[0])) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * (MAX_HEAD - 200) + b"\r\n\r\n")
            assert read_response(sock)[0] == 200

    def test_what_httptools_cannot_parse_gets_400_in_the_one_error_shape(self, edge: tuple[str, subprocess.Popen],
                                                                          ) -> None:
        with contextlib.closing(connect(edge[0])) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n")
            status, headers, body = read_response(sock)
        assert status == 400 and headers["content-type"] == "application/json"
        assert json.loads(body)["detail"] == "the request is not valid HTTP/1.1"

    def test_header_floods_neither_grow_memory_nor_stall_the_server(self, edge: tuple[str, subprocess.Popen],
                                                                     ) -> None:
        """Four sockets each trying to send a 32 MiB header (the reported attack: +260 MB, /healthz 2 s)."""
        base, proc = edge
        for _ in range(3):
            httpx.get(f"{base}/healthz")
        before = rss_mb(proc)
        sent = []
        for _ in range(4):
            with contextlib.closing(connect(base, timeout=5)) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: ")
                total, chunk = 0, b"a" * (1 << 20)
                with contextlib.suppress(OSError):  # reset once the server has refused and closed
                    while total < 32 << 20:
                        sock.sendall(chunk)
                        total += len(chunk)
                sent.append(total)
                assert closed_within(sock, 3)
        started = time.perf_counter()
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        latency = time.perf_counter() - started
        grown = rss_mb(proc) - before
        print(f"header flood: sent {[s >> 20 for s in sent]} MiB, RSS {before:.0f} MB -> +{grown:.1f} MB, "
              f"/healthz {latency * 1e3:.0f} ms")
        assert all(s < 32 << 20 for s in sent), "the server read a whole 32 MiB head"
        assert grown < 20 and latency < 0.5


class TestDeadlines:
    def test_an_idle_connection_is_closed_after_the_head_deadline(self, edge: tuple[str, subprocess.Popen]) -> None:
        with contextlib.closing(connect(edge[0])) as sock:
            started = time.monotonic()
            status, _, body = read_response(sock, seconds=HEAD_TIMEOUT + 3)
            assert status == 408 and json.loads(body)["type"] == "request_timeout"
            assert closed_within(sock, 2)
            assert HEAD_TIMEOUT - 0.2 < time.monotonic() - started < HEAD_TIMEOUT + 2

    def test_a_slow_head_is_cut_off_however_it_trickles(self, edge: tuple[str, subprocess.Popen]) -> None:
        with contextlib.closing(connect(edge[0])) as sock:
            started = time.monotonic()
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
            sock.settimeout(0.2)
            data = b""
            for i in range(int((HEAD_TIMEOUT + 3) / 0.2)):  # one header line every 0.2 s, each resetting nothing
                with contextlib.suppress(OSError):
                    sock.sendall(f"X-Slow-{i}: a\r\n".encode())
                try:
                    data = sock.recv(65536)
                    break
                except TimeoutError:
                    continue
            elapsed = time.monotonic() - started
            assert data.startswith(b"HTTP/1.1 408 "), data[:100]
            assert HEAD_TIMEOUT - 0.2 < elapsed < HEAD_TIMEOUT + 1.5
            assert closed_within(sock, 3)

    def test_a_stalled_body_is_cut_off(self, edge: tuple[str, subprocess.Popen],
                                       keyed_db: tuple[str, dict[str, str]]) -> None:
        """An authenticated client declaring 1,999,000 bytes, sending 100 KB and stalling."""
        with contextlib.closing(connect(edge[0])) as sock:
            sock.sendall(score_head(keyed_db[1]["score"], 1_999_000) + b"x" * 100_000)
            started = time.monotonic()
            status, headers, body = read_response(sock, seconds=BODY_TIMEOUT + 3)
            elapsed = time.monotonic() - started
            assert status == 408 and json.loads(body)["detail"] == "the request body was not received within 1.5 s"
            assert BODY_TIMEOUT - 0.3 < elapsed < BODY_TIMEOUT + 1.5 and headers["connection"] == "close"
            assert closed_within(sock, 3)

    def test_a_kept_alive_connection_gets_a_fresh_head_deadline(self, edge: tuple[str, subprocess.Popen]) -> None:
        with contextlib.closing(connect(edge[0])) as sock:
            for _ in range(3):  # three requests over 1.5 head deadlines: each head arrives in time
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
                assert read_response(sock)[0] == 200
                time.sleep(HEAD_TIMEOUT / 2)


class TestAuthenticationBeforeTheBody:
    @pytest.mark.parametrize("authorization", ["Bearer sk_bad_bad", None])
    def test_a_bad_key_gets_401_without_sending_the_body(self, edge: tuple[str, subprocess.Popen],
                                                         authorization: str | None) -> None:
        head = "POST /v1/scores HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 1999000\r\n"
        if authorization:
            head += f"Authorization: {authorization}\r\n"
        with contextlib.closing(connect(edge[0])) as sock:
            started = time.monotonic()
            sock.sendall(head.encode() + b"\r\n")  # the head only: the answer must not wait for the body
            status, headers, body = read_response(sock, seconds=3)
            assert status == 401 and time.monotonic() - started < 1
            assert headers["connection"] == "close" and headers["www-authenticate"] == "Bearer"
            assert json.loads(body)["type"] == "unauthorized"
            assert closed_within(sock, 2)

    def test_many_unauthenticated_large_bodies_hold_no_memory(self, edge: tuple[str, subprocess.Popen]) -> None:
        """The reported attack: 150 sockets declare 1,999,000 bytes, send 1.9 MB and stall."""
        base, proc = edge
        before = rss_mb(proc)
        address = fresh_address()  # their failures count against one address; its limit answers 429 instead
        socks = [connect(base, address) for _ in range(150)]
        try:
            head = b"POST /v1/scores HTTP/1.1\r\nHost: t\r\nContent-Length: 1999000\r\n\r\n"
            for sock in socks:
                sock.setblocking(False)
                with contextlib.suppress(OSError):  # as much of 1.9 MB as the socket takes without blocking
                    sock.send(head + b"x" * 1_900_000)
            time.sleep(1)
            grown = rss_mb(proc) - before
            statuses = []
            for sock in socks:
                sock.setblocking(True)
                sock.settimeout(3)
                with contextlib.suppress(OSError):
                    statuses.append(read_response(sock, seconds=3)[0])
        finally:
            for sock in socks:
                sock.close()
        print(f"150 stalled unauthenticated bodies: RSS {before:.0f} MB -> +{grown:.1f} MB, {statuses.count(401)} "
              f"x 401, {statuses.count(429)} x 429, {statuses.count(503)} x 503")
        # 503: beyond the 100 requests in flight (those waiting for the thread pool's 40 lookups count)
        assert set(statuses) <= {401, 429, 503} and statuses.count(401) == FAILURES and len(statuses) > 100
        assert grown < 30


class TestRateLimits:
    def test_failed_authentication_is_limited_per_address(self, edge: tuple[str, subprocess.Popen],
                                                          keyed_db: tuple[str, dict[str, str]]) -> None:
        base, keys = edge[0], keyed_db[1]
        away_from_a_minute_boundary()
        address = fresh_address()
        with httpx.Client(base_url=base, transport=httpx.HTTPTransport(local_address=address)) as client:
            bad = [client.get("/v1/models", headers={"Authorization": f"Bearer sk_x{i}_bad"}) for i in range(8)]
            good = client.get("/v1/models", headers={"Authorization": f"Bearer {keys['score']}"})
        assert [r.status_code for r in bad] == [401] * FAILURES + [429] * (8 - FAILURES)
        assert bad[-1].headers["Retry-After"] == "60" and bad[-1].json()["type"] == "rate_limited"
        assert good.status_code == 429  # the address is refused before any lookup, so keys cannot be guessed
        with httpx.Client(base_url=base, transport=httpx.HTTPTransport(local_address=fresh_address())) as client:
            assert client.get("/v1/models", headers={"Authorization": f"Bearer {keys['score']}"}).status_code == 200

    def test_explanation_pages_are_limited_per_address(self, edge: tuple[str, subprocess.Popen]) -> None:
        away_from_a_minute_boundary()
        with httpx.Client(base_url=edge[0], transport=httpx.HTTPTransport(local_address=fresh_address())) as client:
            codes = [client.get(f"/v1/explanations/tok-{i}").status_code for i in range(PAGES)]
            refused = client.post("/v1/explanations/tok-x/review", data={"note": "x"})
        assert codes == [404] * PAGES
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "60"
        assert refused.json()["detail"] == f"more than {PAGES} page requests in a minute from this address"


class TestCapacity:
    def test_beyond_the_in_flight_and_connection_caps_503_with_retry_after(
            self, keyed_db: tuple[str, dict[str, str]], champion_registry: Path) -> None:
        env = {"SMECREDIT_MAX_IN_FLIGHT": "2", "SMECREDIT_MAX_CONNECTIONS": "6",
               "SMECREDIT_HEADER_TIMEOUT_SECONDS": "5", "SMECREDIT_BODY_TIMEOUT_SECONDS": "5"}
        with running_service(keyed_db[0], champion_registry, extra_env=env) as (base, _):
            address = fresh_address()
            stalled = [connect(base, address) for _ in range(2)]
            try:
                for sock in stalled:  # two requests in flight: authenticated, their bodies awaited
                    sock.sendall(score_head(keyed_db[1]["score"], 1000) + b"{")
                time.sleep(0.5)
                with contextlib.closing(connect(base, address)) as sock:
                    sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n")
                    status, headers, body = read_response(sock)
                assert status == 503 and headers["retry-after"] == "5"
                assert json.loads(body)["detail"] == "this worker has 2 requests in flight; retry later"
                with contextlib.closing(connect(base, address)) as sock:  # liveness is not capped
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
                    assert read_response(sock)[0] == 200
            finally:
                for sock in stalled:
                    sock.close()
            time.sleep(1.5)  # the refused connections linger a second
            idle = [connect(base, address) for _ in range(6)]
            try:
                time.sleep(0.5)
                with contextlib.closing(connect(base, address)) as sock:
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
                    status, headers, body = read_response(sock)
                assert status == 503 and headers["retry-after"] == "5" and headers["connection"] == "close"
                assert json.loads(body)["detail"] == "this worker has 6 connections open; retry later"
            finally:
                for sock in idle:
                    sock.close()
            time.sleep(0.5)
            assert httpx.get(f"{base}/healthz").status_code == 200  # and served again once they are gone


# --- in process -----------------------------------------------------------------------------------------------


def key_operations(app) -> dict[str, bool]:  # noqa: ANN001
    """Each operation and whether it takes an API key: get_caller's bearer dependency declares the security."""
    return {f"{method.upper()} {path}": "security" in op
            for path, ops in app.openapi()["paths"].items() for method, op in ops.items()}


@pytest.fixture()
def edge_api(champion_registry: Path, tmp_path: Path) -> Iterator[Api]:
    api = make_api(f"sqlite:///{tmp_path}/db.sqlite", champion_registry, metrics_token="m" * 24)
    with api.client:
        yield api
    api.client.app.state.engine.dispose()


class TestWiring:
    def test_the_middleware_checks_keys_on_exactly_the_routes_that_take_one(self, edge_api: Api) -> None:
        operations = key_operations(edge_api.client.app)
        assert sum(operations.values()) >= 10
        for operation, takes_key in operations.items():
            path = operation.split(" ", 1)[1]
            assert takes_key == (path.startswith(API_KEY_PATHS) and not path.startswith(PAGE_PATHS)), operation

    def test_the_key_is_looked_up_once_per_request(self, edge_api: Api, example_request: dict,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
        from service.db import repo

        calls = []
        real = repo.authenticate
        monkeypatch.setattr(repo, "authenticate", lambda session, *, key: calls.append(key) or real(session, key=key))
        assert edge_api.score(example_request, who="score").status_code == 200
        assert len(calls) == 1  # once for the request, by the middleware, not again by the handler
        assert edge_api.client.get("/v1/models", headers=edge_api.headers("score")).status_code == 200
        assert len(calls) == 1  # then from the process's cache (SMECREDIT_KEY_CACHE_SECONDS)
        edge_api.client.app.state.callers.drop(edge_api.keys["score"].split("_")[1])
        assert edge_api.client.get("/v1/models", headers=edge_api.headers("score")).status_code == 200
        assert len(calls) == 2  # dropped (a revocation): looked up again

    def test_oversized_bodies_are_refused_and_the_connection_closed(self, edge_api: Api) -> None:
        limit = edge_api.settings.max_body_bytes
        big = b"x" * (limit + 1)
        declared = edge_api.client.post("/v1/scores", content=big, headers=edge_api.headers(**{
            "Content-Type": "application/json"}))
        streamed = edge_api.client.post("/v1/scores", content=iter([big[:limit], big[limit:]]),
                                        headers=edge_api.headers(**{"Content-Type": "application/json"}))
        for r in (declared, streamed):
            assert r.status_code == 413 and r.json()["type"] == "payload_too_large"
            assert r.headers["connection"] == "close"
            assert r.json()["detail"] == f"the body must be at most {limit} bytes"

    def test_405_names_the_allowed_methods(self, edge_api: Api) -> None:
        r = edge_api.client.post("/healthz")
        assert r.status_code == 405 and r.headers["allow"] == "GET" and r.json()["type"] == "http_error"

    def test_rate_limits_for_failed_authentication_are_shared_through_redis(self, champion_registry: Path,
                                                                              tmp_path: Path) -> None:
        import redis

        try:
            redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping()
        except (redis.RedisError, OSError) as exc:
            pytest.skip(f"Redis not reachable at 127.0.0.1:6379 ({type(exc).__name__})")
        away_from_a_minute_boundary()
        db = f"sqlite:///{tmp_path}/db.sqlite"
        address = (f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}", 50000)
        replicas = [make_api(db, champion_registry, redis_url="redis://127.0.0.1:6379/0", auth_failures_per_minute=3)
                    for _ in range(2)]
        clients = [TestClient(r.client.app, client=address) for r in replicas]
        bad = {"Authorization": "Bearer sk_nope_nope"}
        codes = [clients[i % 2].get("/v1/models", headers=bad).status_code for i in range(5)]
        assert codes == [401, 401, 401, 429, 429]


    def test_a_redis_outage_is_not_paid_on_every_request(self, champion_registry: Path, tmp_path: Path) -> None:
        api = make_api(f"sqlite:///{tmp_path}/db.sqlite", champion_registry, redis_url="redis://127.0.0.1:1/0")
        limiter = api.client.app.state.rate_limiter
        assert limiter.hit("key:x") == 0 and limiter._down_until > 0  # refused: allowed, and Redis left alone
        limiter.client = None  # any further attempt within retry_seconds would fail loudly
        with api.client:
            assert api.client.get("/v1/models", headers=api.headers("score")).status_code == 200


class TestOperatorEndpoints:
    def test_metrics_need_the_token_when_one_is_set(self, edge_api: Api) -> None:
        token = {"Authorization": "Bearer " + "m" * 24}
        missing = edge_api.client.get("/metrics")
        wrong = edge_api.client.get("/metrics", headers={"Authorization": "Bearer wrong"})
        assert missing.status_code == wrong.status_code == 401 and wrong.json()["type"] == "unauthorized"
        assert "smecredit_requests_total" in edge_api.client.get("/metrics", headers=token).text

    def test_readyz_details_only_with_the_token(self, edge_api: Api) -> None:
        plain = edge_api.client.get("/readyz")
        assert plain.status_code == 200 and plain.json() == {"status": "ready"}
        full = edge_api.client.get("/readyz", headers={"Authorization": "Bearer " + "m" * 24}).json()
        assert full["checks"]["database"] == "ok" and full["checks"]["model"].startswith("ok: ")
        assert edge_api.client.get("/readyz", headers={"Authorization": "Bearer wrong"}).status_code == 401

    def test_without_a_token_both_stay_open(self, api: Api) -> None:
        assert api.client.get("/metrics").status_code == 200 and "checks" in api.client.get("/readyz").json()

    def test_production_refuses_to_start_without_a_metrics_token(self) -> None:
        from service.crypto import Keyring

        safe = {"environment": Environment.production, "database_url": "postgresql://db/prod",
                "pseudonym_key": "x" * 32, "data_keys": f"k1:{Keyring.new_key()}", "docs_enabled": False,
                "public_base_url": "https://credit.example.cn"}
        with pytest.raises(ValueError, match="SMECREDIT_METRICS_TOKEN must be set"):
            Settings(**safe)
        assert Settings(**safe, metrics_token="t" * 32).metrics_token is not None


class TestModelCard:
    def test_the_card_is_self_contained_and_sent_with_a_strict_policy(self, edge_api: Api) -> None:
        from service.scoring.registry import Registry

        version = Registry(edge_api.settings.registry).champion()
        r = edge_api.client.get(f"/v1/models/{version}/card", headers=edge_api.headers("score"))
        assert r.status_code == 200 and r.headers["x-content-type-options"] == "nosniff"
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "style-src 'unsafe-inline'" in csp and "script" not in csp
        html = r.text.lower()
        # What the policy allows is all the card uses: inline <style> and style attributes, inline SVG; no
        # script, no image, font or stylesheet to fetch (SVG's url(#id) and href="#id" are same-document).
        assert "<style" in html and "<svg" in html
        for fetches in ("<script", "<img", "<link", "src=", "@import", "url(http", 'href="http', "data:"):
            assert fetches not in html, fetches
