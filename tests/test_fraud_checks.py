"""Application fraud checks (issue 15, part 3): the policy's ``fraud_checks`` run before the credit rules, on
features (one may be relative to the industry median) and on velocity counts read from the decision records;
each hit is a RuleHit recorded, audited and shown like a credit rule's, in neutral words on the applicant's page."""

from __future__ import annotations

import copy
import datetime as dt
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import event, insert, select, update
from sqlalchemy.orm import Session

from service import audit
from service.db import repo
from service.db.session import make_engine, migrate
from service.db.tables import Base, Decision, Review, VelocityKey
from service.db.velocity import ApplicationKeys, counts, forget_links, keys_of, read
from service.pseudonyms import keyed, tenant_key
from service.scoring.catalog import BY_NAME
from service.scoring.policy import Policy, PolicyError, PolicyInput, RuleHit
from service.scoring.record import data_requests
from tests.api_fixtures import Api, make_api

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "service" / "policies" / "default.yaml"
DEFAULT_TEXT = DEFAULT_PATH.read_text(encoding="utf-8")
NEUTRAL_EN, NEUTRAL_ZH = "we need to confirm this application with you", "我们需要与您核实本次申请"


@pytest.fixture(scope="module")
def example_request(linked_raw) -> dict:  # noqa: ANN001
    """The example request of a linked firm: with its related records and links consent, whose owner, phone and
    account become velocity keys."""
    from service.batch.requests import request_for

    return request_for(linked_raw)


def check(**fields: Any) -> dict[str, Any]:
    return {"code": "CHECK", "action": "refer", "text_en": NEUTRAL_EN, "text_zh": NEUTRAL_ZH, **fields}


def policy_with(*checks: dict[str, Any], lenient: bool = False) -> Policy:
    return Policy.from_yaml(policy_text(list(checks), lenient=lenient), source="bank.yaml")


def policy_text(checks: list[dict[str, Any]], *, lenient: bool = False) -> str:
    """The default policy with these fraud checks; ``lenient``: credit rules that approve nearly anything, so
    that only the fraud checks decide."""
    data = yaml.safe_load(DEFAULT_TEXT)
    data["fraud_checks"] = checks
    if lenient:
        data.update(knock_outs=[], cut_offs={"approve_min_score": 0, "refer_min_score": 0})
        data["limit"]["min_limit"] = data["limit"]["round_to"] = 1
        data["limit"]["revenue_months_by_grade"] = dict.fromkeys(data["limit"]["revenue_months_by_grade"], 3.0)
        data["pricing"].update(rate_cap=1.0, lpr_1y=0.25)
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


def make_input(**overrides: Any) -> PolicyInput:
    """A clean grade-B retailer (industry F) that the default credit rules approve."""
    features = {"biz_age_months": 48.0, "tax_grade": 3.0, "tax_arrears_months_12m": 0.0,
                "util_arrears_months_12m": 0.0, "bureau_worst_dpd_12m": 0.0, "elec_intensity_change_12m": 0.0,
                "xsrc_declared_to_inflow_6m": 1.1, "xsrc_elec_per_revenue_12m": 100.0}
    fields: dict[str, Any] = {
        "pd": 0.02, "score": 620.0, "grade": "B", "features": features, "industry": "F", "region": "east",
        "legal_form": "company", "application_date": dt.date(2025, 3, 10), "requested_amount": 200_000.0,
        "term_months": 12, "purpose": "working_capital", "monthly_revenue": 150_000.0,
        "velocity": {"velocity_firm_30d": 1.0, "velocity_purposes_30d": 1.0, "velocity_firm_7d": 1.0},
        "sector": {"xsrc_declared_to_inflow_6m": 1.2, "xsrc_elec_per_revenue_12m": 100.0},
    }
    return PolicyInput(**{**fields, **overrides})


def with_features(**values: float) -> dict[str, float]:
    return {**make_input().features, **values}


def codes(outcome: Any) -> list[str]:  # noqa: ANN401
    return [h.code for h in outcome.rule_hits]


# ---------------------------------------------------------------------------------------------------------
# Loading: the section is validated like the others, errors name the file and the key path


class TestLoading:
    @pytest.mark.parametrize(("checks", "error"), [
        ([check(feature="velocity_firm_30d", op=">=", value=3, severity="high")],
         "bank.yaml: fraud_checks[0].severity: unknown key"),
        ([check(feature="velocity_firms_30d", op=">=", value=3)],
         "bank.yaml: fraud_checks[0].feature: unknown feature 'velocity_firms_30d'; a fraud check reads a feature of "
         "the catalogue (docs/features.md), a velocity count velocity_<firm|owner|phone|account|purposes>_<days>d or "
         "the fraud model's fraud_score or fraud_flag"),
        ([check(feature="graph_ring_score", op=">=", value=0.5)],
         "bank.yaml: fraud_checks[0].feature: unknown feature 'graph_ring_score'"),
        ([check(feature="velocity_firm_30d", op=">=", value=3, action="block")],
         "bank.yaml: fraud_checks[0].action: Input should be 'decline', 'refer' or 'request_data', got 'block'"),
        ([check(feature="velocity_firm_30d", op="=>", value=3)],
         "bank.yaml: fraud_checks[0].op: Input should be '<', '<=', '>', '>=', '==' or '!=', got '=>'"),
        ([check(all=[{"feature": "xsrc_declared_to_inflow_6m", "op": ">=", "value": 2},
                     {"feature": "xsrc_elec_per_revenue_12m", "op": "<", "value": 0.5, "relative": "median"}])],
         "bank.yaml: fraud_checks[0].all[1].relative: unknown key"),
        ([check(feature="velocity_firm_30d", op=">=", value=3, relative_to="industry_median")],
         "bank.yaml: fraud_checks[0]: relative_to compares a feature with its industry median; "
         "'velocity_firm_30d' is a velocity count"),
        ([check(feature="loan_purpose", op="==", value=1, relative_to="industry_median")],
         "bank.yaml: fraud_checks[0]: relative_to needs a numeric feature; 'loan_purpose' is categorical"),
        ([check(feature="xsrc_elec_per_revenue_12m", op="<", value=0.5, relative_to="sector_mean")],
         "bank.yaml: fraud_checks[0].relative_to: Input should be 'industry_median', got 'sector_mean'"),
        ([check(feature="velocity_firm_0d", op=">=", value=3)],
         "bank.yaml: fraud_checks[0].feature: a velocity window is 1 to 365 days, got 'velocity_firm_0d'"),
        ([check(feature="velocity_firm_30d", op=">=", value=3, action="request_data")],
         "bank.yaml: fraud_checks[0]: a request_data check names the sources to ask for in requests"),
        ([check(feature="velocity_firm_30d", op=">=", value=3, requests=["payments"])],
         "bank.yaml: fraud_checks[0]: a refer check takes no requests"),
        ([check(feature="velocity_firm_30d", op=">=", value=3, action="request_data", requests=["bank_statements"])],
         "bank.yaml: fraud_checks[0].requests[0]: Input should be 'tax', 'payments', 'utilities', 'social_insurance'"),
        ([check(feature="velocity_firm_30d", op=">=")],
         "bank.yaml: fraud_checks[0]: give feature, op and value (missing value), or all: a list of conditions"),
        ([check(feature="velocity_firm_30d", op=">=", value=3,
                all=[{"feature": "velocity_firm_7d", "op": ">=", "value": 2}])],
         "bank.yaml: fraud_checks[0]: give either feature, op and value or all, not both"),
        ([check(all=[])], "bank.yaml: fraud_checks[0].all: List should have at least 1 item"),
        ([check(code="TAX_ARREARS", feature="velocity_firm_30d", op=">=", value=3)],
         "bank.yaml: knock_outs[2].code: 'TAX_ARREARS' is already used by an earlier rule"),
        ([check(code="SCORE_REVIEW_BAND", feature="velocity_firm_30d", op=">=", value=3)],
         "bank.yaml: fraud_checks[0].code: 'SCORE_REVIEW_BAND' is already used by a built-in rule"),
    ])
    def test_error_names_file_key_path_and_rule(self, checks: list[dict], error: str) -> None:
        with pytest.raises(PolicyError) as caught:
            policy_with(*checks)
        assert str(caught.value).startswith(error), str(caught.value)

    def test_any_feature_of_the_catalogue_can_be_checked(self) -> None:
        """Ring-membership rules on graph features are YAML only once those features join the catalogue."""
        numeric = [n for n, f in BY_NAME.items() if not f.categories]
        policy = policy_with(*(check(code=f"C{i}", feature=n, op=">=", value=1) for i, n in enumerate(BY_NAME)),
                             *(check(code=f"R{i}", feature=n, op="<", value=0.5, relative_to="industry_median")
                               for i, n in enumerate(numeric)))
        assert len(policy.spec.fraud_checks) == len(BY_NAME) + len(numeric)
        assert policy.velocity_windows == ()  # no velocity count named: the service reads nothing

    def test_the_windows_read_are_those_the_checks_name(self) -> None:
        policy = policy_with(check(code="A", feature="velocity_firm_30d", op=">=", value=3),
                             check(code="B", all=[{"feature": "velocity_account_7d", "op": ">=", "value": 2},
                                                  {"feature": "velocity_purposes_30d", "op": ">=", "value": 2}]))
        assert policy.velocity_windows == (7, 30) and policy.fraud_codes == {"A", "B"}

    def test_the_default_policy_has_fraud_checks_with_neutral_texts(self) -> None:
        policy = Policy.from_yaml(DEFAULT_TEXT)
        assert policy.velocity_windows == (7, 30)
        for c in policy.spec.fraud_checks:
            words = f"{c.code} {c.text_en}".lower()
            assert not any(w in words for w in ("fraud", "fake", "suspicious", "ring")), c.code
            assert not any(w in c.text_zh for w in ("欺诈", "造假", "可疑", "团伙")), c.code


# ---------------------------------------------------------------------------------------------------------
# Deciding


class TestDeciding:
    @pytest.mark.parametrize(("action", "decision", "requests"), [
        ("decline", "decline", ()), ("refer", "refer", ()), ("request_data", "refer", ("payments", "utilities"))])
    def test_each_action(self, action: str, decision: str, requests: tuple[str, ...]) -> None:
        policy = policy_with(check(feature="velocity_firm_30d", op=">=", value=3, action=action,
                                   **({"requests": ["utilities", "payments"]} if requests else {})))
        calm = policy.decide(make_input(velocity={"velocity_firm_30d": 2.0}))
        assert (calm.decision, codes(calm)) == ("approve", [])
        outcome = policy.decide(make_input(velocity={"velocity_firm_30d": 3.0}))
        assert outcome.decision == decision and (outcome.offer is None) == (decision == "decline")
        hit = outcome.rule_hits[0]
        assert hit == RuleHit("CHECK", "decline" if action == "decline" else "refer", NEUTRAL_EN, NEUTRAL_ZH,
                              tuple(sorted(requests)))
        # request_data waits for the records it names; a plain referral goes to a person; withheld sources of a
        # consent are not asked for a fraud check's referral
        assert data_requests(outcome, ["bureau"]) == (list(requests) if action == "request_data" else [])

    def test_fraud_checks_come_before_the_credit_rules(self) -> None:
        policy = policy_with(check(feature="velocity_firm_30d", op=">=", value=3))
        outcome = policy.decide(make_input(velocity={"velocity_firm_30d": 5.0}, score=580.0,
                                           features=with_features(util_arrears_months_12m=4.0)))
        assert codes(outcome) == ["CHECK", "UTILITY_ARREARS", "SCORE_REVIEW_BAND"]

    def test_a_data_request_and_a_band_referral_ask_together_another_referral_goes_to_a_person(self) -> None:
        policy = policy_with(check(feature="velocity_firm_30d", op=">=", value=3, action="request_data",
                                   requests=["payments"]))
        both = policy.decide(make_input(velocity={"velocity_firm_30d": 3.0}, score=580.0))
        assert data_requests(both, ["bureau"]) == ["payments", "bureau"]
        with_arrears = policy.decide(make_input(velocity={"velocity_firm_30d": 3.0},
                                                features=with_features(util_arrears_months_12m=4.0)))
        assert with_arrears.decision == "refer" and data_requests(with_arrears, []) == []

    def test_a_missing_count_never_fires(self) -> None:
        policy = policy_with(check(feature="velocity_account_30d", op=">=", value=0))
        assert policy.decide(make_input()).rule_hits == ()  # the applicant named no account (or no consent)
        assert codes(policy.decide(make_input(velocity={"velocity_account_30d": 0.0}))) == ["CHECK"]

    def test_all_conditions_must_hold(self) -> None:
        policy = policy_with(check(all=[{"feature": "velocity_firm_30d", "op": ">=", "value": 3},
                                        {"feature": "velocity_purposes_30d", "op": ">=", "value": 2}]))
        assert policy.decide(make_input(velocity={"velocity_firm_30d": 3.0,
                                                  "velocity_purposes_30d": 1.0})).rule_hits == ()
        assert codes(policy.decide(make_input(velocity={"velocity_firm_30d": 3.0,
                                                        "velocity_purposes_30d": 2.0}))) == ["CHECK"]


class TestCrossSource:
    """The default SALES_TO_VERIFY: declared sales >= 2 x inflow and electricity per revenue < half the median."""

    POLICY = Policy.from_yaml(DEFAULT_TEXT)
    MEDIAN = 100.0

    def decide(self, declared_to_inflow: float, elec: float, median: float | None = MEDIAN) -> Any:  # noqa: ANN401
        sector = {} if median is None else {"xsrc_elec_per_revenue_12m": median}
        return self.POLICY.decide(make_input(
            features=with_features(xsrc_declared_to_inflow_6m=declared_to_inflow, xsrc_elec_per_revenue_12m=elec),
            sector=sector))

    def test_fires_against_the_sector_median(self) -> None:
        outcome = self.decide(2.5, 30.0)
        assert outcome.decision == "refer" and codes(outcome) == ["SALES_TO_VERIFY"]
        assert outcome.rule_hits[0].requests == ("payments", "utilities")
        assert data_requests(outcome, []) == ["payments", "utilities"]

    @pytest.mark.parametrize(("declared_to_inflow", "elec", "median"), [
        (2.5, 100.0, MEDIAN),  # a firm at the sector's median electricity
        (2.5, 50.0, MEDIAN),  # exactly half: not below it
        (1.9, 30.0, MEDIAN),  # sales borne out by the inflows
        (2.5, 30.0, None),  # no median for the sector: nothing to compare with
        (2.5, math.nan, MEDIAN),  # no electricity data
    ])
    def test_does_not_fire(self, declared_to_inflow: float, elec: float, median: float | None) -> None:
        assert "SALES_TO_VERIFY" not in codes(self.decide(declared_to_inflow, elec, median))

    def test_the_threshold_follows_the_sector(self) -> None:
        assert "SALES_TO_VERIFY" in codes(self.decide(2.5, 30.0, median=100.0))
        assert "SALES_TO_VERIFY" not in codes(self.decide(2.5, 30.0, median=50.0))


# ---------------------------------------------------------------------------------------------------------
# Velocity keys and counts, as pure functions of the request's dict


KEY = b"k" * 32


def payload(enterprise: str = "E1", purpose: str = "working_capital", links: bool | None = True,
            related: list[dict] | None = None) -> dict:
    consent: dict[str, Any] = {"tax": True}
    if links is not None:
        consent["links"] = links
    body: dict[str, Any] = {"profile": {"enterprise_id": enterprise}, "consent": consent,
                            "application": {"purpose": purpose, "application_date": "2025-03-10"}}
    if related is not None:
        body["related"] = {"links": related, "guarantees": [], "counterparties": []}
    return body


LINKS = [{"kind": kind, "ref": ref, "since": since} for kind, ref, since in (
    ("owner", "P1", "2020-01-01"), ("legal_rep", "P1", "2020-01-01"), ("address", "ADDR1", "2020-01-01"),
    ("phone", "T1", "2020-01-01"), ("account", "AC1", "2020-01-01"), ("account", "AC2", "2026-01-01"))]


class TestKeys:
    def test_the_firm_and_its_consented_links_keyed(self) -> None:
        keys = keys_of(KEY, payload(related=LINKS))
        assert keys.applicant_ref == keyed(KEY, "E1")  # the decisions' own applicant_ref
        # owner and legal rep are one person; no address (business centres); not a link recorded after applying
        assert keys.links == (("owner", keyed(KEY, "owner:P1")), ("phone", keyed(KEY, "phone:T1")),
                              ("account", keyed(KEY, "account:AC1")))
        assert not {"P1", "T1", "AC1", "E1"} & ({k for _, k in keys.links} | {keys.applicant_ref})

    @pytest.mark.parametrize("links", [False, None])
    def test_links_without_consent_are_not_used(self, links: bool | None) -> None:
        assert keys_of(KEY, payload(links=links, related=LINKS)).links == ()

    def test_no_related_block_gives_the_firm_only(self) -> None:
        keys = keys_of(KEY, payload(related=None))
        assert (keys.links, keys.keys) == ((), (keyed(KEY, "E1"),))


class TestCounts:
    WINDOWS = (7, 30)

    def test_a_first_application(self) -> None:
        (c,) = counts([], [ApplicationKeys("F1", "inventory", (("account", "AC"),))], self.WINDOWS)
        assert c == {"velocity_firm_7d": 1, "velocity_purposes_7d": 1, "velocity_account_7d": 0,
                     "velocity_firm_30d": 1, "velocity_purposes_30d": 1, "velocity_account_30d": 0}

    def test_recorded_applications_by_window(self) -> None:
        found = [("F1", "F1", "inventory", (1, 2)), ("F1", "F1", "equipment", (0, 1)),
                 ("AC", "F1", "inventory", (1, 2)), ("AC", "F2", "expansion", (2, 3)),
                 ("AC", "F3", "expansion", (0, 4)), ("T", "F4", "expansion", (0, 9))]
        (c,) = counts(found, [ApplicationKeys("F1", "inventory", (("account", "AC"), ("account", "AC-2")))],
                      self.WINDOWS)
        assert (c["velocity_firm_7d"], c["velocity_firm_30d"]) == (2, 4)  # this one included
        assert (c["velocity_purposes_7d"], c["velocity_purposes_30d"]) == (1, 2)
        assert (c["velocity_account_7d"], c["velocity_account_30d"]) == (2, 7)  # other firms only, most of its keys
        assert "velocity_phone_30d" not in c and "velocity_owner_30d" not in c  # named none: missing

    def test_a_batch_counts_its_own_earlier_items(self) -> None:
        items = [ApplicationKeys("F1", p, (("phone", "T"),)) for p in ("inventory", "equipment", "inventory")]
        items.append(ApplicationKeys("F2", "expansion", (("phone", "T"),)))
        out = counts([("F1", "F1", "inventory", (1,))], items, (30,))
        assert [c["velocity_firm_30d"] for c in out] == [2, 3, 4, 1]
        assert [c["velocity_purposes_30d"] for c in out] == [1, 2, 2, 1]
        assert [c["velocity_phone_30d"] for c in out] == [0, 0, 0, 3]


# ---------------------------------------------------------------------------------------------------------
# Through the API, on the real database (SQLite; PostgreSQL where it runs)


def fraud_api(database_url: str, registry: Path, tmp_path: Path, checks: list[dict]) -> Api:
    """The service with a tenant "fraud-bank" whose policy is the lenient one with ``checks``; key "fraud"."""
    policies = tmp_path / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "fraud.yaml").write_text(policy_text(checks, lenient=True), encoding="utf-8")
    api = make_api(database_url, registry, policies_dir=policies)
    with api.client.app.state.sessions.begin() as session:
        tenant = repo.get_or_create_tenant(session, name="fraud-bank", policy="fraud")
        api.keys["fraud"] = repo.create_api_key(session, tenant=tenant, scopes=["score", "review", "admin"])
    return api


def application(example: dict, i: int, enterprise: str | None = None, purpose: str | None = None) -> dict:
    body = copy.deepcopy(example)
    body["application"]["application_id"] = f"fc-{i}"
    if enterprise:
        body["profile"]["enterprise_id"] = enterprise
    if purpose:
        body["application"]["purpose"] = purpose
    return body


def context_of(api: Api, decision_id: str) -> dict:
    with api.client.app.state.read_sessions() as s:
        return s.scalar(select(Decision.context).where(Decision.id == decision_id))


BURST = check(code="REPEAT_BURST", feature="velocity_firm_30d", op=">=", value=4)  # N = 3 earlier: the 4th trips


@pytest.fixture()
def burst_api(database_url: str, champion_registry: Path, tmp_path: Path) -> Any:  # noqa: ANN401
    api = fraud_api(database_url, champion_registry, tmp_path, [BURST])
    with api.client:
        yield api
    api.client.app.state.engine.dispose()


class TestVelocityThroughTheApi:
    def test_the_fourth_application_within_the_window_trips_the_check(self, burst_api: Api,
                                                                        example_request: dict) -> None:
        api = burst_api
        for i in range(3):  # another lender's applications of the same firm count for nothing here
            assert api.score(application(example_request, 100 + i), who="other").status_code == 200
        decided = [api.score(application(example_request, i), who="fraud").json() for i in range(4)]
        assert [d["decision"] for d in decided] == ["approve", "approve", "approve", "refer"]
        assert [[h["code"] for h in d["rule_hits"]] for d in decided] == [[], [], [], ["REPEAT_BURST"]]
        assert [context_of(api, d["decision_id"])["velocity"]["velocity_firm_30d"] for d in decided] == [1, 2, 3, 4]
        # the referral is in a person's queue, with the check named for the officer
        queue = api.client.get("/v1/reviews?status=pending", headers=api.headers("fraud")).json()["items"]
        assert [(r["decision_id"], r["request_note"]) for r in queue] == [
            (decided[3]["decision_id"], "referred by the lender policy (fraud checks: REPEAT_BURST)")]

    def test_applications_before_the_window_do_not_count(self, burst_api: Api, example_request: dict) -> None:
        api = burst_api
        for i in range(3):
            api.score(application(example_request, i), who="fraud")
        with api.client.app.state.sessions.begin() as s:  # as if they had been made 31 and 29 days ago
            ids = s.scalars(select(VelocityKey.id).where(VelocityKey.kind == "firm").order_by(VelocityKey.id)).all()
            now = dt.datetime.now(dt.UTC)
            for id_, days in zip(ids, (31, 31, 29), strict=True):
                s.execute(update(VelocityKey).where(VelocityKey.id == id_).values(
                    decided_at=now - dt.timedelta(days=days)))
        d = api.score(application(example_request, 3), who="fraud").json()
        assert context_of(api, d["decision_id"])["velocity"]["velocity_firm_30d"] == 2 and d["rule_hits"] == []

    def test_a_batch_counts_its_own_earlier_items(self, burst_api: Api, example_request: dict) -> None:
        api = burst_api
        api.score(application(example_request, 0), who="fraud")
        r = api.client.post("/v1/scores/batch", headers=api.headers("fraud"),
                            json={"items": [application(example_request, i) for i in range(1, 4)]})
        assert r.status_code == 200
        assert [[h["code"] for h in d["rule_hits"]] for d in r.json()["items"]] == [[], [], ["REPEAT_BURST"]]

    def test_keys_are_stored_keyed_and_the_refs_never(self, burst_api: Api, example_request: dict) -> None:
        api = burst_api
        d = api.score(application(example_request, 0), who="fraud").json()
        state = api.client.app.state
        with state.read_sessions() as s:
            rows = s.scalars(select(VelocityKey).where(VelocityKey.decision_id == d["decision_id"])).all()
            tenant_id = s.scalar(select(Decision.tenant_id).where(Decision.id == d["decision_id"]))
        key = tenant_key(state.settings, tenant_id)
        links = example_request["related"]["links"]
        kinds = {"owner": "owner", "legal_rep": "owner", "phone": "phone", "account": "account"}
        expected = {("firm", keyed(key, example_request["profile"]["enterprise_id"]))} | {
            (kinds[link["kind"]], keyed(key, f"{kinds[link['kind']]}:{link['ref']}")) for link in links
            if link["kind"] in kinds and link["since"] <= example_request["application"]["application_date"]}
        assert {(r.kind, r.key) for r in rows} == expected and len(expected) > 1
        assert {r.applicant_ref for r in rows} == {d["applicant_ref"]}
        stored = {str(v) for r in rows for v in (r.kind, r.key, r.applicant_ref, r.purpose)}
        refs = {link["ref"] for link in links} | {example_request["profile"]["enterprise_id"]}
        assert not any(ref in value for ref in refs for value in stored)

    def test_without_links_consent_only_the_firm_is_stored(self, burst_api: Api, example_request: dict) -> None:
        body = application(example_request, 0)
        body["consent"]["links"] = False
        body.pop("related")
        d = burst_api.score(body, who="fraud").json()
        with burst_api.client.app.state.read_sessions() as s:
            kinds = s.scalars(select(VelocityKey.kind).where(VelocityKey.decision_id == d["decision_id"])).all()
        assert kinds == ["firm"]


def test_shared_links_count_other_firms_only_and_not_without_consent(database_url: str, champion_registry: Path,
                                                                    tmp_path: Path, example_request: dict) -> None:
    checks = [check(code="SHARED_ACCOUNT", feature="velocity_account_30d", op=">=", value=2),
              check(code="MANY_PURPOSES", feature="velocity_purposes_30d", op=">=", value=3)]
    api = fraud_api(database_url, champion_registry, tmp_path, checks)
    with api.client:
        def score(i: int, **kw: Any) -> dict:  # noqa: ANN401
            r = api.score(application(example_request, i, **kw), who="fraud")
            assert r.status_code == 200, r.text
            return r.json()

        a = [score(0, purpose="inventory"), score(1, purpose="equipment")]  # firm A, twice
        b = score(2, enterprise="E-OTHER")  # firm B names A's account, owner and phone
        assert [h["code"] for h in a[1]["rule_hits"]] == []
        assert [h["code"] for h in b["rule_hits"]] == ["SHARED_ACCOUNT"]
        velocity = context_of(api, b["decision_id"])["velocity"]
        assert (velocity["velocity_firm_30d"], velocity["velocity_account_30d"], velocity["velocity_owner_30d"],
                velocity["velocity_phone_30d"]) == (1, 2, 2, 2)
        again = score(3, purpose="working_capital")  # firm A: B's one application shares its account
        assert context_of(api, again["decision_id"])["velocity"]["velocity_account_30d"] == 1
        assert [h["code"] for h in again["rule_hits"]] == ["MANY_PURPOSES"]  # its third purpose in 30 days
        body = application(example_request, 4, enterprise="E-THIRD")  # links consent withdrawn: refs not used
        body["consent"]["links"] = False
        body.pop("related")
        c = api.score(body, who="fraud").json()
        assert c["rule_hits"] == [] and "velocity_account_30d" not in context_of(api, c["decision_id"])["velocity"]
    api.client.app.state.engine.dispose()


def test_hits_are_recorded_audited_queued_and_shown_in_neutral_words(database_url: str, champion_registry: Path,
                                                                     tmp_path: Path, example_request: dict) -> None:
    text_en = "Please provide bank statements and electricity bills so that we can verify your sales"
    text_zh = "请提供银行流水和电费账单以便核实销售额"
    checks = [check(code="SALES_TO_VERIFY", action="request_data", requests=["payments", "utilities"],
                    text_en=text_en, text_zh=text_zh,
                    all=[{"feature": "xsrc_sources_available", "op": ">=", "value": 1},
                         {"feature": "xsrc_elec_per_revenue_12m", "op": "<", "value": 1000,
                          "relative_to": "industry_median"}]),
              check(code="NEVER", feature="xsrc_elec_per_revenue_12m", op="<", value=1e-9,
                    relative_to="industry_median")]
    api = fraud_api(database_url, champion_registry, tmp_path, checks)
    with api.client:
        d = api.score(application(example_request, 0), who="fraud").json()
        hit = {"code": "SALES_TO_VERIFY", "action": "refer", "text_en": text_en, "text_zh": text_zh}
        assert (d["decision"], d["rule_hits"], d["data_requests"]) == ("refer", [hit], ["payments", "utilities"])
        # the decision record, read back
        again = api.client.get(f"/v1/decisions/{d['decision_id']}", headers=api.headers("fraud")).json()
        assert again["rule_hits"] == [hit] and again["data_requests"] == ["payments", "utilities"]
        state = api.client.app.state
        with state.read_sessions() as s:
            stored = s.scalar(select(Decision.explanation).where(Decision.id == d["decision_id"]))
            review = s.scalar(select(Review).where(Review.decision_id == d["decision_id"]))
            assert audit.verify(s)[1] == []  # the record's digest, hits included, is in the audit chain
        assert stored["rule_hits"] == [{**hit, "requests": ["payments", "utilities"]}]
        # the officer's queue: waiting for the records, the check named
        assert (review.status, review.request_note) == (
            "awaiting_data", "awaiting data: payments, utilities (fraud checks: SALES_TO_VERIFY)")
        waiting = api.client.get("/v1/reviews?status=awaiting_data", headers=api.headers("fraud")).json()["items"]
        assert [r["decision_id"] for r in waiting] == [d["decision_id"]]
        # the applicant's page: the neutral text, in both languages, and no accusation
        token = d["explanation"]["token"]
        for lang, text in (("en", text_en), ("zh", text_zh)):
            page = api.client.get(f"/v1/explanations/{token}?lang={lang}")
            assert page.status_code == 200 and text in page.text
            assert "fraud" not in page.text.lower() and "欺诈" not in page.text
    api.client.app.state.engine.dispose()


def test_the_migration_creates_the_table_the_model_declares(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        migrate(engine)
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert [d for d in diff if "velocity_keys" in repr(d)] == []
    finally:
        engine.dispose()


def test_the_read_is_one_index_range(tmp_path: Path) -> None:
    """SQLite's plan for the velocity read: a search of ix_velocity_keys_lookup, no scan of the table."""
    engine = make_engine(f"sqlite:///{tmp_path}/plan.db")
    try:
        migrate(engine)
        statements: list[tuple[str, Any]] = []

        @event.listens_for(engine, "before_cursor_execute")
        def _keep(_conn, _cursor, statement: str, parameters, *_args) -> None:  # noqa: ANN001, ANN002
            statements.append((statement, parameters))

        apps = [ApplicationKeys("F1", "inventory", (("account", "AC"),))]
        with Session(engine) as s:
            assert read(s, tenant_id=1, applications=apps, windows=(7, 30), now=dt.datetime.now(dt.UTC)) == [
                {"velocity_firm_7d": 1, "velocity_purposes_7d": 1, "velocity_account_7d": 0,
                 "velocity_firm_30d": 1, "velocity_purposes_30d": 1, "velocity_account_30d": 0}]
        (statement, parameters), = [x for x in statements if "velocity_keys" in x[0]]
        with engine.connect() as conn:
            plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters))
        assert "USING INDEX ix_velocity_keys_lookup" in plan and "SCAN velocity_keys" not in plan, plan
    finally:
        engine.dispose()


def test_withdrawn_links_consent_forgets_the_link_keys(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/forget.db")
    try:
        migrate(engine)
        now = dt.datetime.now(dt.UTC)
        mine = ApplicationKeys("F1", "inventory", (("owner", "P"), ("account", "AC")))
        theirs = ApplicationKeys("F2", "inventory", (("account", "AC"),))
        with Session(engine) as s, s.begin():
            s.add(repo.get_or_create_tenant(s, name="t"))
            tenant = repo.get_tenant_by_name(s, name="t").id
            s.execute(insert(VelocityKey), [*mine.rows(tenant_id=tenant, decision_id="d1", decided_at=now),
                                            *theirs.rows(tenant_id=tenant, decision_id="d2", decided_at=now)])
        with Session(engine) as s, s.begin():
            assert forget_links(s, tenant_id=tenant, applicant_ref="F1") == 2
        with Session(engine) as s:
            left = s.execute(select(VelocityKey.applicant_ref, VelocityKey.kind).order_by(VelocityKey.id)).all()
            assert [tuple(r) for r in left] == [("F1", "firm"), ("F2", "firm"), ("F2", "account")]
            # a later application of F1 naming the same account still sees F2's, and F1 counts as before
            (c,) = read(s, tenant_id=tenant, applications=[mine], windows=(30,), now=now)
            assert (c["velocity_firm_30d"], c["velocity_account_30d"], c["velocity_owner_30d"]) == (2, 1, 0)
    finally:
        engine.dispose()


def test_the_read_costs_the_same_however_often_a_firm_applied(tmp_path: Path) -> None:
    """Each key's newest READ_CAP rows are read: counts are exact below the cap and stop at it above."""
    from service.db.velocity import READ_CAP

    engine = make_engine(f"sqlite:///{tmp_path}/cap.db")
    try:
        migrate(engine)
        now = dt.datetime.now(dt.UTC)
        firm = ApplicationKeys("F1", "inventory", ())
        with Session(engine) as s, s.begin():
            s.add(repo.get_or_create_tenant(s, name="t"))
            tenant = repo.get_tenant_by_name(s, name="t").id
            for k in range(READ_CAP + 50):
                s.execute(insert(VelocityKey), firm.rows(tenant_id=tenant, decision_id=f"d{k}",
                                                         decided_at=now - dt.timedelta(hours=k)))
        with Session(engine) as s:
            [seen] = read(s, tenant_id=tenant, applications=[firm], windows=(1, 30), now=now)
        assert seen["velocity_firm_1d"] == 25 + 1  # exact below the cap: hours 0-24 back (the start counts), this one
        assert seen["velocity_firm_30d"] == READ_CAP + 1  # 150 in the window: the count stops at the cap
    finally:
        engine.dispose()


def test_many_keys_are_read_in_statements_of_a_few_shapes(tmp_path: Path) -> None:
    """A request may name 500 links and a batch thousands: the keys are read MAX_KEYS at a time (SQLite refuses a
    compound SELECT of more than 500 terms), each statement padded to a power of two, and every count is right."""
    from service.db.velocity import MAX_KEYS

    engine = make_engine(f"sqlite:///{tmp_path}/many.db")
    try:
        migrate(engine)
        now = dt.datetime.now(dt.UTC)
        mine = ApplicationKeys("F1", "inventory", tuple(("phone", f"T{k}") for k in range(150)))
        # T99 sorts last of the 151 keys, into the third statement: its three applications must be the most seen.
        theirs = [ApplicationKeys(f"G{k}-{j}", "inventory", (("phone", f"T{k}"),)) for k in (2, 77, 99)
                  for j in range({2: 1, 77: 2, 99: 3}[k])]
        with Session(engine) as s, s.begin():
            s.add(repo.get_or_create_tenant(s, name="t"))
            tenant = repo.get_tenant_by_name(s, name="t").id
            for k, a in enumerate(theirs):
                s.execute(insert(VelocityKey), a.rows(tenant_id=tenant, decision_id=f"d{k}", decided_at=now))
        statements: list[str] = []
        event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        with Session(engine) as s:
            [c] = read(s, tenant_id=tenant, applications=[mine], windows=(30,), now=now)
        assert (c["velocity_firm_30d"], c["velocity_phone_30d"]) == (1, 3)  # the most over its keys
        reads = [x for x in statements if "velocity_keys" in x]
        assert [x.count("UNION ALL") + 1 for x in reads] == [MAX_KEYS, MAX_KEYS, 32]  # 151 keys: 64 + 64 + 23
    finally:
        engine.dispose()
