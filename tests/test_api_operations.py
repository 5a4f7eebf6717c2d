"""Operating the service: hot model promotion, tenant policies, rate limits, unexpected errors, table models,
production settings, and the command line around the service."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from service.cli import app as cli
from service.config import Environment, Settings
from service.db import repo
from service.runtime import DEFAULT_POLICY
from service.scoring.registry import Registry
from tests.api_fixtures import make_api
from tests.test_train_table import german_credit
from training.config import load_config
from training.dataset import from_folder, from_table
from training.pipeline import train

runner = CliRunner()


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture()
def registry_copy(champion_registry: Path, tmp_path: Path) -> Path:
    """A private copy of the served registry: these tests promote and tamper."""
    return Path(shutil.copytree(champion_registry, tmp_path / "models"))


@pytest.fixture(scope="session")
def second_bundle(small_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another catalog model (other seed), to promote over the champion."""
    root = tmp_path_factory.mktemp("second")
    cfg = load_config(None).model_copy(update={"seed": 11})
    version = train(from_folder(small_dir), cfg, Registry(root)).version
    return root / version


def test_promotion_swaps_the_model_without_a_restart(registry_copy: Path, second_bundle: Path, tmp_path: Path,
                                                     example_request: dict) -> None:
    shutil.copytree(second_bundle, registry_copy / second_bundle.name)
    api = make_api(f"sqlite:///{tmp_path}/db.sqlite", registry_copy)
    with api.client:
        before = api.score(example_request).json()["model_version"]
        r = api.client.post(f"/v1/models/{second_bundle.name}/promote", json={"reason": "better OOT AUC"},
                            headers=api.headers("platform"))
        assert r.status_code == 200, r.text
        after = api.score(example_request).json()
        assert before != second_bundle.name and after["model_version"] == second_bundle.name
        assert Registry(registry_copy).events()[-1].reason == "better OOT AUC"


def test_a_tampered_bundle_is_refused_and_the_champion_keeps_serving(registry_copy: Path, second_bundle: Path,
                                                                     tmp_path: Path, example_request: dict) -> None:
    target = registry_copy / second_bundle.name
    shutil.copytree(second_bundle, target)
    model = target / "model.txt"
    model.write_text(model.read_text().replace("leaf_value=", "leaf_value=1", 1))
    api = make_api(f"sqlite:///{tmp_path}/db.sqlite", registry_copy)
    with api.client:
        r = api.client.post(f"/v1/models/{second_bundle.name}/promote", json={"reason": "try it"},
                            headers=api.headers("platform"))
        assert r.status_code == 422 and "model.txt has SHA-256" in r.json()["detail"]
        assert api.score(example_request).json()["model_version"] == Registry(registry_copy).champion()


def test_each_tenant_gets_its_own_policy(champion_registry: Path, tmp_path: Path, example_request: dict) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    text = DEFAULT_POLICY.read_text().replace("name: default", "name: bank-b", 1)
    (policies / "bank-b.yaml").write_text(text)
    api = make_api(f"sqlite:///{tmp_path}/db.sqlite", champion_registry, policies_dir=policies)
    with api.client.app.state.sessions.begin() as session:
        tenant = repo.get_or_create_tenant(session, name="bank-b", policy="bank-b")
        key = repo.create_api_key(session, tenant=tenant, scopes=["score"])
    with api.client:
        mine = api.client.post("/v1/scores", json=example_request, headers={"Authorization": f"Bearer {key}"}).json()
        theirs = api.score(example_request).json()
    assert mine["policy_version"].startswith("bank-b@1.0.0+")
    assert theirs["policy_version"].startswith("default@1.0.0+")


def test_a_served_process_freezes_its_heap_once_started(champion_registry: Path, tmp_path: Path) -> None:
    """The collector's full pass over the model and app paused requests for ~200 ms under load; a served worker
    freezes what it holds at start-up. An app built in a test does not (the test process would keep it)."""
    import gc

    from service.main import create_app

    settings = Settings(database_url=f"sqlite:///{tmp_path}/db.sqlite", registry=champion_registry)
    with TestClient(create_app(settings)):
        assert gc.get_freeze_count() == 0
    try:
        with TestClient(create_app(settings, freeze_heap=True)) as client:
            assert gc.get_freeze_count() > 100_000  # the app, the model and the modules: left out of collections
            assert client.get("/readyz").status_code == 200
    finally:
        gc.unfreeze()


def test_docs_are_served_from_the_package_or_not_at_all(champion_registry: Path, tmp_path: Path) -> None:
    """Swagger UI and ReDoc load their assets from this server only (a CSP forbids the rest); with docs off, no
    page, no asset and no schema is served (tests/test_browser.py renders them with the network off)."""
    from service.main import create_app

    on = Settings(database_url=f"sqlite:///{tmp_path}/on.sqlite", registry=champion_registry)
    with TestClient(create_app(on)) as client:
        for page in ("/docs", "/redoc"):
            r = client.get(page)
            assert r.status_code == 200 and "cdn" not in r.text.lower()
            assert "default-src 'self'" in r.headers["content-security-policy"]
        assert client.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200
    off = on.model_copy(update={"docs_enabled": False, "database_url": f"sqlite:///{tmp_path}/off.sqlite"})
    with TestClient(create_app(off)) as client:
        for path in ("/docs", "/redoc", "/openapi.json", "/static-offline-docs/swagger-ui-bundle.js"):
            assert client.get(path).status_code == 404, path


def test_building_the_app_touches_no_database_and_loads_no_model(champion_registry: Path, tmp_path: Path) -> None:
    """Dumping the OpenAPI document created a database: construction is now free of side effects, and the
    lifespan migrates and loads the champion before the first request."""
    from service.main import create_app

    db = tmp_path / "smecredit.db"
    app = create_app(Settings(database_url=f"sqlite:///{db}", registry=champion_registry))
    assert list(tmp_path.iterdir()) == [] and app.state.champion.loaded is None
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 200
        assert app.state.champion.loaded is not None
    assert db.stat().st_mode & 0o777 == 0o600  # created by the first connection, owner-only as before


def test_rate_limit_per_key(champion_registry: Path, tmp_path: Path) -> None:
    api = make_api(f"sqlite:///{tmp_path}/db.sqlite", champion_registry, rate_limit_per_minute=3)
    with api.client:
        codes = [api.client.get("/v1/models", headers=api.headers("score")).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = api.client.get("/v1/models", headers=api.headers("score"))
        assert r.json()["type"] == "rate_limited" and r.headers["Retry-After"] == "60"
        assert api.client.get("/v1/models", headers=api.headers("admin")).status_code == 200  # another key


def test_an_unexpected_error_leaks_nothing(champion_registry: Path, tmp_path: Path, example_request: dict,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from service.scoring.engine import Engine

    def boom(*_a, **_k):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("secret internals at /srv/app/engine.py line 42")

    monkeypatch.setattr(Engine, "score", boom)
    api = make_api(f"sqlite:///{tmp_path}/db.sqlite", champion_registry)
    with TestClient(api.client.app, raise_server_exceptions=False) as client:  # the 500, not the exception
        r = client.post("/v1/scores", json=example_request, headers=api.headers())
    assert r.status_code == 500
    assert r.json()["type"] == "internal_error"
    assert "secret" not in r.text and "Traceback" not in r.text and "engine.py" not in r.text


def test_scoring_a_feature_vector_with_a_table_model(champion_registry: Path, tmp_path: Path) -> None:
    registry = Path(shutil.copytree(champion_registry, tmp_path / "models"))
    version = train(from_table(german_credit(), "creditability", positive="bad"), load_config(None),
                    Registry(registry)).version
    api = make_api(f"sqlite:///{tmp_path}/db.sqlite", registry)
    features = {"duration_in_month": 48, "credit_amount": 12000,  # age: protected, not an input by default
                "purpose": "car (new)", "status_of_existing_checking_account": "... < 0 DM"}
    with api.client:
        r = api.client.post(f"/v1/scores/features?model_version={version}", headers=api.headers("score"),
                            json={"features": features, "application_ref": "loan-1"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model_version"] == version and 0 < body["pd"] < 1
        assert body["contributions"]["credit_amount"] != 0
        # A level the model never saw scores as its '(other)' level, exactly as training coded rare levels.
        pds = [api.client.post(f"/v1/scores/features?model_version={version}", headers=api.headers("score"),
                               json={"features": {**features, "purpose": level}, "application_ref": "loan-2"})
               for level in ("yacht", "(other)")]
        assert [r.status_code for r in pds] == [200, 200]
        assert pds[0].json()["pd"] == pds[1].json()["pd"]
        catalog = api.client.post("/v1/scores/features", headers=api.headers("score"),
                                  json={"features": {}, "application_ref": "loan-3"})
        assert catalog.status_code == 422 and "is a catalog model" in catalog.json()["detail"]


class TestProductionSettings:
    def test_unsafe_production_is_refused(self) -> None:
        with pytest.raises(ValueError) as info:
            Settings(environment=Environment.production)
        text = str(info.value)
        for problem in ("must be PostgreSQL", "SMECREDIT_PSEUDONYM_KEY", "SMECREDIT_DATA_KEYS",
                        "SMECREDIT_PUBLIC_BASE_URL", "SMECREDIT_DOCS_ENABLED"):
            assert problem in text

    @pytest.mark.parametrize(("field", "value", "problem"), [
        ("pseudonym_key", "", "SMECREDIT_PSEUDONYM_KEY must be set to a secret of 32 characters or more"),
        ("pseudonym_key", "short-secret", "SMECREDIT_PSEUDONYM_KEY must be set to a secret of 32 characters"),
        ("public_base_url", "", "SMECREDIT_PUBLIC_BASE_URL must be the public https address"),
        ("public_base_url", "http://credit.example.cn", "SMECREDIT_PUBLIC_BASE_URL must be the public https"),
    ])
    def test_empty_or_weak_production_values_are_refused(self, field: str, value: str, problem: str) -> None:
        """Only the placeholders were refused: an empty key or a plain-http address passed."""
        from service.crypto import Keyring

        safe = {"environment": Environment.production, "database_url": "postgresql://db/prod",
                "pseudonym_key": "x" * 32, "data_keys": f"k1:{Keyring.new_key()}", "docs_enabled": False,
                "public_base_url": "https://credit.example.cn", "metrics_token": "m" * 32}
        with pytest.raises(ValueError, match=problem):
            Settings(**{**safe, field: value})

    def test_safe_production_is_accepted(self) -> None:
        from service.crypto import Keyring

        s = Settings(environment=Environment.production, database_url="postgresql://db/prod",
                     pseudonym_key="x" * 32, data_keys=f"k1:{Keyring.new_key()}", docs_enabled=False,
                     public_base_url="https://credit.example.cn", metrics_token="m" * 32)
        assert s.environment == Environment.production

    def test_serve_refuses_unsafe_production(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from service.config import get_settings

        monkeypatch.setenv("SMECREDIT_ENVIRONMENT", "production")
        get_settings.cache_clear()
        try:
            result = runner.invoke(cli, ["serve"])
        finally:
            get_settings.cache_clear()
        assert result.exit_code == 2 and "unsafe production settings" in flat(result.output)


class TestCommandLine:
    def test_keys_create_prints_a_working_key_once(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   champion_registry: Path) -> None:
        from service.config import get_settings

        url = f"sqlite:///{tmp_path}/db.sqlite"
        monkeypatch.setenv("SMECREDIT_DATABASE_URL", url)
        get_settings.cache_clear()
        try:
            result = runner.invoke(cli, ["keys", "create", "--tenant", "bank-c", "--scopes", "score,review"])
            bad = runner.invoke(cli, ["keys", "create", "--tenant", "bank-c", "--scopes", "score,root"])
        finally:
            get_settings.cache_clear()
        assert result.exit_code == 0, result.output
        key = result.output.strip().splitlines()[-1]
        assert key.startswith("sk_")
        assert bad.exit_code == 2 and "scopes must be a non-empty subset" in flat(bad.output)
        api = make_api(url, champion_registry)
        with api.client:
            assert api.client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        db = (tmp_path / "db.sqlite").read_bytes()
        assert key.encode() not in db  # only the hash is stored

    def test_score_a_folder_offline(self, small_dir: Path, champion_registry: Path, tmp_path: Path) -> None:
        import pyarrow.parquet as pq

        out = tmp_path / "scores.parquet"
        result = runner.invoke(cli, ["score", "--data", str(small_dir), "--out", str(out), "--registry",
                                     str(champion_registry)])
        assert result.exit_code == 0, result.output
        table = pq.read_table(out)
        assert table.num_rows == pq.read_table(small_dir / "applications.parquet").num_rows
        decisions = set(table.column("decision").to_pylist())
        assert decisions <= {"approve", "refer", "decline"} and len(decisions) == 3


REDIS_URL = os.environ.get("SMECREDIT_TEST_REDIS", "redis://127.0.0.1:6379/0")


def redis_available() -> str | None:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means: skip, and say why
        return f"Redis not reachable at {REDIS_URL} ({type(exc).__name__}); tests of what replicas share skipped"


def test_rate_limits_are_shared_across_replicas_through_redis(champion_registry: Path, tmp_path: Path) -> None:
    reason = redis_available()
    if reason:
        pytest.skip(reason)
    import uuid

    db = f"sqlite:///{tmp_path}/db.sqlite"
    redis_url = f"redis://127.0.0.1:6379/0?client_name=t{uuid.uuid4().hex[:8]}"
    first = make_api(db, champion_registry, rate_limit_per_minute=4, redis_url=redis_url)
    second = make_api(db, champion_registry, rate_limit_per_minute=4, redis_url=redis_url)
    key = {"Authorization": f"Bearer {first.keys['score']}"}
    with first.client, second.client:
        codes = [c.get("/v1/models", headers=key).status_code
                 for c in (first.client, second.client, first.client, second.client, first.client)]
    assert codes == [200, 200, 200, 200, 429]


def test_an_unreachable_redis_does_not_stop_scoring(champion_registry: Path, tmp_path: Path) -> None:
    api = make_api(f"sqlite:///{tmp_path}/db.sqlite", champion_registry, rate_limit_per_minute=4,
                   redis_url="redis://127.0.0.1:1/0")
    with api.client:
        assert api.client.get("/v1/models", headers=api.headers("score")).status_code == 200




@pytest.mark.parametrize("shared", [False, True], ids=["cache-ttl", "redis"])
def test_a_revoked_key_stops_working_and_the_revocation_is_audited(champion_registry: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   shared: bool) -> None:
    """Keys are cached per process (no database lookup per request). A revocation from the CLI (another
    process) reaches the service at once through Redis; without Redis, when the cached entry expires."""
    if shared and (why := redis_available()):
        pytest.skip(why)
    url = f"sqlite:///{tmp_path}/db.sqlite"
    ttl = 30.0 if shared else 3.0  # with Redis, a long cache must not delay the refusal
    api = make_api(url, champion_registry, key_cache_seconds=ttl, redis_url=REDIS_URL if shared else None)
    prefix = api.keys["score"].split("_")[1]
    monkeypatch.setenv("SMECREDIT_DATABASE_URL", url)
    if shared:
        monkeypatch.setenv("SMECREDIT_REDIS_URL", REDIS_URL)
    from service.config import get_settings

    get_settings.cache_clear()
    try:
        with api.client:
            if shared:  # the replica's subscription is up before the revocation is announced
                wait_for(lambda: api.client.app.state.callers.listening, seconds=5)
            assert api.client.get("/v1/models", headers=api.headers("score")).status_code == 200
            assert api.client.app.state.callers.get(api.keys["score"]) is not None  # served from the cache now
            result = runner.invoke(cli, ["keys", "revoke", prefix])
            assert result.exit_code == 0, result.output
            revoked = time.monotonic()
            wait_for(lambda: api.client.get("/v1/models", headers=api.headers("score")).status_code == 401,
                     seconds=ttl + 2)
            if shared:  # announced: at once, not when the 30 s entry expires
                assert time.monotonic() - revoked < 2.0
            assert api.client.get("/v1/models", headers=api.headers("review")).status_code == 200  # others stay
        again = runner.invoke(cli, ["keys", "revoke", prefix])
        assert again.exit_code == 2 and "no active key" in flat(again.output)
        verified = runner.invoke(cli, ["audit", "verify"])
        assert verified.exit_code == 0, verified.output
    finally:
        get_settings.cache_clear()
    with api.client.app.state.read_sessions() as s:
        from sqlalchemy import select

        from service.db.tables import AuditEvent
        actions = list(s.scalars(select(AuditEvent.action).where(AuditEvent.subject == prefix).order_by(AuditEvent.id)))
        assert actions == ["key.created", "key.revoked"]


def test_a_lookup_racing_a_revocation_is_not_cached() -> None:
    """A request that read its key as valid just before the revocation was announced must not put it in the
    cache afterwards, where it would outlive the announcement by the whole TTL."""
    from service.runtime import CallerCache

    cache: CallerCache[str] = CallerCache(ttl=60)
    read_at = cache.generation  # the lookup starts: the key is still valid in the database
    cache.drop("abc")  # the revocation is announced meanwhile
    cache.put("sk_abc_secret", "abc", "caller", read_at)
    assert cache.get("sk_abc_secret") is None
    cache.put("sk_abc_secret", "abc", "caller", cache.generation)  # a lookup after the drop is cached
    assert cache.get("sk_abc_secret") == "caller"


def wait_for(condition, seconds: float) -> None:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not true within {seconds} s"
        time.sleep(0.05)


def test_a_retried_request_gets_a_working_link(champion_registry: Path, tmp_path: Path, example_request: dict) -> None:
    api = make_api(f"sqlite:///{tmp_path}/db.sqlite", champion_registry)
    with api.client:
        first = api.score(example_request, **{"Idempotency-Key": "lost-response"}).json()
        retry = api.score(example_request, **{"Idempotency-Key": "lost-response"}).json()
        assert retry["decision_id"] == first["decision_id"] and retry["explanation"] is not None
        page = api.client.get(f"/v1/explanations/{retry['explanation']['token']}")
        assert page.status_code == 200 and first["decision_id"] in page.text
        assert api.client.get(f"/v1/explanations/{first['explanation']['token']}").status_code == 200


def test_a_model_version_that_is_not_a_version_is_a_422(champion_registry: Path, tmp_path: Path) -> None:
    api = make_api(f"sqlite:///{tmp_path}/db.sqlite", champion_registry)
    with api.client:
        for version in ("../../etc", ".tmp", "m0000000000ff"):
            r = api.client.post(f"/v1/scores/features?model_version={version}", headers=api.headers("score"),
                                json={"features": {}, "application_ref": "x"})
            assert r.status_code == 422 and r.json()["detail"].startswith("query.model_version:"), r.text


def test_tenant_policies_fail_loudly_and_keep_the_last_good_version(champion_registry: Path, tmp_path: Path,
                                                                    example_request: dict) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "bank-d.yaml").write_text(DEFAULT_POLICY.read_text().replace("name: default", "name: bank-d", 1))
    api = make_api(f"sqlite:///{tmp_path}/db.sqlite", champion_registry, policies_dir=policies)
    with api.client.app.state.sessions.begin() as session:
        known = repo.create_api_key(session, tenant=repo.get_or_create_tenant(session, name="d", policy="bank-d"),
                                    scopes=["score"])
        missing = repo.create_api_key(session, tenant=repo.get_or_create_tenant(session, name="e", policy="nope"),
                                      scopes=["score"])
    with api.client:
        ok = api.client.post("/v1/scores", json=example_request, headers={"Authorization": f"Bearer {known}"})
        assert ok.status_code == 200 and ok.json()["policy_version"].startswith("bank-d@")
        (policies / "bank-d.yaml").write_text("name: bank-d\nversion: [broken\n")
        import os

        os.utime(policies / "bank-d.yaml", (1e9, 1e9))  # a different mtime, so it is reloaded
        again = api.client.post("/v1/scores", json=example_request, headers={"Authorization": f"Bearer {known}"})
        assert again.status_code == 200 and again.json()["policy_version"] == ok.json()["policy_version"]
        gone = api.client.post("/v1/scores", json=example_request, headers={"Authorization": f"Bearer {missing}"})
        assert gone.status_code == 503 and "nope.yaml is missing" in gone.json()["detail"]
