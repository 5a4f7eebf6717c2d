"""Access control on every endpoint: no key, a wrong key, a key without the scope, another tenant's key."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.scoring.registry import Registry
from tests.api_fixtures import Api

# (method, path template, scopes that may call it, body, tenant-bound)
ENDPOINTS = [
    ("POST", "/v1/scores", {"score"}, "example", False),
    ("POST", "/v1/scores/batch", {"score"}, "batch", False),
    ("POST", "/v1/scores/features", {"score"}, {"features": {}, "application_ref": "x"}, False),
    ("GET", "/v1/decisions/{decision_id}", {"score", "review", "admin"}, None, True),
    ("GET", "/v1/decisions/{decision_id}/explanation", {"score", "review", "admin"}, None, True),
    ("GET", "/v1/models", {"score", "review", "admin"}, None, False),
    ("GET", "/v1/models/{version}", {"score", "review", "admin"}, None, False),
    ("GET", "/v1/models/{version}/card", {"score", "review", "admin"}, None, False),
    ("POST", "/v1/models/{version}/promote", {"platform"}, {"reason": "access test"}, False),
    ("GET", "/v1/reviews", {"review"}, None, False),
    ("POST", "/v1/reviews/{decision_id}", {"review"}, {"outcome": "approve", "reason": "checked", "reviewer": "z"},
     True),
    ("POST", "/v1/applicants/{applicant_ref}/consents/revoke", {"score", "review", "admin"}, {}, True),
]


@pytest.fixture()
def world(api: Api, example_request: dict, champion_registry: Path) -> dict:
    d = api.score(example_request).json()
    return {"decision_id": d["decision_id"], "applicant_ref": d["applicant_ref"],
            "version": Registry(champion_registry).champion(), "example": example_request,
            "batch": {"items": [example_request]}}


def call(api: Api, method: str, path: str, body: object, headers: dict[str, str]):  # noqa: ANN201
    return api.client.request(method, path, json=body, headers=headers)


def body_for(body: object, world: dict) -> object:
    return world[body] if isinstance(body, str) else body


@pytest.mark.parametrize(("method", "template", "scopes", "body", "bound"), ENDPOINTS,
                         ids=[f"{m} {t}" for m, t, *_ in ENDPOINTS])
def test_access(api: Api, world: dict, method: str, template: str, scopes: set[str], body: object,
                bound: bool) -> None:
    path = template.format(**world)
    payload = body_for(body, world)
    for headers in ({}, {"Authorization": "Bearer sk_0000_wrong"}, {"Authorization": "Basic abc"},
                    {"Authorization": f"Bearer {api.keys['all'][:-1]}x"}):
        r = call(api, method, path, payload, headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["type"] == "unauthorized"
    for scope in ("score", "review", "admin", "platform"):
        if scope not in scopes:
            r = call(api, method, path, payload, api.headers(scope))
            assert r.status_code == 403, (scope, r.text)
            assert "needs the scope" in r.json()["detail"]
    if bound:
        r = call(api, method, path, payload, api.headers("other"))
        assert r.status_code == 404, r.text
    allowed = sorted(scopes)[0]
    r = call(api, method, path, payload, api.headers(allowed))
    assert r.status_code not in (401, 403, 404), (allowed, r.text)


def test_keys_and_tokens_are_stored_only_as_hashes(api: Api, world: dict) -> None:
    from sqlalchemy import text

    with api.client.app.state.engine.connect() as conn:
        stored = " ".join(str(v) for row in conn.execute(text("SELECT prefix, key_hash FROM api_keys")) for v in row)
        tokens = [row[0] for row in conn.execute(text("SELECT token_hash FROM explanation_links"))]
    for key in api.keys.values():
        assert key not in stored and key.split("_", 2)[2] not in stored
    assert tokens and all(len(t) == 64 for t in tokens)
