"""The scoring API on a real database (SQLite and PostgreSQL): decisions, errors, tenants, reviews, models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.batch.requests import request_for
from service.batch.score import score_folder
from service.openapi_doc import openapi_json
from service.runtime import DEFAULT_POLICY
from service.scoring.catalog import FEATURE_NAMES
from service.scoring.policy import load_policy
from service.scoring.raw import MONTHLY_SOURCES
from service.scoring.registry import Registry
from tests.api_fixtures import Api, body_with, error_of

ROOT = Path(__file__).resolve().parents[1]


class TestCreateScore:
    def test_a_complete_decision(self, api: Api, example_request: dict) -> None:
        r = api.score(example_request)
        assert r.status_code == 200, r.text
        d = r.json()
        assert 0 < d["pd"] < 1 and 300 <= d["score"] <= 900 and d["grade"] in "ABCDEFG"
        assert d["decision"] in ("approve", "refer", "decline")
        assert (d["offer"] is None) == (d["decision"] == "decline")
        if d["offer"]:
            assert d["offer"]["apr"] <= 0.15 and d["offer"]["limit"] > 0
        assert len(d["reasons"]) <= 4
        for reason in d["reasons"]:
            assert reason["text_zh"] and reason["text_en"] and reason["impact_points"] < 0
        assert d["sources_used"] == [s for s in MONTHLY_SOURCES if example_request["consent"][s]]  # links: no month
        assert d["policy_version"].startswith("default@")
        assert d["explanation"]["url"].endswith("/v1/explanations/" + d["explanation"]["token"])

    def test_api_and_batch_path_give_the_same_pd(self, api: Api, example_request: dict, small_dir: Path,
                                                 champion_registry: Path) -> None:
        d = api.score(example_request).json()
        offline = score_folder(small_dir, champion_registry / Registry(champion_registry).champion(),
                               load_policy(DEFAULT_POLICY)).to_pylist()
        row = next(r for r in offline if r["application_id"] == example_request["application"]["application_id"])
        assert d["pd"] == row["pd"] and d["score"] == row["score"] and d["decision"] == row["decision"]

    def test_a_withheld_source_is_not_used(self, api: Api, example_request: dict) -> None:
        body = body_with(example_request, **{"consent.payments": False, "data.payments": []})
        d = api.score(body).json()
        assert "payments" not in d["sources_used"]
        assert all(not r["feature"].startswith("pay_") for r in d["reasons"])

    def test_data_without_consent_is_refused(self, api: Api, example_request: dict) -> None:
        body = body_with(example_request, **{"consent.tax": False})
        r = api.score(body)
        assert r.status_code == 422
        assert error_of(r)["detail"] == ("body.data.tax: sent without consent (consent.tax is false): do not send "
                                         "data the applicant has not agreed to share")

    def test_idempotent_retry_and_conflicting_reuse(self, api: Api, example_request: dict) -> None:
        first = api.score(example_request, **{"Idempotency-Key": "retry-1"}).json()
        again = api.score(example_request, **{"Idempotency-Key": "retry-1"}).json()
        assert again["decision_id"] == first["decision_id"] and again["pd"] == first["pd"]
        other = body_with(example_request, **{"application.requested_amount": 12_345.0})
        r = api.score(other, **{"Idempotency-Key": "retry-1"})
        assert r.status_code == 422
        assert error_of(r)["errors"][0]["loc"] == ["header", "Idempotency-Key"]


class TestBadInput:
    @pytest.mark.parametrize(("path", "value", "loc", "rule"), [
        ("application.requested_amount", -5, "body.application.requested_amount", "greater than or equal to 1000"),
        ("application.term_months", 0, "body.application.term_months", "greater than or equal to 1"),
        ("application.purpose", "casino", "body.application.purpose", "Input should be"),
        ("profile.industry", "Z", "body.profile.industry", "Input should be"),
        ("profile.employees", -1, "body.profile.employees", "greater than or equal to 0"),
        ("data.tax.0.month", "2024-03-15", "body.data.tax.0.month", "must be the first day of a month"),
        ("data.payments.0.inflow", "lots", "body.data.payments.0.inflow", "valid number"),
        ("application.application_date", "2999-01-01", "body.application.application_date",
         "must not be in the future"),
    ])
    def test_field_errors_name_the_field_and_the_rule(self, api: Api, example_request: dict, path: str,
                                                      value: object, loc: str, rule: str) -> None:
        r = api.score(body_with(example_request, **{path: value}))
        assert r.status_code == 422
        err = error_of(r)
        assert err["detail"].startswith(loc + ":"), err["detail"]
        assert rule in err["detail"], err["detail"]

    def test_every_field_error_is_listed_at_once(self, api: Api, example_request: dict) -> None:
        """A client fixes a request in one pass: each bad field in ``errors``, not only the first."""
        bad = {"application.requested_amount": -5, "application.purpose": "casino", "profile.industry": "Z",
               "profile.employees": -1, "data.tax.0.month": "2024-03-15", "data.tax.0.vat_paid": None,
               "data.payments.0.inflow": "lots", "data.utilities.0.days_paid_late": 2.5}
        r = api.score(body_with(example_request, **bad))
        assert r.status_code == 422
        err = error_of(r)
        assert [".".join(map(str, e["loc"])) for e in err["errors"]] == ["body." + path for path in bad]
        assert err["detail"].startswith("body.application.requested_amount: ")
        batch = api.client.post("/v1/scores/batch", json={"items": [body_with(example_request, **bad)] * 2},
                                headers=api.headers())
        assert [".".join(map(str, e["loc"])) for e in error_of(batch)["errors"]] == [
            f"body.items.{i}.{path}" for i in (0, 1) for path in bad]

    def test_unknown_fields_are_rejected(self, api: Api, example_request: dict) -> None:
        body = body_with(example_request, **{"profile.owner_name": "Zhang San"})
        err = error_of(api.score(body))
        assert err["detail"] == "body.profile.owner_name: Extra inputs are not permitted"

    def test_duplicate_month(self, api: Api, example_request: dict) -> None:
        body = body_with(example_request)
        body["data"]["tax"].append(dict(body["data"]["tax"][0]))
        err = error_of(api.score(body))
        n = len(body["data"]["tax"]) - 1
        assert err["detail"] == f"body.data.tax.{n}.month: duplicate month {body['data']['tax'][n]['month']}"

    def test_every_rule_across_fields_is_listed_at_once(self, api: Api, example_request: dict) -> None:
        """The checks across fields stopped at the first problem; a bookkeeper fixing a request learns them all."""
        body = body_with(example_request, **{"consent.tax": False, "application.application_date": "1990-01-02"})
        body["data"]["payments"].append(dict(body["data"]["payments"][0]))
        err = error_of(api.score(body))
        assert [(".".join(map(str, e["loc"])), e["type"]) for e in err["errors"]] == [
            ("body.application.application_date", "coherence"),
            ("body.data.tax", "coherence"),
            (f"body.data.payments.{len(body['data']['payments']) - 1}.month", "coherence")]

    def test_missing_consent_for_a_source(self, api: Api, example_request: dict) -> None:
        body = body_with(example_request)
        del body["consent"]["utilities"]
        err = error_of(api.score(body))
        assert err["detail"] == "body.consent.utilities: Field required"

    def test_oversized_bodies_get_413(self, api: Api, example_request: dict) -> None:
        big = b'{"pad": "' + b"x" * (api.settings.max_body_bytes + 10) + b'"}'
        r = api.client.post("/v1/scores", content=big, headers=api.headers(**{"Content-Type": "application/json"}))
        assert r.status_code == 413 and error_of(r)["type"] == "payload_too_large"

        def chunks():  # no Content-Length: the limit must hold while streaming
            for _ in range(api.settings.max_body_bytes // 65536 + 2):
                yield b"x" * 65536

        r = api.client.post("/v1/scores", content=chunks(), headers=api.headers(**{"Content-Type": "application/json"}))
        assert r.status_code == 413

    def test_batch_limits(self, api: Api, example_request: dict) -> None:
        r = api.client.post("/v1/scores/batch", json={"items": [example_request] * 2}, headers=api.headers())
        assert r.status_code == 200 and len(r.json()["items"]) == 2
        too_many = {"items": [example_request] * (api.settings.max_batch + 1)}
        r = api.client.post("/v1/scores/batch", json=too_many, headers=api.headers())
        assert r.status_code in (413, 422)
        assert error_of(r)["status"] == r.status_code


class TestAccess:
    def test_no_key_wrong_key_and_wrong_scope(self, api: Api, example_request: dict) -> None:
        r = api.client.post("/v1/scores", json=example_request)
        assert r.status_code == 401 and error_of(r)["type"] == "unauthorized"
        r = api.client.post("/v1/scores", json=example_request, headers={"Authorization": "Bearer sk_nope_nope"})
        assert r.status_code == 401
        r = api.score(example_request, who="review")
        assert r.status_code == 403 and "needs the scope score" in error_of(r)["detail"]

    def test_a_tenant_never_sees_another_tenants_decisions(self, api: Api, example_request: dict) -> None:
        decision_id = api.score(example_request).json()["decision_id"]
        for path in (f"/v1/decisions/{decision_id}", f"/v1/decisions/{decision_id}/explanation"):
            assert api.client.get(path, headers=api.headers("all")).status_code == 200
            r = api.client.get(path, headers=api.headers("other"))
            assert r.status_code == 404 and error_of(r)["type"] == "not_found"
        r = api.client.post(f"/v1/reviews/{decision_id}", headers=api.headers("other"),
                            json={"outcome": "approve", "reason": "looks fine", "reviewer": "x"})
        assert r.status_code == 404


class TestDecisionsAndExplanations:
    def test_contributions_add_up_to_the_score(self, api: Api, example_request: dict) -> None:
        d = api.score(example_request).json()
        e = api.client.get(f"/v1/decisions/{d['decision_id']}/explanation", headers=api.headers()).json()
        total = e["base_value"] + sum(c["contribution"] for c in e["contributions"])
        assert total == pytest.approx(e["margin"], abs=1e-6)
        assert sum(g["points"] for g in e["groups"]) == pytest.approx(
            sum(c["points"] for c in e["contributions"]), abs=1e-3)
        assert {c["feature"] for c in e["contributions"]} >= {r["feature"] for r in d["reasons"]}
        got = api.client.get(f"/v1/decisions/{d['decision_id']}", headers=api.headers("score")).json()
        assert got["pd"] == d["pd"] and got["decision"] == d["decision"]
        expected_reviews = ["pending"] if d["decision"] == "refer" else []
        assert [r["status"] for r in got["reviews"]] == expected_reviews

    def test_unknown_decision(self, api: Api) -> None:
        r = api.client.get("/v1/decisions/0123456789abcdef", headers=api.headers())
        assert r.status_code == 404 and "0123456789abcdef" in error_of(r)["detail"]


class TestReviews:
    def test_review_keeps_the_original_decision(self, api: Api, example_request: dict) -> None:
        d = api.score(example_request).json()
        r = api.client.post(f"/v1/reviews/{d['decision_id']}", headers=api.headers("review"),
                            json={"outcome": "decline", "reason": "income could not be verified", "reviewer": "li"})
        assert r.status_code == 200 and r.json()["status"] == "decided"
        again = api.client.get(f"/v1/decisions/{d['decision_id']}", headers=api.headers()).json()
        assert again["decision"] == d["decision"] and again["pd"] == d["pd"]
        assert again["reviews"][-1]["outcome"] == "decline"
        assert api.client.get("/v1/reviews?status=decided", headers=api.headers("review")).json()["items"]

    def test_a_reason_is_mandatory(self, api: Api, example_request: dict) -> None:
        d = api.score(example_request).json()
        r = api.client.post(f"/v1/reviews/{d['decision_id']}", headers=api.headers("review"),
                            json={"outcome": "approve", "reviewer": "li"})
        assert r.status_code == 422 and error_of(r)["detail"] == "body.reason: Field required"
        r = api.client.get("/v1/reviews", headers=api.headers("score"))
        assert r.status_code == 403

    def test_referred_decisions_wait_in_the_queue(self, api: Api, small_raw) -> None:  # noqa: ANN001
        referred, asking = [], []
        for application_id in small_raw.applications["application_id"][:40]:
            d = api.score(request_for(small_raw, str(application_id))).json()
            if d["decision"] == "refer":
                (asking if d["data_requests"] else referred).append(d["decision_id"])
        assert referred, "some of 40 synthetic applicants fall in the refer band"
        pending = api.client.get("/v1/reviews?status=pending", headers=api.headers("review")).json()["items"]
        assert [p["decision_id"] for p in pending] == referred
        assert all(p["requested_by"] == "policy" for p in pending)
        # Referrals that asked for a source the applicant did not share wait for it (tests/test_data_requests.py).
        waiting = api.client.get("/v1/reviews?status=awaiting_data", headers=api.headers("review")).json()["items"]
        assert [w["decision_id"] for w in waiting] == asking


class TestModels:
    def test_list_and_show(self, api: Api, champion_registry: Path) -> None:
        models = api.client.get("/v1/models", headers=api.headers("score")).json()["items"]
        champion = Registry(champion_registry).champion()
        assert [m["version"] for m in models if m["champion"]] == [champion]
        detail = api.client.get(f"/v1/models/{champion}", headers=api.headers("score")).json()
        assert len(detail["features"]) == len(FEATURE_NAMES) and 0.5 < detail["metrics"]["auc"] < 1
        assert api.client.get("/v1/models/m0000", headers=api.headers()).status_code == 404

    def test_promote_needs_the_platform_scope(self, api: Api, champion_registry: Path) -> None:
        champion = Registry(champion_registry).champion()
        for scope in ("score", "admin"):  # a tenant's admin must not change the model every tenant uses
            r = api.client.post(f"/v1/models/{champion}/promote", json={"reason": "because"},
                                headers=api.headers(scope))
            assert r.status_code == 403


class TestOperations:
    def test_health_ready_and_metrics(self, api: Api, example_request: dict) -> None:
        assert api.client.get("/healthz").json() == {"status": "ok"}
        ready = api.client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["database"] == "ok"
        api.score(example_request)
        text = api.client.get("/metrics").text
        assert 'smecredit_requests_total{method="POST",route="/v1/scores",status="200"}' in text

    def test_unknown_route_has_the_error_shape(self, api: Api) -> None:
        r = api.client.get("/v1/nothing", headers=api.headers())
        assert r.status_code == 404 and error_of(r)["type"] == "http_error"


def test_committed_openapi_matches_the_app() -> None:
    committed = (ROOT / "openapi" / "openapi.json").read_text(encoding="utf-8")
    assert committed == openapi_json(), "openapi/openapi.json is stale: run `smecredit openapi --write`"


def test_committed_example_is_a_valid_request() -> None:
    from service.api.schemas import ScoreRequest

    body = json.loads((ROOT / "openapi" / "examples" / "score_request.json").read_text(encoding="utf-8"))
    request = ScoreRequest.model_validate(body)
    for source in MONTHLY_SOURCES:
        assert getattr(request.consent, source) == bool(getattr(request.data, source)), source
    assert request.consent.links is True and request.related is not None and request.related.links  # the graph
    assert len(request.data.tax) >= 12


def test_timestamps_carry_their_offset_even_from_sqlite(api: Api, example_request: dict) -> None:
    first = api.score(example_request, **{"Idempotency-Key": "tz-1"}).json()
    replayed = api.score(example_request, **{"Idempotency-Key": "tz-1"}).json()  # read back from the database
    got = api.client.get(f"/v1/decisions/{first['decision_id']}", headers=api.headers()).json()
    for stamp in (first["created_at"], replayed["created_at"], got["created_at"]):
        assert stamp.endswith(("Z", "+00:00")), stamp
