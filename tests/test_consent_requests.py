"""The applicant's consent page (issue 14 item 4): the lender asks per source, the applicant grants or declines each
on their own page and may withdraw later from the same link, and scoring under the request uses only what was
granted. The page's own browser test is tests/test_consent_browser.py."""

from __future__ import annotations

import copy
import datetime as dt
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, text, update

from service import audit
from service.api.schemas import ScoreRequest
from service.db.repo import sha256_hex
from service.db.tables import AuditEvent, Consent, ConsentGrant, ConsentRequest, RawInput
from service.pseudonyms import keyed, tenant_key
from service.scoring.raw import MONTHLY_SOURCES
from service.web.consent_page import used_for
from tests.api_fixtures import Api, error_of, make_api

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
PURPOSE = "评估本次经营贷款申请 / assess this business loan application"


def ask(api: Api, example: dict, who: str = "all", **overrides: object):  # noqa: ANN201
    body = {"enterprise_id": example["profile"]["enterprise_id"], "sources": list(MONTHLY_SOURCES),
            "purpose": PURPOSE, **overrides}
    return api.client.post("/v1/consent-requests", json=body, headers=api.headers(who))


def page_path(created: dict) -> str:
    return f"/v1/explanations/consent/{created['link']['token']}"


def answer(api: Api, created: dict, choices: dict[str, str], lang: str = "en"):  # noqa: ANN201
    form = "&".join(f"{s}={c}" for s, c in choices.items())
    return api.client.post(f"{page_path(created)}?lang={lang}", content=form, headers=FORM, follow_redirects=False)


def withdraw(api: Api, created: dict, form: str):  # noqa: ANN201
    return api.client.post(f"{page_path(created)}/withdraw?lang=en", content=form, headers=FORM,
                           follow_redirects=False)


def statuses(api: Api, created: dict) -> dict[str, str]:
    r = api.client.get(f"/v1/consent-requests/{created['id']}", headers=api.headers("review"))
    assert r.status_code == 200, r.text
    return {g["source"]: g["status"] for g in r.json()["grants"]}


def under_request(example: dict, created: dict, drop: tuple[str, ...] = ()) -> dict:
    """The example score request naming the consent request instead of carrying the lender's consent."""
    body = copy.deepcopy(example)
    del body["consent"]
    body.pop("related", None)  # sent only when the request asks for links (tests/test_graph_api.py)
    body["consent_request_id"] = created["id"]
    for source in drop:
        body["data"][source] = []
    return body


GRANT_SOME = {"tax": "grant", "payments": "grant", "utilities": "grant", "social_insurance": "decline",
              "bureau": "decline"}


@pytest.fixture()
def page_api(champion_registry: Path, tmp_path: Path) -> Iterator[Api]:
    api = make_api(f"sqlite:///{tmp_path}/db.sqlite", champion_registry)
    with api.client:
        yield api


class TestCreateConsentRequest:
    def test_a_link_shown_once_only_its_hash_and_the_pseudonym_stored(self, api: Api, example_request: dict) -> None:
        r = ask(api, example_request)
        assert r.status_code == 201, r.text
        created = r.json()
        token = created["link"]["token"]
        assert created["link"]["url"] == f"{api.settings.public_base_url}/v1/explanations/consent/{token}"
        assert created["status"] == "pending" and created["language"] == "zh"
        assert [g["status"] for g in created["grants"]] == ["pending"] * len(MONTHLY_SOURCES)
        assert created["link"]["expires_at"] == created["link_expires_at"]
        enterprise = example_request["profile"]["enterprise_id"]
        with api.client.app.state.sessions() as session:
            tenant_id = session.scalar(select(ConsentRequest.tenant_id).where(ConsentRequest.id == created["id"]))
            row = session.get(ConsentRequest, created["id"])
            assert row.token_hash == sha256_hex(token)
            assert row.applicant_ref == created["applicant_ref"]
            assert row.applicant_ref == keyed(tenant_key(api.settings, tenant_id), enterprise)
            stored = [str(getattr(row, c.name)) for c in ConsentRequest.__table__.columns]
            assert not any(token in v or enterprise in v for v in stored)
            event = session.scalars(select(AuditEvent).where(AuditEvent.action == "consent.requested")).one()
            assert event.subject == created["id"] and f"consent_requests:{created['id']}" in event.payload["sealed"]
        got = api.client.get(f"/v1/consent-requests/{created['id']}", headers=api.headers("score")).json()
        assert got["link"] is None and got["grants"] == created["grants"]  # the token is never shown again

    def test_sources_are_kept_in_the_contracts_order(self, api: Api, example_request: dict) -> None:
        created = ask(api, example_request, sources=["bureau", "tax"], language="en").json()
        assert created["sources"] == ["tax", "bureau"] and created["language"] == "en"

    @pytest.mark.parametrize(("change", "detail"), [
        ({"sources": ["tax", "invoices"]}, "body.sources.1: Input should be 'tax', 'payments', 'utilities', "
                                           "'social_insurance', 'bureau' or 'links'"),
        ({"sources": ["tax", "tax"]}, "body.sources: Value error, each source at most once; repeated: tax"),
        ({"sources": []}, "body.sources: List should have at least 1 item after validation, not 0"),
        ({"purpose": " ok "}, "body.purpose: String should have at least 5 characters"),
        ({"purpose": "x" * 501}, "body.purpose: String should have at most 500 characters"),
        ({"language": "fr"}, "body.language: Input should be 'zh' or 'en'"),
        ({"enterprise_id": ""}, "body.enterprise_id: String should have at least 1 character"),
        ({"expires": "never"}, "body.expires: Extra inputs are not permitted"),
    ])
    def test_bad_input_names_the_field_and_the_rule(self, api: Api, example_request: dict, change: dict,
                                                    detail: str) -> None:
        r = ask(api, example_request, **change)
        assert r.status_code == 422 and error_of(r)["detail"] == detail

    def test_a_missing_field_is_named(self, api: Api) -> None:
        r = api.client.post("/v1/consent-requests", json={"sources": ["tax"], "purpose": PURPOSE},
                            headers=api.headers())
        assert r.status_code == 422 and error_of(r)["detail"] == "body.enterprise_id: Field required"

    def test_it_takes_a_key_with_the_score_scope(self, api: Api, example_request: dict) -> None:
        assert ask(api, example_request, who="review").status_code == 403
        assert api.client.post("/v1/consent-requests", json={}).status_code == 401

    def test_another_lenders_request_is_not_found(self, api: Api, example_request: dict) -> None:
        created = ask(api, example_request).json()
        r = api.client.get(f"/v1/consent-requests/{created['id']}", headers=api.headers("other"))
        assert r.status_code == 404 and error_of(r)["detail"] == f"no consent request '{created['id']}' for this lender"


class TestPage:
    def test_chinese_by_default_english_on_request(self, page_api: Api, example_request: dict) -> None:
        created = ask(page_api, example_request).json()
        zh = page_api.client.get(page_path(created))
        assert zh.status_code == 200 and 'lang="zh-CN"' in zh.text
        assert "lender-a" in zh.text and PURPOSE in zh.text and "税务申报与发票" in zh.text
        assert f"保存 {page_api.settings.raw_retention_days} 天" in zh.text and "纳税合规" in zh.text
        assert len(re.findall(r'type="radio" name="(\w+)" value="grant" required', zh.text)) == len(MONTHLY_SOURCES)
        assert not re.search(r"<input[^>]*checked", zh.text)  # nothing is granted by default
        en = page_api.client.get(page_path(created) + "?lang=en")
        assert 'lang="en"' in en.text and "Tax filings and invoices" in en.text and "Tax compliance" in en.text
        for header in ("Content-Security-Policy", "Referrer-Policy", "Cache-Control", "X-Frame-Options"):
            assert header in zh.headers
        assert "<script" not in zh.text
        chose_en = ask(page_api, example_request, language="en").json()
        assert 'lang="en"' in page_api.client.get(page_path(chose_en)).text  # the lender's choice is the default
        assert 'lang="zh-CN"' in page_api.client.get(page_path(chose_en) + "?lang=zh").text

    def test_each_source_says_what_the_model_uses_it_for(self) -> None:
        from service.scoring.catalog import CATALOG

        for source in MONTHLY_SOURCES:
            groups = used_for(source)
            assert groups, source
            assert all(any(f.group == g and source in f.sources for f in CATALOG) for g in groups)
        assert "credit_history" in used_for("bureau") and "tax_compliance" not in used_for("payments")

    def test_the_answer_is_recorded_per_source_and_audited(self, page_api: Api, example_request: dict) -> None:
        created = ask(page_api, example_request).json()
        r = answer(page_api, created, GRANT_SOME)
        assert r.status_code == 303 and r.headers["location"].endswith("?lang=en&done=answered")
        assert statuses(page_api, created) == {s: "granted" if c == "grant" else "declined"
                                               for s, c in GRANT_SOME.items()}
        page = page_api.client.get(r.headers["location"]).text
        assert "Your choices have been recorded." in page and 'name="tax" value="grant"' not in page
        assert page.count("/withdraw?lang=en") == 3  # a withdrawal button per granted source
        with page_api.client.app.state.sessions() as session:
            event = session.scalars(select(AuditEvent).where(AuditEvent.action == "consent.answered")).one()
            assert event.payload["granted"] == ["tax", "payments", "utilities"]
            assert event.payload["declined"] == ["social_insurance", "bureau"]
            assert len([k for k in event.payload["sealed"] if k.startswith("consent_grants:")]) == 5
            assert audit.verify(session)[1] == []

    @pytest.mark.parametrize(("form", "status", "message"), [
        ("tax=grant&payments=grant&utilities=grant&social_insurance=decline", 422,
         "Choose grant or decline for “Credit bureau” (form field bureau: must be grant or decline, exactly once)."),
        ("tax=maybe&payments=grant&utilities=grant&social_insurance=decline&bureau=decline", 422,
         "form field tax: must be grant or decline"),
        ("tax=grant&tax=decline&payments=grant&utilities=grant&social_insurance=decline&bureau=decline", 422,
         "form field tax: must be grant or decline, exactly once"),
        ("invoices=grant&tax=grant&payments=grant&utilities=grant&social_insurance=decline&bureau=decline", 422,
         "Form field invoices: not a source this request asks for."),
    ])
    def test_a_bad_form_is_refused_naming_the_field_and_nothing_is_recorded(
            self, page_api: Api, example_request: dict, form: str, status: int, message: str) -> None:
        created = ask(page_api, example_request).json()
        r = page_api.client.post(f"{page_path(created)}?lang=en", content=form, headers=FORM, follow_redirects=False)
        assert r.status_code == status and message in r.text.replace("&#34;", '"')
        assert 'id="error"' in r.text and 'name="tax" value="grant"' in r.text  # the form again, to fix
        assert set(statuses(page_api, created).values()) == {"pending"}

    def test_the_answer_is_given_once(self, page_api: Api, example_request: dict) -> None:
        created = ask(page_api, example_request).json()
        assert answer(page_api, created, GRANT_SOME).status_code == 303
        again = answer(page_api, created, dict.fromkeys(MONTHLY_SOURCES, "grant"))
        assert again.status_code == 409 and "You have already answered" in again.text
        assert statuses(page_api, created)["bureau"] == "declined"

    def test_withdrawing_a_grant_purges_the_raw_data_and_is_audited(self, page_api: Api,
                                                                    example_request: dict) -> None:
        created = ask(page_api, example_request).json()
        answer(page_api, created, GRANT_SOME)
        scored = page_api.score(under_request(example_request, created, drop=("social_insurance", "bureau")))
        assert scored.status_code == 200, scored.text
        with page_api.client.app.state.sessions() as session:
            assert session.scalar(select(func.count()).select_from(RawInput)
                                  .where(RawInput.decision_id == scored.json()["decision_id"])) == 1
        r = withdraw(page_api, created, "source=payments")
        assert r.status_code == 303 and r.headers["location"].endswith("&done=withdrawn")
        assert statuses(page_api, created)["payments"] == "withdrawn"
        page = page_api.client.get(r.headers["location"]).text
        assert "Withdrawn; the raw data held has been deleted." in page and page.count("/withdraw?lang=en") == 2
        with page_api.client.app.state.sessions() as session:
            assert session.scalar(select(func.count()).select_from(RawInput)) == 0
            event = session.scalars(select(AuditEvent).where(AuditEvent.action == "consent.revoked")).one()
            assert event.actor == "applicant" and event.payload["sources"] == ["payments"]
            assert event.payload["raw_rows_purged"] == 1
            assert any(k.startswith("consent_grants:") for k in event.payload["sealed"])
            assert audit.verify(session)[1] == []
        got = page_api.client.get(f"/v1/decisions/{scored.json()['decision_id']}", headers=page_api.headers())
        assert got.json()["application_id"] is None  # read back from the purged raw input

    @pytest.mark.parametrize(("form", "status", "message"), [
        ("source=bureau", 409, "Form field source: “Credit bureau” is not granted now; there is nothing to withdraw."),
        ("source=invoices", 422, "Form field source: not a source this request asks for."),
        ("", 422, "Form field source: name exactly one source to withdraw."),
        ("source=tax&source=payments", 422, "Form field source: name exactly one source to withdraw."),
    ])
    def test_a_bad_withdrawal_is_refused_naming_the_field(self, page_api: Api, example_request: dict, form: str,
                                                         status: int, message: str) -> None:
        created = ask(page_api, example_request).json()
        answer(page_api, created, GRANT_SOME)
        r = withdraw(page_api, created, form)
        assert r.status_code == status and message in r.text
        assert statuses(page_api, created) == {s: "granted" if c == "grant" else "declined"
                                               for s, c in GRANT_SOME.items()}

    def test_unknown_and_expired_links(self, page_api: Api, example_request: dict) -> None:
        created = ask(page_api, example_request).json()
        assert page_api.client.get("/v1/explanations/consent/not-a-token").status_code == 404
        assert page_api.client.get(page_path(created) + "x").status_code == 404
        past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        with page_api.client.app.state.sessions.begin() as session:  # the time to answer is over, unanswered
            session.execute(update(ConsentRequest).where(ConsentRequest.id == created["id"]).values(expires_at=past))
        r = page_api.client.get(page_path(created) + "?lang=en")
        assert r.status_code == 410 and "This link has expired" in r.text and PURPOSE not in r.text
        assert answer(page_api, created, GRANT_SOME).status_code == 410
        assert page_api.client.get(f"/v1/consent-requests/{created['id']}",
                                   headers=page_api.headers()).json()["status"] == "expired"

    def test_an_answered_page_outlives_the_deadline_for_withdrawal_until_its_end(self, page_api: Api,
                                                                                example_request: dict) -> None:
        created = ask(page_api, example_request).json()
        answer(page_api, created, GRANT_SOME)
        past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        with page_api.client.app.state.sessions.begin() as session:
            session.execute(update(ConsentRequest).where(ConsentRequest.id == created["id"]).values(expires_at=past))
        page = page_api.client.get(page_path(created) + "?lang=en")
        assert page.status_code == 200 and "can no longer assess with them" in page.text
        assert withdraw(page_api, created, "source=tax").status_code == 303
        with page_api.client.app.state.sessions.begin() as session:
            session.execute(update(ConsentRequest).where(ConsentRequest.id == created["id"])
                            .values(link_expires_at=past))
        assert page_api.client.get(page_path(created)).status_code == 410
        assert withdraw(page_api, created, "source=payments").status_code == 410

    def test_the_access_log_never_shows_the_token(self, page_api: Api, example_request: dict, caplog) -> None:  # noqa: ANN001
        created = ask(page_api, example_request).json()
        token = created["link"]["token"]
        with caplog.at_level(logging.INFO, logger="smecredit.access"):
            page_api.client.get(page_path(created))
            answer(page_api, created, GRANT_SOME)
            withdraw(page_api, created, "source=tax")
            page_api.client.get(page_path(created) + "x/y")  # matches no route: redacted
        served = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith(("smecredit", "uvicorn")))
        assert "GET /v1/explanations/consent/{token} 200" in served
        assert "POST /v1/explanations/consent/{token} 303" in served
        assert "POST /v1/explanations/consent/{token}/withdraw 303" in served
        assert token not in served and example_request["profile"]["enterprise_id"] not in served

    def test_the_page_is_rate_limited_per_address(self, champion_registry: Path, tmp_path: Path,
                                                  example_request: dict) -> None:
        api = make_api(f"sqlite:///{tmp_path}/db.sqlite", champion_registry, pages_per_minute=3)
        with api.client:
            created = ask(api, example_request).json()
            codes = [api.client.get(page_path(created)).status_code for _ in range(3)]
            assert codes == [200, 200, 200]
            limited = api.client.get(page_path(created))
            assert limited.status_code == 429 and "page requests in a minute" in error_of(limited)["detail"]
            assert answer(api, created, GRANT_SOME).status_code == 429  # the form too
            assert ask(api, example_request).status_code == 201  # the lender's API is limited per key instead


class TestScoringUnderAConsentRequest:
    def test_only_granted_sources_are_used_and_recorded(self, api: Api, example_request: dict) -> None:
        created = ask(api, example_request).json()
        answer(api, created, GRANT_SOME)
        r = api.score(under_request(example_request, created, drop=("social_insurance", "bureau")))
        assert r.status_code == 200, r.text
        d = r.json()
        granted = {s for s, c in GRANT_SOME.items() if c == "grant"}
        assert set(d["sources_used"]) == {s for s in granted if example_request["data"][s]} != set()
        with api.client.app.state.sessions() as session:
            recorded = dict(session.execute(select(Consent.source, Consent.granted)
                                            .where(Consent.decision_id == d["decision_id"])).all())
            assert recorded == {s: s in granted for s in MONTHLY_SOURCES}
            assert audit.verify(session)[1] == []

    def test_data_for_a_declined_source_is_refused_naming_it(self, api: Api, example_request: dict) -> None:
        created = ask(api, example_request).json()
        answer(api, created, GRANT_SOME)
        assert example_request["data"]["social_insurance"]
        r = api.score(under_request(example_request, created, drop=("bureau",)))
        assert r.status_code == 422
        body = error_of(r)
        assert body["detail"] == (f"body.data.social_insurance: the applicant declined social_insurance in consent "
                                  f"request {created['id']}; do not send data the applicant has not agreed to share")
        assert [e["loc"] for e in body["errors"]] == [["body", "data", "social_insurance"]]
        with api.client.app.state.sessions() as session:  # nothing recorded
            assert session.scalar(select(func.count()).select_from(RawInput)) == 0

    def test_a_withdrawn_source_is_refused_afterwards(self, api: Api, example_request: dict) -> None:
        created = ask(api, example_request).json()
        answer(api, created, GRANT_SOME)
        withdraw(api, created, "source=utilities")
        r = api.score(under_request(example_request, created, drop=("social_insurance", "bureau")))
        assert r.status_code == 422 and error_of(r)["detail"].startswith(
            f"body.data.utilities: the applicant withdrew utilities in consent request {created['id']}")
        ok = api.score(under_request(example_request, created, drop=("social_insurance", "bureau", "utilities")))
        assert ok.status_code == 200 and "utilities" not in ok.json()["sources_used"]

    def test_a_source_not_asked_for_is_refused(self, api: Api, example_request: dict) -> None:
        created = ask(api, example_request, sources=["tax", "payments"]).json()
        answer(api, created, {"tax": "grant", "payments": "grant"})
        r = api.score(under_request(example_request, created, drop=("social_insurance", "bureau")))
        body = error_of(r)
        assert r.status_code == 422 and body["detail"].startswith(
            f"body.data.utilities: utilities was not asked for in consent request {created['id']}")
        assert [e["loc"][-1] for e in body["errors"]] == ["utilities"]

    def test_the_request_must_be_this_lenders_answered_and_current_for_this_applicant(
            self, api: Api, example_request: dict) -> None:
        base = "body.consent_request_id: "
        pending = ask(api, example_request).json()
        r = api.score(under_request(example_request, pending))
        assert error_of(r)["detail"] == f"{base}the applicant has not answered consent request {pending['id']} yet"
        theirs = ask(api, example_request, who="other").json()
        r = api.score(under_request(example_request, theirs))
        assert error_of(r)["detail"] == f"{base}no consent request {theirs['id']} for this lender"
        someone_else = ask(api, example_request, enterprise_id="E-someone-else").json()
        answer(api, someone_else, GRANT_SOME)
        r = api.score(under_request(example_request, someone_else))
        assert error_of(r)["detail"] == (f"{base}consent request {someone_else['id']} was made for another applicant "
                                         "(profile.enterprise_id differs)")
        answered = ask(api, example_request).json()
        answer(api, answered, GRANT_SOME)
        with api.client.app.state.sessions.begin() as session:
            session.execute(update(ConsentRequest).where(ConsentRequest.id == answered["id"])
                            .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)))
        r = api.score(under_request(example_request, answered, drop=("social_insurance", "bureau")))
        assert r.status_code == 422 and re.fullmatch(
            rf"{re.escape(base)}consent request {answered['id']} expired at \S+; ask the applicant again with a new "
            "one", error_of(r)["detail"])

    def test_exactly_one_of_consent_and_consent_request_id(self, api: Api, example_request: dict) -> None:
        both = {**example_request, "consent_request_id": "0" * 32}
        r = api.score(both)
        assert r.status_code == 422 and error_of(r)["detail"] == (
            "body.consent: give exactly one of consent (the lender's record) and consent_request_id (the "
            "applicant's own answers)")
        neither = {k: v for k, v in example_request.items() if k not in ("consent", "related")}
        assert error_of(api.score(neither))["detail"].endswith("; neither was given")
        r = api.score({**neither, "consent_request_id": "not-an-id"})
        assert error_of(r)["detail"] == "body.consent_request_id: String should match pattern '^[0-9a-f]{32}$'"

    def test_a_batch_names_the_item(self, api: Api, example_request: dict) -> None:
        created = ask(api, example_request).json()
        answer(api, created, GRANT_SOME)
        items = [example_request, under_request(example_request, created, drop=("bureau",))]
        r = api.client.post("/v1/scores/batch", json={"items": items}, headers=api.headers())
        assert r.status_code == 422 and error_of(r)["detail"].startswith("body.items.1.data.social_insurance: ")


def test_a_request_without_a_consent_request_is_recorded_as_before(example_request: dict) -> None:
    """Its payload (and so its keyed digest, which an idempotent retry across the upgrade compares) has no new key."""
    parsed = ScoreRequest.model_validate(example_request)
    payload = parsed.payload()
    assert "consent_request_id" not in payload and payload["consent"] == example_request["consent"]
    dumped = parsed.model_dump(mode="json")
    assert dumped["consent_request_id"] is None and dumped["related"] is None and dumped["consent"]["links"] is None
    del dumped["consent_request_id"], dumped["related"], dumped["consent"]["links"]  # nor links consent, related
    assert payload == dumped


def test_a_payload_whose_consent_request_id_is_null_uses_its_own_consent(page_api: Api, example_request: dict) -> None:
    """The use case reads grants only for a payload that names a consent request: a full dump (the key present,
    null) is scored with the lender's consent, not refused as an unknown request."""
    import asyncio

    from service.db import repo
    from service.usecases import scoring

    state = page_api.client.app.state
    with state.read_sessions() as session:
        tenant = repo.authenticate(session, key=page_api.keys["score"])[0]
    dumped = ScoreRequest.model_validate(example_request).model_dump(mode="json")
    assert dumped["consent_request_id"] is None
    issued = asyncio.run(scoring.decide(state.recorder, engine=state.champion.get(),
                                        policy=state.policies.for_tenant(None), tenant_id=tenant.id, actor="test",
                                        payloads=[dumped]))
    assert len(issued) == 1 and issued[0].record.sources_used


def test_an_edited_grant_fails_the_audit(page_api: Api, example_request: dict) -> None:
    created = ask(page_api, example_request).json()
    answer(page_api, created, GRANT_SOME)
    with page_api.client.app.state.sessions.begin() as session:
        grant_id = session.scalar(select(ConsentGrant.id).where(ConsentGrant.request_id == created["id"],
                                                                ConsentGrant.source == "social_insurance"))
        session.execute(text("UPDATE consent_grants SET granted = :t WHERE id = :i"), {"t": True, "i": grant_id})
    with page_api.client.app.state.sessions() as session:
        problems = audit.verify(session)[1]
    assert [(p.where, p.what) for p in problems] == [
        (f"consent_grants:{grant_id}", "differs from what its last audit event recorded (edited)")]


def test_the_migration_creates_the_tables_the_model_declares(database_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from service.db.session import make_engine, migrate
    from service.db.tables import Base

    engine = make_engine(database_url)
    try:
        migrate(engine)
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert [d for d in diff if "consent_requests" in repr(d) or "consent_grants" in repr(d)] == []
    finally:
        engine.dispose()


def test_the_page_is_never_traced(champion_registry: Path, tmp_path: Path, example_request: dict) -> None:
    pytest.importorskip("opentelemetry.sdk", reason="the tracing extra is not installed (pip install '.[tracing]')")
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from service import tracing

    api = make_api(f"sqlite:///{tmp_path}/db.sqlite", champion_registry)
    app = api.client.app
    exporter = InMemorySpanExporter()
    provider = tracing.install(app, [app.state.engine, app.state.read_engine], exporter=exporter, batch=False)
    try:
        with api.client:
            created = ask(api, example_request).json()
            assert api.client.get(page_path(created)).status_code == 200
            assert answer(api, created, GRANT_SOME).status_code == 303
            assert withdraw(api, created, "source=tax").status_code == 303
        provider.force_flush()
        spans = exporter.get_finished_spans()
    finally:
        tracing.uninstall(app)
        app.state.engine.dispose()
    assert [s.name for s in spans if s.kind.name == "SERVER"] == ["POST /v1/consent-requests"]
    everything = repr([(s.name, dict(s.attributes)) for s in spans])
    assert created["link"]["token"] not in everything and example_request["profile"]["enterprise_id"] not in everything


def test_concurrent_answers_record_one(api: Api, example_request: dict) -> None:
    """Two tabs submitting at once: the request row is locked while answering, so one answer wins and the others
    get 409; never two sets of grants."""
    from concurrent.futures import ThreadPoolExecutor

    created = ask(api, example_request).json()
    variants = [dict.fromkeys(MONTHLY_SOURCES, "grant"), dict.fromkeys(MONTHLY_SOURCES, "decline")] * 3
    with ThreadPoolExecutor(len(variants)) as pool:
        codes = sorted(pool.map(lambda choices: answer(api, created, choices).status_code, variants))
    assert codes == [303] + [409] * (len(variants) - 1)
    with api.client.app.state.sessions() as session:
        rows = session.scalars(select(ConsentGrant).where(ConsentGrant.request_id == created["id"])).all()
        assert len(rows) == len(MONTHLY_SOURCES) and len({r.granted for r in rows}) == 1
        assert audit.verify(session)[1] == []


def test_a_withdrawal_made_another_way_counts_on_the_page_and_for_scoring(api: Api, example_request: dict) -> None:
    """The lender's withdrawal endpoint (or the explanation page's button) after the grant: the consent request
    shows the source withdrawn, offers no button for it, and a score under it may no longer send it."""
    created = ask(api, example_request).json()
    answer(api, created, GRANT_SOME)
    body = under_request(example_request, created, drop=("social_insurance", "bureau"))
    assert api.score(body).status_code == 200
    revoked = api.client.post(f"/v1/applicants/{created['applicant_ref']}/consents/revoke", headers=api.headers(),
                              json={"sources": ["tax"], "reason": "asked by phone"})
    assert revoked.status_code == 200, revoked.text
    assert statuses(api, created) == {"tax": "withdrawn", "payments": "granted", "utilities": "granted",
                                      "social_insurance": "declined", "bureau": "declined"}
    page = api.client.get(page_path(created) + "?lang=en").text
    assert page.count("/withdraw?lang=en") == 2 and 'id="grant-tax"' in page
    r = api.score(body)
    assert r.status_code == 422 and error_of(r)["detail"].startswith(
        f"body.data.tax: the applicant withdrew tax in consent request {created['id']}")


def test_the_forms_take_url_encoded_utf8_only(page_api: Api, example_request: dict) -> None:
    created = ask(page_api, example_request).json()
    r = page_api.client.post(page_path(created), json={"tax": "grant"})
    assert r.status_code == 415 and error_of(r)["detail"].startswith("header.Content-Type")
    r = page_api.client.post(page_path(created), content="tax=gr%00ant", headers=FORM)
    assert r.status_code == 422 and error_of(r)["errors"][0]["loc"] == ["body", "tax"]
    assert set(statuses(page_api, created).values()) == {"pending"}
