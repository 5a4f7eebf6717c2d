"""Explanations: invariants over generated applicants, recourse that re-scores to what it claims, the page."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import update

from service.db.tables import ExplanationLink
from service.runtime import DEFAULT_POLICY
from service.scoring.bundle import load_bundle
from service.scoring.catalog import BY_NAME, MISSING_DATA, PROTECTED_FIELDS
from service.scoring.engine import Engine
from service.scoring.explain import ACTIONS, MAX_RECOURSE
from service.scoring.policy import load_policy
from service.scoring.raw import MONTHLY_SOURCES, RawData
from service.scoring.registry import Registry
from tests.api_fixtures import Api, make_api


@pytest.fixture(scope="module")
def engine(champion_registry: Path) -> Engine:
    return Engine(load_bundle(champion_registry / Registry(champion_registry).champion()))


@pytest.fixture(scope="module")
def policy():  # noqa: ANN201
    return load_policy(DEFAULT_POLICY)


def one_applicant(raw: RawData, row: int, amount_factor: float) -> RawData:
    single = raw.select(np.array([row]))
    single.applications["requested_amount"] = np.clip(single.applications["requested_amount"] * amount_factor,
                                                      1000, 1e8)
    return single


applicants = st.tuples(st.integers(0, 299), st.sets(st.sampled_from(MONTHLY_SOURCES)),
                       st.sampled_from([0.25, 1.0, 4.0, 16.0]))


class TestInvariants:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(applicant=applicants)
    def test_every_decision_is_consistent(self, engine: Engine, policy, small_raw: RawData, applicant) -> None:  # noqa: ANN001
        row, consented, factor = applicant
        raw = one_applicant(small_raw, row, factor)
        [s] = engine.score(raw, policy, allowed_sources=sorted(consented))
        scorer = engine.bundle.scorer

        # base value plus contributions is the model's raw score
        assert s.base_value + s.contributions.sum() == pytest.approx(s.margin, abs=1e-6)
        assert engine.bundle.margin(s.features[None, :])[0] == pytest.approx(s.margin, abs=1e-9)
        # points add up to the score, and groups to the points
        base_score = scorer.scaling.score_from_logit(scorer.calibration.logit(np.array([s.base_value])))[0]
        unclipped = engine.unclipped_score(np.array([s.margin]))[0]
        assert base_score + s.points.sum() == pytest.approx(unclipped, abs=1e-6)
        assert sum(s.groups.values()) == pytest.approx(s.points.sum(), abs=1e-9)
        assert s.score == np.clip(round(unclipped), 300, 900)
        # sources: only consented ones are used; features of the others are missing
        assert set(s.sources_used) <= consented
        for j, name in enumerate(engine.names):
            if not set(BY_NAME[name].sources) & (consented | {"profile", "application", "coverage"}):
                assert math.isnan(s.features[j]), name
        # the decision and what comes with it
        assert s.outcome.decision in ("approve", "refer", "decline")
        if s.outcome.decision == "approve":
            assert s.reasons == () and s.recourse is None
            return
        assert 1 <= len(s.reasons) <= 4 or all(v > -0.5 for g, v in s.groups.items() if g != MISSING_DATA)
        impacts = [r.impact_points for r in s.reasons]
        assert impacts == sorted(impacts) and all(i <= -0.5 for i in impacts)
        for r in s.reasons:
            j = engine.names.index(r.feature)
            assert not math.isnan(s.features[j])  # a scored feature, never an absent source
            # computed from consented data only (a fallback feature such as loan_to_revenue needs one source)
            assert set(BY_NAME[r.feature].sources) & (consented | {"profile", "application", "coverage"})
            assert not any(p in r.feature for p in ("owner", *PROTECTED_FIELDS))
            assert r.impact_points == round(s.groups[r.group], 2)  # the chart and the reason say the same
            assert s.points[j] < 0  # the named factor itself pushed toward decline
            assert r.text_zh and r.text_en
        self.check_recourse(engine, policy, raw, s)

    def check_recourse(self, engine: Engine, policy, raw: RawData, s) -> None:  # noqa: ANN001
        rec = s.recourse
        assert rec is not None and len(rec.suggestions) <= MAX_RECOURSE
        current = engine.unclipped_score(np.array([s.margin]))[0]
        combined = s.features.copy()
        for sug in rec.suggestions:
            f = BY_NAME[sug.feature]
            assert f.actionable and sug.feature in ACTIONS
            assert f.source not in ("profile",) and f.group != "business_profile"
            assert (sug.target - sug.current) * -f.direction > 0  # only in the catalogue's good direction
            trial = s.features.copy()
            trial[engine.names.index(sug.feature)] = sug.target
            gained = engine.unclipped_score(engine.bundle.margin(trial[None, :]))[0] - current
            assert gained == pytest.approx(sug.score_gain, abs=0.01)  # re-scored, as claimed
            assert sug.score_gain > 0
            combined[engine.names.index(sug.feature)] = sug.target
        again = engine.unclipped_score(engine.bundle.margin(combined[None, :]))[0]
        assert again == pytest.approx(rec.combined_score, abs=0.01)
        assert (rec.note_en.startswith("With all of the above")) == rec.flips


class TestRecourseExample:
    def test_a_declined_applicant_gets_reasons_and_recourse_that_raise_the_score(self, api: Api,
                                                                                  example_request: dict,
                                                                                  small_raw: RawData) -> None:
        from service.batch.requests import request_for

        declined = None
        for application_id in small_raw.applications["application_id"][:80]:
            d = api.score(request_for(small_raw, str(application_id))).json()
            if d["decision"] == "decline" and d["recourse"]["suggestions"]:
                declined = d
                break
        assert declined is not None
        assert 1 <= len(declined["reasons"]) <= 4
        assert all(r["text_zh"] and r["text_en"] for r in declined["reasons"])
        for s in declined["recourse"]["suggestions"]:
            assert s["score_gain"] > 0 and s["text_zh"] and s["text_en"] and s["months"] >= 0


@pytest.fixture()
def page_api(champion_registry: Path, tmp_path: Path) -> Api:
    api = make_api(f"sqlite:///{tmp_path}/db.sqlite", champion_registry)
    with api.client:
        yield api


def declined_body(api: Api, small_raw: RawData) -> tuple[dict, dict]:
    from service.batch.requests import request_for

    for application_id in small_raw.applications["application_id"][:80]:
        body = request_for(small_raw, str(application_id))
        d = api.score(body).json()
        if d["decision"] == "decline":
            return body, d
    raise AssertionError("no declined applicant among 80 synthetic applicants")


class TestPage:
    def test_chinese_by_default_english_on_request(self, page_api: Api, small_raw: RawData) -> None:
        _, d = declined_body(page_api, small_raw)
        url = d["explanation"]["url"].replace(page_api.settings.public_base_url, "")
        zh = page_api.client.get(url)
        assert zh.status_code == 200 and 'lang="zh-CN"' in zh.text
        assert d["reasons"][0]["text_zh"] in zh.text and "<svg" in zh.text and "<rect" in zh.text
        en = page_api.client.get(url + "?lang=en")
        assert 'lang="en"' in en.text and d["reasons"][0]["text_en"] in en.text
        assert 'lang="en"' in page_api.client.get(url, headers={"Accept-Language": "en-GB,en;q=0.9"}).text
        assert 'lang="zh-CN"' in page_api.client.get(url, headers={"Accept-Language": "zh-CN,en;q=0.5"}).text
        for header in ("Content-Security-Policy", "Referrer-Policy", "Cache-Control"):
            assert header in zh.headers
        assert "<script" not in zh.text

    def test_one_token_opens_one_decision(self, page_api: Api, small_raw: RawData) -> None:
        from service.batch.requests import request_for

        _, mine = declined_body(page_api, small_raw)
        other_id = next(str(a) for a in small_raw.applications["application_id"] if a != mine["application_id"])
        other = page_api.score(request_for(small_raw, other_id)).json()
        page = page_api.client.get(f"/v1/explanations/{mine['explanation']['token']}").text
        assert mine["decision_id"] in page and other["decision_id"] not in page
        assert page_api.client.get("/v1/explanations/not-a-real-token").status_code == 404
        assert page_api.client.get(f"/v1/explanations/{mine['explanation']['token']}x").status_code == 404

    def test_an_expired_token_opens_nothing(self, page_api: Api, small_raw: RawData) -> None:
        _, d = declined_body(page_api, small_raw)
        with page_api.client.app.state.sessions.begin() as session:
            session.execute(update(ExplanationLink).where(ExplanationLink.decision_id == d["decision_id"])
                            .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)))
        r = page_api.client.get(f"/v1/explanations/{d['explanation']['token']}?lang=en")
        assert r.status_code == 410 and "expired" in r.text and d["decision_id"] not in r.text

    def test_asking_for_a_human_review_lands_in_the_queue(self, page_api: Api, small_raw: RawData) -> None:
        _, d = declined_body(page_api, small_raw)
        token = d["explanation"]["token"]
        for _ in range(2):  # asking twice opens one review
            r = page_api.client.post(f"/v1/explanations/{token}/review?lang=en", content="note=I+have+new+orders",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"},
                                     follow_redirects=False)
            assert r.status_code == 303
        queue = page_api.client.get("/v1/reviews?status=pending", headers=page_api.headers("review")).json()["items"]
        mine = [q for q in queue if q["decision_id"] == d["decision_id"]]
        assert [(q["requested_by"], q["request_note"]) for q in mine] == [("applicant", "I have new orders")]
        page = page_api.client.get(f"/v1/explanations/{token}?lang=en").text
        assert "being handled" in page and "/review?" not in page  # the review form is gone
        card = page_api.client.get(f"/v1/decisions/{d['decision_id']}/explanation", headers=page_api.headers())
        assert card.status_code == 200  # the reviewer sees the full card of the decision

    def test_the_model_card_is_served(self, page_api: Api, champion_registry: Path) -> None:
        version = Registry(champion_registry).champion()
        r = page_api.client.get(f"/v1/models/{version}/card", headers=page_api.headers("score"))
        assert r.status_code == 200 and version in r.text and "<svg" in r.text
        assert page_api.client.get(f"/v1/models/{version}/card").status_code == 401


def test_the_access_log_never_shows_a_token(page_api: Api, small_raw: RawData, caplog) -> None:  # noqa: ANN001
    import logging

    _, d = declined_body(page_api, small_raw)
    token = d["explanation"]["token"]
    with caplog.at_level(logging.INFO, logger="smecredit.access"):
        page_api.client.get(f"/v1/explanations/{token}")
        page_api.client.get(f"/v1/decisions/{d['decision_id']}", headers=page_api.headers())
    # The service's own log lines (the test's HTTP client logs its URLs; that is not the service).
    served = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith(("smecredit", "uvicorn")))
    assert "GET /v1/explanations/{token} 200" in served
    assert "GET /v1/decisions/{decision_id} 200" in served
    assert token not in served and d["decision_id"] not in served


def test_an_applicant_can_ask_for_review_of_a_referred_decision(page_api: Api, small_raw: RawData) -> None:
    from service.batch.requests import request_for

    referred = None
    for application_id in small_raw.applications["application_id"][:80]:
        d = page_api.score(request_for(small_raw, str(application_id))).json()
        if d["decision"] == "refer" and not d["data_requests"]:  # in a person's queue (not waiting for data)
            referred = d
            break
    assert referred is not None
    token = referred["explanation"]["token"]
    page_api.client.post(f"/v1/explanations/{token}/review", content="note=new+contract+signed",
                         headers={"Content-Type": "application/x-www-form-urlencoded"}, follow_redirects=False)
    queue = page_api.client.get("/v1/reviews?status=pending", headers=page_api.headers("review")).json()["items"]
    mine = sorted((q["requested_by"], q["request_note"]) for q in queue if q["decision_id"] == referred["decision_id"])
    assert mine == [("applicant", "new contract signed"), ("policy", "referred by the lender policy")]
    assert "being handled" in page_api.client.get(f"/v1/explanations/{token}?lang=en").text
    page_api.client.post(f"/v1/reviews/{referred['decision_id']}", headers=page_api.headers("review"),
                         json={"outcome": "approve", "reason": "contract verified", "reviewer": "zhao"})
    queue = page_api.client.get("/v1/reviews?status=pending", headers=page_api.headers("review")).json()["items"]
    assert not [q for q in queue if q["decision_id"] == referred["decision_id"]]


# ---------------------------------------------------------------------------------------------------------
# The page of issue 14: the rules' remedies first when a rule decides, the score on its scale, plain headlines.


def application_where(engine: Engine, policy, raw: RawData, want) -> str:  # noqa: ANN001
    """The id of the first application of ``raw`` whose decision ``want`` accepts (decided here, then over HTTP)."""
    for i, s in enumerate(engine.score(raw.select(np.arange(800)), policy)):
        if want(s):
            return str(raw.applications["application_id"][i])
    raise AssertionError("no such application among the first 800")


def page_of(api: Api, d: dict, lang: str) -> str:
    r = api.client.get(d["explanation"]["url"].replace(api.settings.public_base_url, "") + f"?lang={lang}")
    assert r.status_code == 200
    return r.text


def knock_out_with_a_remedy(s) -> bool:  # noqa: ANN001
    rules = s.recourse and s.recourse.rules
    return bool(s.outcome.decision == "decline" and rules and rules.decides
                and any(r.code == "TAX_ARREARS" and r.decision for r in rules.remedies))


class TestRemediesOnThePage:
    def test_a_knock_out_decline_shows_its_remedy_first_with_the_decision_it_leads_to(
            self, page_api: Api, engine: Engine, policy, small_raw: RawData) -> None:  # noqa: ANN001
        from markupsafe import escape

        from service.batch.requests import request_for
        from service.web.page import OUTCOMES

        d = page_api.score(request_for(small_raw, application_where(engine, policy, small_raw,
                                                                    knock_out_with_a_remedy))).json()
        rules = d["recourse"]["rules"]
        assert list(d["recourse"])[0] == "rules" and rules["decides"]  # the API shows them first too
        [remedy] = [r for r in rules["remedies"] if r["code"] == "TAX_ARREARS"]
        assert remedy["kind"] == "act" and remedy["changes"][0]["feature"] == "tax_arrears_months_12m"
        for k, lang in enumerate(("zh", "en")):
            page = page_of(page_api, d, lang)
            assert page.index('id="rules"') < page.index('id="chart"') < page.index('id="recourse"')
            rule_item = page[page.index('data-code="TAX_ARREARS"'):]
            rule_item = rule_item[:rule_item.index("</li>")]
            assert escape(remedy[("text_zh", "text_en")[k]]) in rule_item
            assert OUTCOMES[remedy["decision"]][k] in rule_item
            assert escape(rules[("note_zh", "note_en")[k]]) in page

    def test_a_score_decline_keeps_the_suggestions_first(self, page_api: Api, engine: Engine, policy,  # noqa: ANN001
                                                         small_raw: RawData) -> None:
        from service.batch.requests import request_for

        def by_score_with_an_amount(s) -> bool:  # noqa: ANN001
            rules = s.recourse and s.recourse.rules
            return bool(s.outcome.decision == "decline" and rules and not rules.decides and s.recourse.suggestions)

        d = page_api.score(request_for(small_raw, application_where(engine, policy, small_raw,
                                                                    by_score_with_an_amount))).json()
        page = page_of(page_api, d, "en")
        assert page.index('id="chart"') < page.index('id="recourse"') < page.index('id="rules"')

    def test_a_referral_says_a_credit_officer_will_contact_you(self, page_api: Api, engine: Engine, policy,  # noqa: ANN001
                                                               small_raw: RawData) -> None:
        from service.batch.requests import request_for

        d = page_api.score(request_for(small_raw, application_where(
            engine, policy, small_raw, lambda s: s.outcome.decision == "refer"))).json()
        for lang, headline in (("zh", "转人工审核：信贷人员将与您联系"),
                               ("en", "Referred: a credit officer will contact you")):
            page = page_of(page_api, d, lang)
            assert f'id="decision">{headline}</div>' in page
            assert "Declined" not in page and "未通过</div>" not in page

    def test_the_score_stands_on_its_scale(self, page_api: Api, engine: Engine, policy,  # noqa: ANN001
                                           small_raw: RawData) -> None:
        import re

        from service.batch.requests import request_for

        d = page_api.score(request_for(small_raw, application_where(
            engine, policy, small_raw, lambda s: s.outcome.decision == "decline"))).json()
        scaling, cut = engine.bundle.scorer.scaling, policy.spec.cut_offs
        page = page_of(page_api, d, "en")
        gauge = page[page.index('<svg id="gauge"'):]
        gauge = gauge[:gauge.index("</svg>")]
        texts = re.findall(r"<text[^>]*>([^<]*)</text>", gauge)
        assert texts == [str(int(d["score"])), f"{scaling.min_score:.0f}", f"{cut.approve_min_score:.0f} approval",
                         f"{scaling.max_score:.0f}"]
        (x_approve,) = re.findall(r'<line x1="([\d.]+)"', gauge)
        (tip,) = re.findall(r'<path d="M[\d.]+ 18 L[\d.]+ 18 L([\d.]+) 26 Z"', gauge)
        span = scaling.max_score - scaling.min_score
        assert float(x_approve) == pytest.approx((cut.approve_min_score - scaling.min_score) / span * 300, abs=0.05)
        assert float(tip) == pytest.approx((d["score"] - scaling.min_score) / span * 300, abs=0.05)
        assert f"on a scale of {scaling.min_score:.0f} to {scaling.max_score:.0f}" in page
        assert f"credit officer {cut.refer_min_score:.0f}–{cut.approve_min_score - 1:.0f}" in page


def test_an_old_record_without_the_new_fields_still_renders(page_api: Api, engine: Engine, policy,  # noqa: ANN001
                                                             small_raw: RawData) -> None:
    """A decision recorded before issue 14: no scale, no remedies, the rule texts of then."""
    from markupsafe import escape

    from service.batch.requests import request_for
    from service.db.tables import Decision

    d = page_api.score(request_for(small_raw, application_where(engine, policy, small_raw,
                                                                knock_out_with_a_remedy))).json()
    with page_api.client.app.state.sessions.begin() as session:
        explanation = dict(session.get(Decision, d["decision_id"]).explanation)
        del explanation["scale"]
        explanation["recourse"] = {k: v for k, v in explanation["recourse"].items() if k != "rules"}
        explanation["rule_hits"] = [{**h, "text_en": h["text_en"] + " (as worded then)"}
                                    for h in explanation["rule_hits"]]
        session.execute(update(Decision).where(Decision.id == d["decision_id"]).values(explanation=explanation))
    page = page_of(page_api, d, "en")
    assert 'id="gauge"' not in page and f"Score <strong>{int(d['score'])}</strong>" in page
    assert 'id="decision">Declined</div>' in page
    rules = page[page.index('id="rules"'):page.index("</section>", page.index('id="rules"'))]
    assert rules.count('class="rule"') == sum(h["action"] in ("decline", "refer") for h in d["rule_hits"])
    assert "(as worded then)" in rules and 'class="remedy' not in rules
    assert page.index('id="chart"') < page.index('id="rules"')  # nothing says a rule decides: the old order
    for s in d["recourse"]["suggestions"]:
        assert escape(s["text_en"]) in page
    api = page_api.client.get(f"/v1/decisions/{d['decision_id']}", headers=page_api.headers())
    assert api.status_code == 200 and api.json()["recourse"]["rules"] is None
