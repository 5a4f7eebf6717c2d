"""Defects found by an adversarial test of the running service (hardening, round two), one class per defect,
on SQLite and PostgreSQL where the database matters. Each test failed before its fix, except those marked as
guards (what the fix must not break)."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.orm import Session

from service.api.routing import BodyError, _quick_parse, parse_json_body, strict_parse
from service.db.tables import AuditEvent
from tests.api_fixtures import Api, body_with, error_of


class TestControlCharacters:
    """NUL bytes (and lone surrogates) made PostgreSQL raise DataError, answered as 500; SQLite stored them."""

    def test_a_nul_in_a_decision_path_is_a_404(self, api: Api) -> None:
        r = api.client.get("/v1/decisions/abc%00def", headers=api.headers())
        assert r.status_code == 404
        assert error_of(r)["detail"].startswith("path.decision_id")

    def test_a_nul_in_an_application_id_is_a_422(self, api: Api, example_request: dict) -> None:
        r = api.score(body_with(example_request, **{"application.application_id": "A\u0000B"}))
        assert r.status_code == 422
        assert error_of(r)["errors"][0]["loc"] == ["body", "application", "application_id"]

    def test_a_nul_in_a_batch_item(self, api: Api, example_request: dict) -> None:
        bad = body_with(example_request, **{"application.application_id": "A\u0000B"})
        r = api.client.post("/v1/scores/batch", json={"items": [example_request, bad]}, headers=api.headers())
        assert r.status_code == 422
        assert error_of(r)["errors"][0]["loc"] == ["body", "items", 1, "application", "application_id"]

    def test_a_lone_surrogate_is_refused(self, api: Api, example_request: dict) -> None:
        raw = api.client.post("/v1/scores", headers=api.headers(**{"Content-Type": "application/json"}),
                              content=_json(example_request).replace(b'"purpose": "', b'"purpose": "\\ud800'))
        assert raw.status_code == 422
        assert error_of(raw)["errors"][0]["loc"] == ["body", "application", "purpose"]

    def test_review_reason_and_reviewer(self, api: Api, example_request: dict) -> None:
        d = api.score(example_request).json()
        for field in ("reason", "reviewer"):
            body = {"outcome": "approve", "reason": "checked by hand", "reviewer": "analyst-1", field: "x\u0000yyyyy"}
            r = api.client.post(f"/v1/reviews/{d['decision_id']}", json=body, headers=api.headers())
            assert r.status_code == 422, field
            assert error_of(r)["errors"][0]["loc"] == ["body", field]

    def test_the_page_note_and_the_revoke_path(self, api: Api, example_request: dict) -> None:
        d = api.score(example_request).json()
        token = d["explanation"]["token"]
        r = api.client.post(f"/v1/explanations/{token}/review", data={"note": "please\u0000look"},
                            follow_redirects=False)
        assert r.status_code == 422
        assert error_of(r)["errors"][0]["loc"] == ["body", "note"]
        r = api.client.post("/v1/applicants/ab%00cd/consents/revoke", json={}, headers=api.headers())
        assert r.status_code == 404 and error_of(r)["detail"].startswith("path.applicant_ref: no such resource")
        r = api.client.get("/v1/reviews?status=pending%00", headers=api.headers())
        assert r.status_code == 422
        assert error_of(r)["errors"][0]["loc"] == ["query", "status"]

    def test_a_page_form_is_checked_whatever_its_content_type(self, api: Api, example_request: dict) -> None:
        token = api.score(example_request).json()["explanation"]["token"]
        for ctype in ("text/plain", None):
            headers = {"Content-Type": ctype} if ctype else {}
            r = api.client.post(f"/v1/explanations/{token}/review", content=b"note=a%00b", headers=headers,
                                follow_redirects=False)
            assert r.status_code == 415, ctype
            assert error_of(r)["errors"][0]["loc"] == ["header", "Content-Type"]
        r = api.client.post(f"/v1/explanations/{token}/review", content=b"note=%ff%fe", follow_redirects=False,
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 422 and error_of(r)["errors"][0]["type"] == "utf8"
        assert api.client.get("/v1/reviews", headers=api.headers()).json()["items"] == []  # nothing recorded

    def test_newlines_in_free_text_are_fine(self, api: Api, example_request: dict) -> None:
        """A guard: line breaks and tabs are text, not control characters to refuse."""
        d = api.score(example_request).json()
        body = {"outcome": "approve", "reason": "line one\nline two\ttabbed", "reviewer": "analyst-1"}
        r = api.client.post(f"/v1/reviews/{d['decision_id']}", json=body, headers=api.headers())
        assert r.status_code == 200, r.text
        assert r.json()["reason"] == body["reason"]


def _json(body: dict) -> bytes:
    import json

    return json.dumps(body).encode()


class TestStrictJson:
    def test_infinity_and_nan_are_not_numbers(self, api: Api) -> None:
        for literal in ("Infinity", "-Infinity", "NaN", "1e400"):
            r = api.client.post("/v1/scores/features", headers=api.headers(**{"Content-Type": "application/json"}),
                                content=b'{"features": {"income": ' + literal.encode() + b'}, "application_ref": "x"}')
            assert r.status_code == 422, literal
            assert error_of(r)["errors"][0]["type"] == "finite_number"

    @pytest.mark.parametrize(("path", "value"), [("profile.employees", "18"), ("profile.employees", True),
                                                 ("profile.employees", 18.0),
                                                 ("application.requested_amount", "50000"),
                                                 ("consent.tax", "true"), ("consent.tax", 1)])
    def test_numbers_and_booleans_are_strict(self, api: Api, example_request: dict, path: str,
                                             value: object) -> None:
        r = api.score(body_with(example_request, **{path: value}))
        assert r.status_code == 422, r.text
        assert error_of(r)["errors"][0]["loc"] == ["body", *path.split(".")]

    def test_an_integer_is_a_float(self, api: Api, example_request: dict) -> None:
        """A guard: strict numbers still take 50000 for 50000.0."""
        r = api.score(body_with(example_request, **{"application.requested_amount": 50_000}))
        assert r.status_code == 200, r.text

    def test_a_boolean_is_not_a_feature_value(self, api: Api) -> None:
        r = api.client.post("/v1/scores/features", json={"features": {"income": True}, "application_ref": "x"},
                            headers=api.headers())
        assert r.status_code == 422
        assert error_of(r)["errors"][0]["loc"][:3] == ["body", "features", "income"]

    def test_duplicate_keys_are_refused(self, api: Api, example_request: dict) -> None:
        text = _json(example_request).replace(b'"consent": {', b'"consent": {"tax": false, ', 1)
        r = api.client.post("/v1/scores", content=text, headers=api.headers(**{"Content-Type": "application/json"}))
        assert r.status_code == 422
        assert error_of(r)["errors"][0]["type"] == "duplicate_key"
        assert "'tax'" in error_of(r)["detail"]

    def test_a_wrong_content_type_is_a_415(self, api: Api, example_request: dict) -> None:
        for ctype in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = api.headers(**({"Content-Type": ctype} if ctype else {}))
            r = api.client.post("/v1/scores", content=_json(example_request), headers=headers)
            if ctype is None:  # httpx sends no content type for raw bytes
                assert "content-type" not in {k.lower() for k in r.request.headers}
            assert r.status_code == 415, ctype
            assert error_of(r)["errors"][0]["loc"] == ["header", "Content-Type"]

    def test_json_with_a_charset_is_fine(self, api: Api, example_request: dict) -> None:
        """A guard: a charset parameter is not another media type."""
        r = api.client.post("/v1/scores", content=_json(example_request),
                            headers=api.headers(**{"Content-Type": "application/json; charset=utf-8"}))
        assert r.status_code == 200, r.text

    def test_a_body_that_is_not_utf8_is_a_422_not_an_undocumented_400(self, api: Api) -> None:
        r = api.client.post("/v1/scores", content=b'{"application": "\xff\xfe"}',
                            headers=api.headers(**{"Content-Type": "application/json"}))
        assert r.status_code == 422
        assert error_of(r)["errors"][0]["type"] == "utf8"


def _outcome(parse, raw: bytes) -> object:
    try:
        return ("ok", parse(raw))
    except BodyError as exc:
        return ("refused", exc.loc, exc.type)


class TestQuickParse:
    """Bodies are parsed by orjson and checked for what orjson lets through (duplicate keys, integers beyond 64
    bits); whatever the quick path cannot vouch for goes to the strict parser. Both must agree on every body."""

    @pytest.mark.parametrize("raw", [
        b'{"a": 1, "b": [1, 2.5, {"c": "x"}], "d": null}',  # the common shape: accepted by both
        b'{"a":1,"a":2}',  # a duplicate
        b'{"a": {"b": 1, "b": 1}}',  # a nested duplicate
        b'{"a" :1,"a":2,"b":1}',  # a duplicate hidden by a spaced colon: the key count alone would miss it
        rb'{"a":1,"a":2,"s":"x\":"}',  # a string holding the key terminator: the counts differ, strict decides
        rb'{"s":"x\":","a":1}',  # the same without a duplicate: accepted
        b'{"n": 123456789012345678901234}',  # an integer orjson would read as a float
        b'{"n": 18446744073709551615}',  # the largest 64-bit integer: exact on both paths
        b'{"n": 2e19}',  # a large float: the strict parser decides
        b'{"n": 1e400}', b'{"n": NaN}', b'{"n": Infinity}',  # not finite
        rb'{"s": "\u0000"}', rb'{"s": "\ud800"}', b'{"s": "a\x7fb"}',  # control characters
        rb'{"s": "\u00e9\u4e2d"}',  # escapes that are fine
        b'\xef\xbb\xbf{"a": 1}', b'{"a": "\xff"}', b'{"a": 1', b"[1, 2]", b"3", b"null", b'"x"',
    ])
    def test_the_quick_path_agrees_with_the_strict_rules(self, raw: bytes) -> None:
        assert _outcome(parse_json_body, raw) == _outcome(strict_parse, raw)

    def test_an_ordinary_request_takes_the_quick_path(self, example_request: dict) -> None:
        """The point of the quick path (a guard: the parity test above passes if it is never taken)."""
        assert _quick_parse(_json(example_request)) == example_request
        assert _quick_parse(b'{"a":1,"a":2}') is None

    def test_duplicates_are_found_whatever_the_spacing(self) -> None:
        for raw in (b'{"a":1,"a":2}', b'{"a" : 1, "a" : 2}', b'{\n  "a": 1,\n  "a": 2\n}', b'{"a"\t:1,"a":2}'):
            assert _outcome(parse_json_body, raw)[::2] == ("refused", "duplicate_key"), raw


class TestIdempotentLinks:
    """A retry under the same Idempotency-Key replaced the page token, so the link of the first response died."""

    def test_every_link_a_response_carried_keeps_working(self, api: Api, example_request: dict) -> None:
        first = api.score(example_request, **{"Idempotency-Key": "retry-links"}).json()
        again = api.score(example_request, **{"Idempotency-Key": "retry-links"}).json()
        assert again["decision_id"] == first["decision_id"]
        assert again["explanation"]["token"] != first["explanation"]["token"]
        for d in (first, again):
            assert api.client.get(f"/v1/explanations/{d['explanation']['token']}").status_code == 200

    def test_concurrent_retries_all_get_working_links(self, api: Api, example_request: dict) -> None:
        with ThreadPoolExecutor(max_workers=20) as pool:
            responses = list(pool.map(lambda _: api.score(example_request, **{"Idempotency-Key": "burst"}),
                                      range(20)))
        assert [r.status_code for r in responses] == [200] * 20, [r.text for r in responses if r.status_code != 200]
        assert len({r.json()["decision_id"] for r in responses}) == 1
        tokens = {r.json()["explanation"]["token"] for r in responses}
        assert len(tokens) == 20
        for token in tokens:
            assert api.client.get(f"/v1/explanations/{token}").status_code == 200


class TestPagination:
    """The review queue was cut at 100 and ignored limit and offset: 5 of 105 applicants' requests were invisible."""

    def test_every_review_request_is_reachable(self, api: Api, example_request: dict) -> None:
        tokens = []
        for start in (0, 100):
            items = [body_with(example_request, **{"application.application_id": f"app-{i}"})
                     for i in range(start, min(start + 100, 105))]
            r = api.client.post("/v1/scores/batch", json={"items": items}, headers=api.headers())
            assert r.status_code == 200, r.text
            tokens += [d["explanation"]["token"] for d in r.json()["items"]]
        for token in tokens:
            r = api.client.post(f"/v1/explanations/{token}/review", data={"note": "please"}, follow_redirects=False)
            assert r.status_code == 303
        first = self.page(api, "status=pending")
        assert len(first["items"]) == 100 and first["next_cursor"]  # the default page size, and more to come
        seen, cursor = [], None
        while True:
            page = self.page(api, "status=pending&limit=40" + (f"&cursor={cursor}" if cursor else ""))
            assert len(page["items"]) <= 40
            seen += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        ids = [i["id"] for i in seen]
        assert ids == sorted(set(ids))  # oldest first, none repeated
        assert [i["id"] for i in seen[:100]] == [i["id"] for i in first["items"]]
        assert sum(i["requested_by"] == "applicant" for i in seen) == 105

    def test_reviews_arriving_between_pages_are_neither_skipped_nor_repeated(self, api: Api,
                                                                             example_request: dict) -> None:
        def ask(n: int, start: int) -> None:
            items = [body_with(example_request, **{"application.application_id": f"app-{start + i}"})
                     for i in range(n)]
            for d in api.client.post("/v1/scores/batch", json={"items": items}, headers=api.headers()).json()["items"]:
                api.client.post(f"/v1/explanations/{d['explanation']['token']}/review", data={"note": "x"},
                                follow_redirects=False)

        ask(5, 0)
        first = self.page(api, "status=pending&limit=4")
        ask(5, 100)  # new requests arrive while the reviewer works through the queue
        seen, cursor = list(first["items"]), first["next_cursor"]
        while cursor:
            page = self.page(api, f"status=pending&limit=4&cursor={cursor}")
            seen += page["items"]
            cursor = page["next_cursor"]
        ids = [i["id"] for i in seen]
        assert ids == sorted(set(ids))
        assert sum(i["requested_by"] == "applicant" for i in seen) == 10

    def test_bad_paging_parameters(self, api: Api) -> None:
        huge = "eyJhZnRlciI6IDE4NDQ2NzQ0MDczNzA5NTUxNjE2fQ"  # {"after": 2**64}: past any database integer
        for query, loc in (("limit=0", ["query", "limit"]), ("limit=501", ["query", "limit"]),
                           ("cursor=bm90LWEtY3Vyc29y", ["query", "cursor"]), ("cursor=%25%25", ["query", "cursor"]),
                           (f"cursor={huge}", ["query", "cursor"])):
            r = api.client.get(f"/v1/reviews?{query}", headers=api.headers())
            assert r.status_code == 422, query
            assert error_of(r)["errors"][0]["loc"] == loc

    @staticmethod
    def page(api: Api, query: str) -> dict:
        r = api.client.get(f"/v1/reviews?{query}", headers=api.headers())
        assert r.status_code == 200, r.text
        return r.json()


class TestMigration:
    """Revision 0003 moves page tokens to their own table and seals rows written before sealing existed."""

    def test_a_database_from_0002_upgrades_and_verifies(self, database_url: str, champion_registry: Path) -> None:
        from alembic import command
        from alembic.config import Config

        from service import audit
        from service.db import repo
        from service.db.session import MIGRATIONS, make_engine, migrate
        from service.db.tables import Consent, Decision, Review, Tenant

        engine = make_engine(database_url)
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0002")
        token = "old-token-issued-before-0003"  # noqa: S105 - a test value
        with Session(engine) as session:  # rows as the release before 0003 wrote them
            tenant = Tenant(name="old-lender")
            session.add(tenant)
            session.flush()
            d = Decision(id="d" * 32, tenant_id=tenant.id, application_ref="APP-1", applicant_ref="r" * 64,
                         input_digest="i" * 64, model_version="m1", policy_version="p@1", pd=0.1, score=600.0,
                         grade="C", decision="refer", offer=None, reasons=[], explanation={}, features={},
                         context={}, sources_used=[])
            session.add(d)
            session.flush()
            repo.append_audit(session, tenant_id=tenant.id, actor="old", action="decision.created", subject=d.id,
                              payload={"record_digest": repo.decision_digest(d)})
            session.add_all([Consent(tenant_id=tenant.id, applicant_ref=d.applicant_ref, decision_id=d.id,
                                     source="tax", granted=True),
                             Review(decision_id=d.id, tenant_id=tenant.id, requested_by="policy")])
            session.commit()
        with engine.begin() as conn:
            conn.execute(text("UPDATE decisions SET token_hash = :h, token_expires_at = :e"),
                         {"h": repo.sha256_hex(token), "e": dt.datetime.now(dt.UTC) + dt.timedelta(days=1)})
        migrate(engine)
        with Session(engine) as session:
            assert audit.verify(session)[1] == []
            found = repo.get_by_token(session, token=token)
            assert found is not None and found[0].id == "d" * 32
            baseline = [e for e in session.scalars(select(AuditEvent)) if e.action == "audit.baseline"]
            assert len(baseline) == 1 and sorted(baseline[0].payload["sealed"]) == [
                "consents:1", "reviews:1", "tenants:1"]
        with engine.begin() as conn:
            assert "token_hash" not in {c["name"] for c in inspect(conn).get_columns("decisions")}
            conn.execute(text("UPDATE reviews SET outcome = 'approve'"))
        with Session(engine) as session:
            assert [p.where for p in audit.verify(session)[1]] == ["reviews:1"]
        engine.dispose()
