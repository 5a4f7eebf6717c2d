"""The lender policy: each test checks one behaviour a lender relies on, against numbers worked out by hand.

Most tests use the shipped default policy (service/policies/default.yaml): funding 7%, LGD 45%, operating cost 1%,
margin 1.5%, cap min(15%, 4 x LPR 3%) = 12%, approve >= 600, refer >= 570, months of revenue B 2.5,
min limit 10,000, max limit 1,000,000, farming harvest in September-October.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.scoring.policy import Offer, Policy, PolicyError, PolicyInput, PolicyOutcome, load_policy

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "service" / "policies" / "default.yaml"
DEFAULT_TEXT = DEFAULT_PATH.read_text(encoding="utf-8")
DEFAULT = load_policy(DEFAULT_PATH)
NAN = math.nan


def clean_features(**overrides: float) -> dict[str, float]:
    features = {"biz_age_months": 48.0, "tax_grade": 3.0, "tax_arrears_months_12m": 0.0,
                "util_arrears_months_12m": 0.0, "bureau_worst_dpd_12m": 0.0, "elec_intensity_change_12m": 0.0}
    return {**features, **overrides}


def make_input(**overrides: Any) -> PolicyInput:
    """A clean grade-B retailer asking for 200,000 CNY over 12 months: approved as asked, unless overridden."""
    fields: dict[str, Any] = {
        "pd": 0.02, "score": 620.0, "grade": "B", "features": clean_features(), "industry": "F", "region": "east",
        "legal_form": "company", "application_date": dt.date(2025, 3, 10), "requested_amount": 200_000.0,
        "term_months": 12, "purpose": "working_capital", "monthly_revenue": 150_000.0,
    }
    return PolicyInput(**{**fields, **overrides})


def default_data() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_TEXT)


def policy_from(data: dict[str, Any]) -> Policy:
    return Policy.from_yaml(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))


def with_local_rules(*rules: dict[str, Any]) -> Policy:
    data = default_data()
    data["local_rules"] = [{"text_en": "local rule", "text_zh": "本地规则", **r} for r in rules]
    return policy_from(data)


def codes(outcome: PolicyOutcome) -> list[str]:
    return [h.code for h in outcome.rule_hits]


def test_clean_applicant_is_approved_as_asked() -> None:
    outcome = DEFAULT.decide(make_input())
    assert outcome == PolicyOutcome("approve", Offer(200_000.0, 12, 0.104, 0), (), DEFAULT.version)


class TestKnockOuts:
    CASES = [  # code, feature, value that fires, value just inside the policy, decision
        ("BUSINESS_TOO_YOUNG", "biz_age_months", 5.0, 6.0, "decline"),
        ("TAX_GRADE_D", "tax_grade", 0.0, 1.0, "decline"),
        ("TAX_ARREARS", "tax_arrears_months_12m", 3.0, 2.0, "decline"),
        ("SERIOUS_DELINQUENCY", "bureau_worst_dpd_12m", 60.0, 59.0, "decline"),
        ("UTILITY_ARREARS", "util_arrears_months_12m", 3.0, 2.0, "refer"),
    ]

    @pytest.mark.parametrize(("code", "feature", "fires", "passes", "decision"), CASES)
    def test_fires_at_its_threshold(self, code: str, feature: str, fires: float, passes: float, decision: str) -> None:
        outcome = DEFAULT.decide(make_input(features=clean_features(**{feature: fires})))
        assert (outcome.decision, codes(outcome)) == (decision, [code])

    @pytest.mark.parametrize(("code", "feature", "fires", "passes", "decision"), CASES)
    def test_does_not_fire_just_inside(self, code: str, feature: str, fires: float, passes: float,
                                       decision: str) -> None:
        outcome = DEFAULT.decide(make_input(features=clean_features(**{feature: passes})))
        assert (outcome.decision, codes(outcome)) == ("approve", [])

    @pytest.mark.parametrize("feature", [c[1] for c in CASES])
    def test_missing_feature_never_fires(self, feature: str) -> None:
        features = clean_features(**{feature: NAN})
        assert DEFAULT.decide(make_input(features=features)).decision == "approve"
        del features[feature]  # absent counts as missing too
        assert DEFAULT.decide(make_input(features=features)).decision == "approve"

    def test_not_equal_rule_does_not_fire_on_missing(self) -> None:
        policy = with_local_rules({"code": "NOT_GRADE_A", "feature": "tax_grade", "op": "!=", "value": 4,
                                   "action": "refer"})
        assert policy.decide(make_input(features=clean_features(tax_grade=NAN))).decision == "approve"  # NaN != 4
        assert policy.decide(make_input(features=clean_features(tax_grade=3))).decision == "refer"

    def test_decline_overrides_a_high_score(self) -> None:
        outcome = DEFAULT.decide(make_input(score=720.0, features=clean_features(tax_grade=0.0)))
        assert (outcome.decision, outcome.offer) == ("decline", None)

    def test_refer_keeps_the_offer_a_reviewer_would_confirm(self) -> None:
        outcome = DEFAULT.decide(make_input(features=clean_features(util_arrears_months_12m=4.0)))
        assert outcome.decision == "refer"
        assert outcome.offer == DEFAULT.decide(make_input()).offer

    def test_every_rule_that_fired_is_reported_in_order(self) -> None:
        features = clean_features(biz_age_months=2.0, util_arrears_months_12m=5.0, bureau_worst_dpd_12m=90.0)
        outcome = DEFAULT.decide(make_input(features=features))
        assert codes(outcome) == ["BUSINESS_TOO_YOUNG", "SERIOUS_DELINQUENCY", "UTILITY_ARREARS"]
        assert outcome.rule_hits[0].text_zh == "企业注册经营不满6个月"


class TestCutOffs:
    @pytest.mark.parametrize(("score", "decision", "hits"), [
        (600.0, "approve", []),
        (599.9, "refer", ["SCORE_REVIEW_BAND"]),
        (570.0, "refer", ["SCORE_REVIEW_BAND"]),
        (569.9, "decline", ["SCORE_BELOW_CUTOFF"]),
    ])
    def test_boundaries(self, score: float, decision: str, hits: list[str]) -> None:
        outcome = DEFAULT.decide(make_input(score=score))
        assert (outcome.decision, codes(outcome)) == (decision, hits)

    def test_decline_text_names_the_score(self) -> None:
        hit = DEFAULT.decide(make_input(score=551.0)).rule_hits[0]
        assert (hit.text_en, hit.text_zh) == ("Score 551 is below the minimum score 570", "评分551低于最低分数线570")

    def test_refer_knock_out_turns_approve_into_refer_but_not_decline_into_refer(self) -> None:
        features = clean_features(util_arrears_months_12m=3.0)
        assert DEFAULT.decide(make_input(score=650.0, features=features)).decision == "refer"
        assert DEFAULT.decide(make_input(score=500.0, features=features)).decision == "decline"


class TestLimit:
    def limit_of(self, **overrides: Any) -> tuple[str, float, list[str]]:
        outcome = DEFAULT.decide(make_input(**overrides))
        assert outcome.offer is not None
        return outcome.decision, outcome.offer.limit, codes(outcome)

    def test_requested_amount_when_capacity_is_ample(self) -> None:
        assert self.limit_of(monthly_revenue=150_000.0) == ("approve", 200_000.0, [])  # capacity 375,000

    def test_capacity_when_revenue_does_not_cover_the_request(self) -> None:
        # 50,123 x 2.5 months (grade B) = 125,307.5, rounded down to 125,000
        assert self.limit_of(monthly_revenue=50_123.0) == ("approve", 125_000.0, [])

    def test_capacity_follows_the_grade(self) -> None:
        # 50,000 x 1.5 months (grade D) = 75,000
        assert self.limit_of(grade="D", monthly_revenue=50_000.0) == ("approve", 75_000.0, [])

    def test_never_above_max_limit(self) -> None:
        assert self.limit_of(grade="A", monthly_revenue=1_000_000.0, requested_amount=2_000_000.0)[1] == 1_000_000.0

    def test_capacity_exactly_at_min_limit_is_offered(self) -> None:
        assert self.limit_of(monthly_revenue=4_000.0) == ("approve", 10_000.0, [])  # 4,000 x 2.5

    def test_refer_rather_than_a_token_amount_when_capacity_is_below_min_limit(self) -> None:
        decision, limit, hits = self.limit_of(monthly_revenue=3_000.0)  # 7,500 < 10,000
        assert (decision, limit, hits) == ("refer", 7_000.0, ["CAPACITY_BELOW_MIN_LIMIT"])

    @pytest.mark.parametrize("revenue", [None, NAN])
    def test_refer_when_revenue_is_unknown(self, revenue: float | None) -> None:
        assert self.limit_of(monthly_revenue=revenue) == ("refer", 0.0, ["REVENUE_UNKNOWN"])


class TestTerm:
    def term_of(self, **overrides: Any) -> int:
        offer = DEFAULT.decide(make_input(**overrides)).offer
        assert offer is not None
        return offer.term_months

    @pytest.mark.parametrize(("applied", "term"), [
        (dt.date(2025, 3, 10), 8),  # March through October
        (dt.date(2025, 11, 2), 12),  # November through next October: a term of 11 would end before the harvest
        (dt.date(2025, 12, 31), 11),  # December through next October
        (dt.date(2025, 8, 1), 3),  # August through October
        (dt.date(2025, 10, 15), 3),  # the harvest ends this month: raised to the 3-month minimum
    ])
    def test_farming_term_runs_to_the_end_of_the_next_harvest(self, applied: dt.date, term: int) -> None:
        assert self.term_of(industry="A", application_date=applied, term_months=36) == term

    def test_seasonal_inputs_outside_farming_use_the_default_harvest(self) -> None:
        assert self.term_of(industry="F", purpose="seasonal_inputs", term_months=3) == 8

    def test_harvest_term_is_not_cut_by_the_grade_maximum(self) -> None:
        assert self.term_of(industry="A", grade="F", score=600.0) == 8  # grade F otherwise allows 6 months

    def test_farm_equipment_keeps_the_requested_term(self) -> None:
        assert self.term_of(industry="A", purpose="equipment", term_months=24) == 24

    @pytest.mark.parametrize(("grade", "requested", "term"), [("B", 36, 24), ("B", 6, 6), ("A", 36, 36), ("E", 24, 12)])
    def test_other_loans_get_the_requested_term_capped_by_grade(self, grade: str, requested: int, term: int) -> None:
        assert self.term_of(grade=grade, term_months=requested) == term

    def test_two_harvests_a_year_end_at_the_nearer_one(self) -> None:
        data = default_data()
        data["term"]["operating_cycle"]["harvest_months"] = {"A": [6, 7, 9, 10]}  # summer wheat, autumn maize
        policy = policy_from(data)
        terms = [policy.decide(make_input(industry="A", application_date=dt.date(2025, m, 1))).offer.term_months
                 for m in (3, 8)]
        assert terms == [5, 3]  # March through July; August through October


class TestPricing:
    def test_apr_by_hand_for_a_one_year_loan(self) -> None:
        # 0.07 funding + 0.02 x 0.45 expected loss + 0.01 operating + 0.015 margin = 0.104
        assert DEFAULT.decide(make_input(pd=0.02)).offer.apr == 0.104

    def test_a_short_loan_is_priced_over_at_least_one_year(self) -> None:
        assert DEFAULT.decide(make_input(pd=0.02, term_months=6)).offer.apr == 0.104

    def test_a_two_year_loan_spreads_its_lifetime_default_over_two_years(self) -> None:
        # lifetime PD 1 - 0.98^2 = 0.0396; 0.0396 x 0.45 / 2 = 0.00891; 0.07 + 0.00891 + 0.025 = 0.10391 -> 10.39%
        assert DEFAULT.decide(make_input(pd=0.02, term_months=24)).offer.apr == 0.1039

    def test_cap_is_the_lower_of_rate_cap_and_four_times_lpr(self) -> None:
        assert DEFAULT.rate_cap == pytest.approx(0.12)  # min(0.15, 4 x 0.03)
        data = default_data()
        data["pricing"]["lpr_1y"] = 0.04
        policy = policy_from(data)
        assert policy.rate_cap == 0.15
        assert policy.decide(make_input(pd=0.06)).offer.apr == 0.122  # declined under the default 12% cap

    def test_price_above_cap_declines_rather_than_clipping(self) -> None:
        # 0.095 + 0.06 x 0.45 = 0.122 > 0.12
        outcome = DEFAULT.decide(make_input(pd=0.06))
        assert (outcome.decision, outcome.offer, codes(outcome)) == ("decline", None, ["PRICE_ABOVE_CAP"])
        assert outcome.rule_hits[0].text_en == ("The risk-based rate 12.20% would exceed the rate cap 12.00%; "
                                                "the loan cannot be priced lawfully")

    def test_price_that_rounds_to_the_cap_is_allowed(self) -> None:
        assert DEFAULT.decide(make_input(pd=0.0555)).offer.apr == 0.12  # 0.119975 -> 1200 bps
        assert DEFAULT.decide(make_input(pd=0.0557)).decision == "decline"  # 0.120065 -> 1201 bps

    def test_green_discount_does_not_rescue_a_price_above_the_cap(self) -> None:
        outcome = DEFAULT.decide(make_input(pd=0.0557, features=clean_features(elec_intensity_change_12m=-0.2)))
        assert codes(outcome) == ["PRICE_ABOVE_CAP"]

    def test_apr_never_exceeds_the_cap_across_pds(self) -> None:
        policies = [DEFAULT, with_local_rules({"code": "LOCAL_SURCHARGE", "feature": "tax_grade", "op": "<=",
                                               "value": 3, "action": "apr_bps", "amount": 40})]
        for policy in policies:
            for step in range(501):  # pd 0.000 .. 0.500
                for term, purpose in ((3, "working_capital"), (12, "inventory"), (36, "equipment")):
                    for change in (0.0, -0.2):
                        x = make_input(pd=step / 1000, grade="A", term_months=term, purpose=purpose,
                                       features=clean_features(elec_intensity_change_12m=change))
                        outcome = policy.decide(x)
                        if outcome.offer is not None:
                            assert outcome.offer.apr <= 0.12, (policy, x)
                        else:
                            assert "PRICE_ABOVE_CAP" in codes(outcome), (policy, x)


class TestGreen:
    @pytest.mark.parametrize(("change", "discount"), [(-0.10, 30), (-0.0501, 30), (-0.05, 0), (0.10, 0), (NAN, 0)])
    def test_discount_only_when_energy_per_sale_fell_beyond_the_threshold(self, change: float, discount: int) -> None:
        offer = DEFAULT.decide(make_input(features=clean_features(elec_intensity_change_12m=change))).offer
        assert (offer.green_discount_bps, offer.apr) == (discount, round(0.104 - discount / 10_000, 4))

    def test_disabled_green_rule_gives_no_discount(self) -> None:
        data = default_data()
        data["green"]["enabled"] = False
        offer = policy_from(data).decide(make_input(features=clean_features(elec_intensity_change_12m=-0.5))).offer
        assert (offer.green_discount_bps, offer.apr) == (0, 0.104)


class TestLocalRules:
    def test_decline(self) -> None:
        policy = with_local_rules({"code": "LOCAL_TAX_STABILITY", "feature": "tax_arrears_months_12m", "op": ">=",
                                   "value": 1, "action": "decline"})
        outcome = policy.decide(make_input(features=clean_features(tax_arrears_months_12m=1.0)))
        assert (outcome.decision, outcome.offer, codes(outcome)) == ("decline", None, ["LOCAL_TAX_STABILITY"])

    def test_refer(self) -> None:
        policy = with_local_rules({"code": "LOCAL_YOUNG_BUSINESS", "feature": "biz_age_months", "op": "<",
                                   "value": 24, "action": "refer"})
        outcome = policy.decide(make_input(features=clean_features(biz_age_months=12.0)))
        assert (outcome.decision, codes(outcome)) == ("refer", ["LOCAL_YOUNG_BUSINESS"])
        assert outcome.offer == DEFAULT.decide(make_input()).offer

    @pytest.mark.parametrize(("revenue", "factor", "limit"), [
        (100_000.0, 0.5, 125_000.0),  # capacity 250,000 x 0.5 = 125,000 < 200,000 requested
        (400_000.0, 0.5, 200_000.0),  # capacity 1,000,000 x 0.5 still covers the request
        (60_000.0, 1.5, 200_000.0),  # 150,000 x 1.5 = 225,000: a raise never goes above the request
    ])
    def test_limit_factor_scales_the_revenue_capacity(self, revenue: float, factor: float, limit: float) -> None:
        policy = with_local_rules({"code": "LOCAL_LIMIT", "feature": "tax_grade", "op": ">=", "value": 3,
                                   "action": "limit_factor", "amount": factor})
        outcome = policy.decide(make_input(monthly_revenue=revenue))
        assert (outcome.decision, outcome.offer.limit, codes(outcome)) == ("approve", limit, ["LOCAL_LIMIT"])

    def test_limit_factor_below_min_limit_refers(self) -> None:
        policy = with_local_rules({"code": "LOCAL_LIMIT", "feature": "tax_grade", "op": ">=", "value": 3,
                                   "action": "limit_factor", "amount": 0.1})
        outcome = policy.decide(make_input(monthly_revenue=20_000.0))  # 50,000 x 0.1 = 5,000
        assert (outcome.decision, codes(outcome)) == ("refer", ["CAPACITY_BELOW_MIN_LIMIT", "LOCAL_LIMIT"])

    @pytest.mark.parametrize(("bps", "apr"), [(25, 0.1065), (-10, 0.103)])
    def test_apr_bps_adds_basis_points(self, bps: int, apr: float) -> None:
        policy = with_local_rules({"code": "LOCAL_PRICE", "feature": "tax_grade", "op": ">=", "value": 3,
                                   "action": "apr_bps", "amount": bps})
        assert policy.decide(make_input()).offer.apr == apr

    def test_apr_bps_cannot_push_the_price_above_the_cap(self) -> None:
        policy = with_local_rules({"code": "LOCAL_PRICE", "feature": "tax_grade", "op": ">=", "value": 3,
                                   "action": "apr_bps", "amount": 50})
        outcome = policy.decide(make_input(pd=0.05))  # 0.095 + 0.0225 = 1175 bps; + 50 = 1225 > 1200
        assert (outcome.decision, outcome.offer, codes(outcome)) == ("decline", None, ["LOCAL_PRICE",
                                                                                       "PRICE_ABOVE_CAP"])
        assert outcome.rule_hits[1].text_en.startswith("The risk-based rate 12.25% would exceed")


class TestLoading:
    @pytest.mark.parametrize(("old", "new", "error"), [
        ("local_rules: []", "local_rule: []", "local_rule: unknown key"),
        ('op: "<"', 'op: "=>"', "knock_outs[0].op: Input should be '<', '<=', '>', '>=', '==' or '!=', got '=>'"),
        ("refer_min_score: 570", "refer_min_score: 620",
         "cut_offs.refer_min_score: must be <= approve_min_score (600), got 620"),
        ("feature: biz_age_months", "feature: biz_age",
         "knock_outs[0].feature: unknown feature 'biz_age'; the catalogue is in docs/features.md"),
        ("code: TAX_ARREARS", "code: TAX_GRADE_D",
         "knock_outs[2].code: 'TAX_GRADE_D' is already used by an earlier rule"),
        ("harvest_months: {A: [9, 10]}", "harvest_months: {A: [9, 9]}",
         "term.operating_cycle.harvest_months.A: must list 1 to 11 distinct months (a harvest needs an end), "
         "got [9, 9]"),
        ("margin: 0.015", "margin: 0.05", "pricing: funding_cost + operating_cost + margin (0.1300) leaves no room "
         "under the cap (0.1200 = min(rate_cap, 4 x lpr_1y)): no loan could be priced"),
    ])
    def test_error_names_file_key_path_and_rule(self, tmp_path: Path, old: str, new: str, error: str) -> None:
        path = tmp_path / "bank.yaml"
        assert old in DEFAULT_TEXT
        path.write_text(DEFAULT_TEXT.replace(old, new, 1), encoding="utf-8")
        with pytest.raises(PolicyError) as exc:
            load_policy(path)
        assert str(exc.value) == f"{path}: {error}"

    def test_a_repeated_key_is_refused_not_silently_overridden(self) -> None:
        text = DEFAULT_TEXT.replace("local_rules: []", "local_rules: []\nlocal_rules: []")
        line = text.count("\n", 0, text.index("local_rules: []")) + 2
        with pytest.raises(PolicyError) as exc:
            Policy.from_yaml(text, source="bank.yaml")
        assert str(exc.value) == f"bank.yaml: line {line}, column 1: invalid YAML (duplicate key 'local_rules')"

    def test_local_rule_amount_must_fit_its_action(self) -> None:
        with pytest.raises(PolicyError) as exc:
            with_local_rules({"code": "LOCAL_LIMIT", "feature": "tax_grade", "op": ">=", "value": 3,
                              "action": "limit_factor"})
        assert str(exc.value) == ("<string>: local_rules[0].amount: a limit_factor rule needs amount > 0 "
                                  "(a multiplier of the revenue capacity, e.g. 0.8)")

    def test_missing_file_is_named(self, tmp_path: Path) -> None:
        with pytest.raises(PolicyError, match=r"nope\.yaml: cannot read the policy file"):
            load_policy(tmp_path / "nope.yaml")

    def test_version_is_name_declared_version_and_file_digest(self, tmp_path: Path) -> None:
        digest = hashlib.sha256(DEFAULT_PATH.read_bytes()).hexdigest()[:8]
        assert DEFAULT.version == f"default@1.0.0+{digest}"
        assert DEFAULT.decide(make_input()).policy_version == DEFAULT.version

    def test_version_changes_when_the_bytes_change(self, tmp_path: Path) -> None:
        path = tmp_path / "bank.yaml"
        path.write_bytes(DEFAULT_PATH.read_bytes())
        assert load_policy(path).version == DEFAULT.version
        path.write_bytes(DEFAULT_PATH.read_bytes() + b"# reviewed 2026-01-05\n")
        assert load_policy(path).version != DEFAULT.version

    def test_unknown_grade_is_refused(self) -> None:
        with pytest.raises(PolicyError, match=r"has no limit or term for grade 'Z'"):
            DEFAULT.decide(make_input(grade="Z"))
