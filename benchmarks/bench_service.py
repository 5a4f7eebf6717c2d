"""Scoring-service benchmark: POST /v1/scores in-process and over HTTP under load, beside a bare FastAPI endpoint.

    .venv/bin/python benchmarks/bench_service.py [--duration 10] [--connections 1 8 32] [--workers 1 2]
                                                 [--databases sqlite postgresql]

One run prepares, as `make run` does, a champion, the firms' graph and the fraud model in a temp folder, and the
request bodies of --applicants applications of the data's last 12 months (different firms and decisions, as a
lender's traffic; one firm repeated would pile up its velocity counts and trip the fraud checks). It measures
three ways: sequential calls in-process (the ASGI app called directly, one event loop, no network, the bodies
in turn), the pieces of one score without HTTP (openapi/examples/score_request.json), and `wrk` on loopback
against `smecredit serve` cycling through the bodies, for every combination of database (SQLite, and PostgreSQL
when one answers at --postgres), workers and connections, beside the same service without the graph, the
fraud model and the fraud checks. The baseline is a bare FastAPI app with one endpoint that parses the same
JSON into a dict, served by uvicorn with the same workers and measured with the same connections in the same
run, so the difference is what scoring (features, LightGBM, TreeSHAP, policy, the durable decision write)
costs. Every acknowledged decision is committed (SQLite: synchronous=FULL; PostgreSQL: synchronous_commit as
the server has it). Needs `wrk` (apt-get install wrk). Prints markdown for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import describe  # noqa: E402 - a sibling module (benchmarks/ is the script's directory)

from service.api.schemas import ScoreRequest  # noqa: E402
from service.batch.requests import request_for  # noqa: E402
from service.config import Settings  # noqa: E402
from service.db import repo, velocity  # noqa: E402
from service.db.tables import utcnow  # noqa: E402
from service.main import create_app  # noqa: E402
from service.pseudonyms import input_digest, tenant_key  # noqa: E402
from service.runtime import DEFAULT_POLICY  # noqa: E402
from service.scoring.features import build_features  # noqa: E402
from service.scoring.raw import MONTHLY_SOURCES, consented_related, load_folder, raw_for_applicant  # noqa: E402
from service.usecases import scoring  # noqa: E402

BIN = Path(sys.executable).parent  # the virtualenv's scripts: smecredit, uvicorn
BODY = ROOT / "openapi" / "examples" / "score_request.json"
NO_RATE_LIMIT = "100000000"  # per minute: the limiter must not be what a load test measures

# The baseline: the same framework and body parsing into a dict, and nothing else.
BARE_APP = '''\
from fastapi import FastAPI

app = FastAPI()


@app.post("/v1/scores")
async def score(body: dict) -> dict:
    return {"ok": True, "fields": len(body)}


@app.get("/readyz")
def readyz() -> dict:
    return {"status": "ready"}
'''

# Each wrk thread cycles through the applicants' bodies (one JSON per line), from its own starting point.
WRK_SCRIPT = '''\
bodies = {{}}
for line in io.lines("{bodies}") do bodies[#bodies + 1] = line end
local threads = 0
function setup(thread) threads = threads + 1; thread:set("offset", threads * 7919) end
function init(args) i = offset end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
function request()
  i = i + 1
  return wrk.format(nil, nil, nil, bodies[i % #bodies + 1])
end
'''


@dataclass
class Row:
    path: str
    mode: str
    p50_ms: float
    p99_ms: float
    rps: float
    note: str = ""

    def markdown(self) -> str:
        return (f"| {self.path} | {self.mode} | {self.p50_ms:.2f} ms | {self.p99_ms:.2f} ms | {self.rps:,.0f} |"
                f" {self.note} |")


# --- setup -----------------------------------------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([str(BIN / "smecredit"), *args], check=True, capture_output=True, text=True,  # noqa: S603
                          env=env, cwd=ROOT)
    return done.stdout


WITHOUT_GRAPH = "without-graph"  # the registry and policy of the baseline: no graph, no fraud model, no fraud checks


def prepare(workdir: Path, applicants: int) -> tuple[Path, list[bytes]]:
    """Synthetic data (reused); as `make run` serves them, a freshly trained champion, the firms' graph and the
    fraud model (the registry); a copy of it without the graph and fraud model, with a policy without the fraud
    checks (the baseline); and the request bodies of ``applicants`` applications of the last 12 months."""
    data, registry = workdir / "synth-20000-linked", workdir / "registry"
    if not (data / "profile.parquet").exists():
        run_cli("synth", "--entities", "20000", "--months", "36", "--seed", "7", "--out", str(data))
    for old in (registry, workdir / WITHOUT_GRAPH):  # train with today's code, not a bundle left by an older run
        shutil.rmtree(old, ignore_errors=True)
    run_cli("train", "--data", str(data), "--registry", str(registry), "--promote")
    shutil.copytree(registry, workdir / WITHOUT_GRAPH / "registry")
    run_cli("graph", "build", "--data", str(data), "--registry", str(registry))
    run_cli("fraud", "train", "--data", str(data), "--registry", str(registry))
    policy = yaml.safe_load(DEFAULT_POLICY.read_text(encoding="utf-8"))
    policy.pop("fraud_checks")
    (workdir / WITHOUT_GRAPH / "policies").mkdir()
    (workdir / WITHOUT_GRAPH / "policies" / f"{WITHOUT_GRAPH}.yaml").write_text(
        yaml.safe_dump({**policy, "version": f"{policy['version']}-{WITHOUT_GRAPH}"}), encoding="utf-8")
    return registry, applicant_bodies(data, applicants)


def applicant_bodies(data: Path, n: int) -> list[bytes]:
    """Request bodies of ``n`` applications of the folder's last 12 months (seeded): different firms and
    decisions, as a lender's traffic, not one firm repeated (whose velocity counts would pile up)."""
    raw = load_folder(data)
    dates = raw.applications["application_date"]
    recent = np.flatnonzero(dates >= dates.max() - np.timedelta64(365, "D"))
    chosen = np.random.default_rng(7).choice(recent, size=min(n, recent.size), replace=False)
    return [orjson.dumps(request_for(raw, str(raw.applications["application_id"][i]))) for i in sorted(chosen)]


def fresh_database(kind: str, workdir: Path, postgres: str) -> str | None:
    """An empty database of ``kind``: its size must not grow run over run. None when PostgreSQL does not answer."""
    if kind == "sqlite":
        for leftover in workdir.glob("smecredit.db*"):
            leftover.unlink()
        return f"sqlite:///{workdir / 'smecredit.db'}"
    from sqlalchemy import create_engine, text

    schema = "smecredit_bench"
    try:
        admin = create_engine(postgres, connect_args={"connect_timeout": 3})
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        admin.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure: measure SQLite only, and say why
        print(f"PostgreSQL at {postgres} not measured: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None
    return f"{postgres}?options=-csearch_path%3D{schema}"


def new_key(db_url: str, registry: Path, policies: Path | None = None) -> str:
    """A key of tenant "bench", whose policy is the one in ``policies`` (None: the shipped default)."""
    policy = ["--policy", WITHOUT_GRAPH] if policies else []
    return run_cli("keys", "create", "--tenant", "bench", "--scopes", "score", *policy,
                   env=service_env(db_url, registry, policies)).strip().splitlines()[-1]


def service_env(db_url: str, registry: Path, policies: Path | None = None) -> dict[str, str]:
    return {**os.environ, "SMECREDIT_DATABASE_URL": db_url, "SMECREDIT_REGISTRY": str(registry),
            "SMECREDIT_RATE_LIMIT_PER_MINUTE": NO_RATE_LIMIT,
            **({"SMECREDIT_POLICIES_DIR": str(policies)} if policies else {})}


# --- in-process ------------------------------------------------------------------------------------------------


def percentiles_ms(seconds: list[float]) -> tuple[float, float]:
    a = np.array(seconds) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def time_calls(call: Callable[[], object], n: int, warmup: int) -> tuple[float, float, float]:
    """(p50 ms, p99 ms, calls per second) of ``n`` sequential calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
    p50, p99 = percentiles_ms(samples)
    return p50, p99, n / sum(samples)


async def time_async(call: Callable[[], Awaitable[object]], n: int, warmup: int) -> tuple[float, float, float]:
    for _ in range(warmup):
        await call()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - t0)
    p50, p99 = percentiles_ms(samples)
    return p50, p99, n / sum(samples)


async def asgi_calls(app: FastAPI, bodies: list[bytes], headers: dict[str, str], n: int,
                     warmup: int) -> tuple[float, ...]:
    """Sequential requests through the whole ASGI app (middleware, validation, handler, response), called
    directly in one event loop: no sockets, no test-client threads; the bodies in turn."""
    import httpx

    transport = httpx.ASGITransport(app=app)
    turn = itertools.cycle(bodies)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        async def call() -> None:
            response = await client.post("/v1/scores", content=next(turn), headers=headers)
            if response.status_code != 200:
                raise RuntimeError(f"POST /v1/scores -> {response.status_code}: {response.text[:300]}")
        return await time_async(call, n, warmup)


def bare_app() -> FastAPI:
    namespace: dict = {}
    exec(BARE_APP, namespace)  # noqa: S102 - our own constant, the same source the HTTP baseline serves
    return namespace["app"]


def bench_in_process(settings: Settings, key: str, bodies: list[bytes], n: int,
                     warmup: int) -> tuple[list[Row], list[str]]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    app = create_app(settings)
    rows = []
    with TestClient(app):  # runs the app's lifespan
        rows.append(Row("`POST /v1/scores`", "in-process (ASGI), sequential",
                        *asyncio.run(asgi_calls(app, bodies, headers, n, warmup)),
                        "each decision committed before the response"))
        pieces = bench_pieces(app, key, json.loads(BODY.read_bytes()), n, warmup)
    app.state.engine.dispose()
    rows.append(Row("baseline: bare FastAPI", "in-process (ASGI), sequential",
                    *asyncio.run(asgi_calls(bare_app(), bodies, headers, n, warmup))))
    return rows, pieces


def bench_pieces(app: FastAPI, key: str, payload: dict, n: int, warmup: int) -> list[str]:
    """Where one score's time goes without HTTP: the handler's steps, the last ones cumulative."""
    state = app.state
    engine, policy = state.champion.get(), state.policies.for_tenant(None)
    req = ScoreRequest.model_validate(payload)
    allowed = [s for s in MONTHLY_SOURCES if getattr(req.consent, s)]
    dumped = req.payload()  # as the API hands it to the use case
    application = {**dumped["application"], "enterprise_id": req.profile.enterprise_id}

    def raw():  # noqa: ANN202 - as the use case builds it: with the related block when links are consented
        return raw_for_applicant(dumped["profile"], application, {s: dumped["data"][s] for s in allowed},
                                 consented_related(dumped))

    links = dumped["consent"].get("links") is True and dumped.get("related") is not None
    one, sources = raw(), allowed + ["links"] * links
    one.graph = engine.graph  # as engine.score gives it the lender's graph
    with state.read_sessions() as session:
        tenant_id = repo.authenticate(session, key=key)[0].id
    tkey = tenant_key(state.settings, tenant_id)
    keys = [velocity.keys_of(tkey, dumped)]

    def velocity_counts() -> None:
        with state.read_sessions() as session:
            velocity.read(session, tenant_id=tenant_id, applications=keys, windows=policy.velocity_windows,
                          now=utcnow())

    def authenticate() -> None:
        with state.read_sessions() as session:  # as the API does on a cache miss: a read-only session
            repo.authenticate(session, key=key)

    def prepare_records() -> None:
        scoring._prepare(state.recorder, tkey, engine, policy, tenant_id, "bench", [dumped],  # noqa: SLF001
                         [input_digest(tkey, dumped)], None)

    def decide_and_commit() -> None:
        asyncio.run(scoring.decide(state.recorder, engine=engine, policy=policy, tenant_id=tenant_id, actor="bench",
                                   payloads=[dumped]))

    steps = [("authenticate the key, cache miss (`repo.authenticate`)", authenticate),
             ("authenticate the key, cached (`CallerCache.get`)", lambda: state.callers.get(key)),
             ("validate the body (`ScoreRequest.model_validate`)", lambda: ScoreRequest.model_validate(payload)),
             ("request to `RawData` (`raw_for_applicant`)", raw),
             (f"{len(engine.names)} features (`build_features`)",
              lambda: build_features(one, allowed_sources=sources)),
             ("velocity counts of the firm and its links (`velocity.read`)", velocity_counts),
             ("features + LightGBM + fraud score + TreeSHAP + policy (`engine.score`)",
              lambda: engine.score(one, policy, allowed_sources=sources)),
             ("all of that + digests, encryption, the rows (`scoring._prepare`)", prepare_records),
             ("all of that + the group commit, alone (`scoring.decide`)", decide_and_commit)]
    lines = ["| piece (one applicant, no HTTP) | p50 | p99 |", "|---|---|---|"]
    for name, call in steps:
        p50, p99, _ = time_calls(call, n, warmup)
        lines.append(f"| {name} | {p50:.3f} ms | {p99:.3f} ms |")
    return lines


# --- over HTTP -------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own loopback URL
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s")


@contextmanager
def server(argv: list[str], port: int, log: Path, env: dict[str, str] | None = None,
           cwd: Path | None = None) -> Iterator[str]:
    """Run a server in its own process group; always stop the whole group (uvicorn's workers too)."""
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,  # noqa: S603
                                start_new_session=True)
        try:
            wait_ready(f"http://127.0.0.1:{port}/readyz", proc)
            yield f"http://127.0.0.1:{port}"
        finally:
            stop(proc)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=40)  # uvicorn drains for up to 30 s (timeout_graceful_shutdown)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    try:  # workers left behind by a dead parent are still in the group
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_wrk(text: str) -> dict[str, float]:
    def latency(pct: str) -> float:
        value, unit = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M).groups()
        return float(value) * UNIT_MS[unit]

    def count(pattern: str) -> int:
        found = re.search(pattern, text)
        return sum(int(g) for g in found.groups()) if found else 0

    return {"p50": latency("50"), "p99": latency("99"),
            "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
            "requests": count(r"(\d+) requests in"),
            "non_2xx": count(r"Non-2xx or 3xx responses: (\d+)"),
            "socket_errors": count(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")}


def run_wrk(url: str, script: Path, duration: int, connections: int) -> tuple[dict[str, float], str]:
    threads = str(min(2, connections))
    argv = ["wrk", "-t", threads, "-c", str(connections), "-d", f"{duration}s", "--timeout", "10s", "--latency",
            "-s", str(script), f"{url}/v1/scores"]
    done = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=duration + 60)  # noqa: S603, S607
    return parse_wrk(done.stdout), shlex.join(argv)


def load_rows(name: str, url: str, args: argparse.Namespace, workers: int, script: Path,
              database: str) -> tuple[list[Row], str]:
    rows, command = [], ""
    for connections in args.connections:
        run_wrk(url, script, args.warmup_seconds, connections)  # no JIT, but caches, pools and pages warm up
        result, command = run_wrk(url, script, args.duration, connections)
        problems = f"{result['non_2xx']:.0f} non-2xx, {result['socket_errors']:.0f} socket errors"
        rows.append(Row(name, f"HTTP, {database}, {workers} worker{'s' * (workers > 1)}, {connections} conn.",
                        result["p50"], result["p99"], result["rps"], f"{result['requests']:,.0f} requests; {problems}"))
    return rows, command


def bench_http(args: argparse.Namespace, registry: Path, databases: dict[str, str],
               bodies: list[bytes]) -> tuple[list[Row], str]:
    """Per worker count: the bare endpoint, then on each database the service as `make run` serves it and the
    same without the graph, the fraud model and the fraud checks, each at every connection count."""
    lines = args.workdir / "bodies.jsonl"
    lines.write_bytes(b"\n".join(bodies) + b"\n")
    (args.workdir / "bare_app.py").write_text(BARE_APP)
    baseline = args.workdir / WITHOUT_GRAPH
    services = [("`POST /v1/scores`", registry, None),
                ("`POST /v1/scores` without the graph, fraud model and fraud checks", baseline / "registry",
                 baseline / "policies")]
    rows, command = [], ""
    for workers in args.workers:
        port = free_port()
        script = args.workdir / "bare.lua"
        script.write_text(WRK_SCRIPT.format(bodies=lines, key="none"))
        # uvicorn as `smecredit serve` runs it (httptools, uvloop), log level info, so access logs too.
        argv = [str(BIN / "uvicorn"), "bare_app:app", "--host", "127.0.0.1", "--port", str(port), "--workers",
                str(workers), "--log-level", "info", "--http", "httptools"]
        with server(argv, port, args.workdir / f"bare-{workers}.log", cwd=args.workdir) as url:
            bare, _ = load_rows("baseline: bare FastAPI", url, args, workers, script, "no database")
        rows += bare
        for (database, db_url), (name, served_registry, policies) in itertools.product(databases.items(), services):
            url_db = fresh_database(database, args.workdir, args.postgres) or db_url
            key = new_key(url_db, served_registry, policies)
            script = args.workdir / f"{database}.lua"
            script.write_text(WRK_SCRIPT.format(bodies=lines, key=key))
            port = free_port()
            argv = [str(BIN / "smecredit"), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers",
                    str(workers)]
            with server(argv, port, args.workdir / f"service-{database}-{workers}.log",
                        env=service_env(url_db, served_registry, policies), cwd=ROOT) as url:
                served, command = load_rows(name, url, args, workers, script, database)
            rows += served
    return rows, command


# --- report ----------------------------------------------------------------------------------------------------


def machine() -> str:
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split(" [")[0]  # noqa: S603, S607
    import fastapi
    import uvicorn
    return describe(f"FastAPI {fastapi.__version__}", f"uvicorn {uvicorn.__version__}", wrk.strip())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10, help="seconds of wrk load per measurement")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 8, 32], help="concurrent wrk connections")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to serve with")
    parser.add_argument("--databases", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    parser.add_argument("--postgres", default=os.environ.get("SMECREDIT_BENCH_POSTGRES",
                                                              "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--applicants", type=int, default=2000, help="applications whose bodies the load cycles")
    parser.add_argument("--calls", type=int, default=1000, help="sequential in-process calls per path")
    parser.add_argument("--warmup", type=int, default=100, help="untimed in-process calls first")
    parser.add_argument("--warmup-seconds", type=int, default=3, help="untimed wrk load before each measurement")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "smecredit-bench-service")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install -y wrk")
    args.workdir.mkdir(parents=True, exist_ok=True)
    registry, bodies = prepare(args.workdir, args.applicants)
    databases = {d: url for d in args.databases if (url := fresh_database(d, args.workdir, args.postgres))}
    sqlite = fresh_database("sqlite", args.workdir, args.postgres)
    settings = Settings(database_url=sqlite, registry=registry, rate_limit_per_minute=int(NO_RATE_LIMIT))
    in_process, pieces = bench_in_process(settings, new_key(sqlite, registry), bodies, args.calls, args.warmup)
    databases["sqlite"] = fresh_database("sqlite", args.workdir, args.postgres)
    http, wrk_command = bench_http(args, registry, databases, bodies)
    print("\n".join([
        f"Command: `{shlex.join(['.venv/bin/python', 'benchmarks/bench_service.py', *sys.argv[1:]])}`",
        f"Date: {dt.date.today()}. Machine: {machine()}.",
        f"Load generator (after {args.warmup_seconds} s untimed at each point): `{wrk_command}` (connections and "
        "threads varied).", "",
        "| path | mode | p50 | p99 | req/s | notes |", "|---|---|---|---|---|---|",
        *(row.markdown() for row in in_process + http), "", *pieces]))


if __name__ == "__main__":
    main()
