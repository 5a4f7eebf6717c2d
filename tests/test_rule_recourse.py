"""Recourse for the lender's rules: every remedy is re-decided by the engine itself, lifts the rule it names by the
smallest step, and a rule nothing lifts says so. Checked on every refer and decline of the small synthetic set."""

from __future__ import annotations

import calendar
import datetime as dt
import math
import operator
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from service.runtime import DEFAULT_POLICY
from service.scoring.bundle import load_bundle
from service.scoring.engine import Engine, Scored, application_context, months_later
from service.scoring.explain import REQUEST_ABOVE_FUNDABLE, Remedy
from service.scoring.features import build_features
from service.scoring.policy import Policy, PolicyInput, load_policy
from service.scoring.raw import RawData
from service.scoring.registry import Registry


@pytest.fixture(scope="module")
def engine(champion_registry: Path) -> Engine:
    return Engine(load_bundle(champion_registry / Registry(champion_registry).champion()))


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(DEFAULT_POLICY)


@pytest.fixture(scope="module")
def scored(engine: Engine, policy: Policy, small_raw: RawData) -> list[Scored]:
    return engine.score(small_raw, policy)


OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq,
       "!=": operator.ne}


def adverse_codes(outcome) -> tuple[str, ...]:  # noqa: ANN001
    return tuple(h.code for h in outcome.rule_hits if h.action in ("decline", "refer"))


def later(date: dt.date, months: int) -> dt.date:
    """Written apart from the engine's months_later: the same day, months on, clipped to the month's end."""
    total = date.year * 12 + date.month - 1 + months
    year, month = total // 12, total % 12 + 1
    return dt.date(year, month, min(date.day, calendar.monthrange(year, month)[1]))


def redecide(engine: Engine, policy: Policy, x: np.ndarray, context: dict, remedies: list[Remedy],
             from_the_application: bool = True) -> Scored:
    """Engine.decide on the application with the remedies' changes: the features, the amount, and the date once
    the time they need has passed."""
    x = x.copy()
    context = dict(context)
    for r in remedies:
        for c in r.changes:
            j = engine.names.index(c.feature)
            assert x[j] == c.current or not from_the_application, (r.code, c)
            x[j] = c.target
        if r.amount is not None:
            context["requested_amount"] = r.amount
    months = max((r.months or 0 for r in remedies), default=0)
    if months:
        context["application_date"] = later(context["application_date"], months)
    return engine.decide(x, engine.bundle.contributions(x[None, :])[0], context, policy)


def verdict(s: Scored) -> tuple:
    return s.outcome.decision, s.score, None if s.outcome.offer is None else s.outcome.offer.to_json(), \
        adverse_codes(s.outcome)


class TestEveryRemedyIsTheEnginesOwnDecision:
    def test_each_remedy_alone_and_all_together(self, engine: Engine, policy: Policy, small_raw: RawData,
                                                scored: list[Scored]) -> None:
        seen: Counter = Counter()
        for i, s in enumerate(scored):
            rules = s.recourse.rules if s.recourse else None
            if rules is None:
                continue
            context = application_context(small_raw, i)
            acting = [r for r in rules.remedies if r.changes]
            for r in rules.remedies:
                if r.changes:
                    assert (r.decision, r.score, r.offer, r.still) == verdict(redecide(engine, policy, s.features,
                                                                                       context, [r])), (i, r.code)
                    seen[(r.kind, r.decision)] += 1
                else:
                    assert (r.decision, r.score, r.offer, r.still) == (None, None, None, ()), (i, r.code)
            if not acting:
                assert rules.decision is None and rules.with_suggestions is None
                continue
            together = redecide(engine, policy, s.features, context, acting)
            assert (rules.decision, rules.score, rules.offer, rules.still) == verdict(together), i
            # and with the model's suggestions too (the remedies' amount stands for the suggested one)
            x, ctx = s.features.copy(), dict(context)
            for sug in s.recourse.suggestions:
                x[engine.names.index(sug.feature)] = sug.target
                if sug.feature == "loan_to_revenue":
                    ctx["requested_amount"] = context["requested_amount"] * sug.target / sug.current
            assert rules.with_suggestions == redecide(engine, policy, x, ctx, acting, False).outcome.decision, i
            seen["summary", rules.decision] += 1
        # not vacuous: remedies of every kind that changes something, leading to every outcome
        assert {k for k, _ in seen} >= {"act", "wait", "amount", "summary"}, seen
        assert {d for _, d in seen} == {"approve", "refer", "decline"}, seen

    def test_the_amount_is_what_the_feature_builder_computes_for_it(self, engine: Engine, policy: Policy,
                                                                    small_raw: RawData,
                                                                    scored: list[Scored]) -> None:
        """Scoring the application again from its raw data, asking for the amount, gives the remedy's decision."""
        j = engine.names.index("loan_to_revenue")
        checked = 0
        for i, s in enumerate(scored):
            amount = [r for r in (s.recourse.rules.remedies if s.recourse and s.recourse.rules else ())
                      if r.kind == "amount"]
            if not amount or checked >= 60:
                continue
            [r] = amount
            raw = small_raw.select(np.array([i]))
            assert raw.applications["requested_amount"][0] > r.amount
            raw.applications["requested_amount"] = np.array([r.amount])
            assert build_features(raw).values[0, j] == r.changes[0].target  # bit for bit
            again = engine.score(raw, policy)[0]
            assert (r.decision, r.score, r.offer, r.still) == verdict(again)
            assert again.outcome.offer is None or again.outcome.offer.limit == r.amount  # funded as asked
            fundable = policy.fundable_limit(PolicyInput(
                pd=s.pd, score=s.score, grade=s.grade, features=dict(zip(engine.names, s.features, strict=True)),
                **application_context(small_raw, i), monthly_revenue=_revenue(engine, s)))
            assert r.amount == fundable and r.amount % policy.spec.limit.round_to == 0
            checked += 1
        assert checked == 60


def _revenue(engine: Engine, s: Scored) -> float:
    pay, tax = (s.features[engine.names.index(n)] for n in ("pay_inflow_avg_12m", "tax_sales_avg_12m"))
    return float(tax if math.isnan(pay) else pay)


class TestEachRemedyLiftsItsRule:
    def test_by_the_smallest_step_and_in_the_time_it_says(self, engine: Engine, policy: Policy,
                                                          scored: list[Scored]) -> None:
        rules = {r.code: r for r in policy.spec.knock_outs}
        kinds: Counter = Counter()
        for s in scored:
            for r in (s.recourse.rules.remedies if s.recourse and s.recourse.rules else ()):
                if r.code not in rules:
                    continue
                kinds[r.code, r.kind] += 1
                rule = rules[r.code]

                def fires(v: float, rule=rule) -> bool:  # noqa: ANN001
                    return OPS[rule.op](v, rule.value)
                if r.kind == "none":
                    assert not r.changes and r.decision is None
                    continue
                assert r.code not in r.still  # lifted
                c = r.changes[0]
                assert c.feature == rule.feature and fires(c.current) and not fires(c.target)
                assert fires(c.target - math.copysign(1.0, c.target - c.current)), (r.code, c)  # one step less
                if r.kind == "wait":
                    assert r.months == math.ceil(rule.value - c.current) and r.months >= 1
                    assert f"in {r.months} months" in r.text_en and f"还需{r.months}个月" in r.text_zh
                else:  # a count over the last 12 months falls to the target within 12 - target months
                    assert r.months == 12 - int(c.target) and f"at the latest in {r.months} months" in r.text_en
        assert kinds["TAX_ARREARS", "act"] and kinds["BUSINESS_TOO_YOUNG", "wait"], kinds
        assert kinds["TAX_GRADE_D", "none"] and kinds["SERIOUS_DELINQUENCY", "none"], kinds

    def test_paid_tax_arrears_owe_nothing_now(self, scored: list[Scored]) -> None:
        remedies = [r for s in scored if s.recourse and s.recourse.rules for r in s.recourse.rules.remedies
                    if r.code == "TAX_ARREARS"]
        assert remedies
        for r in remedies:
            assert {c.feature: c.target for c in r.changes}.get("tax_arrears_to_sales", 0.0) == 0.0

    def test_rules_nothing_lifts_say_so_plainly(self, scored: list[Scored]) -> None:
        said: dict[str, set[str]] = {}
        for s in scored:
            for r in (s.recourse.rules.remedies if s.recourse and s.recourse.rules else ()):
                if r.kind == "none":
                    said.setdefault(r.code, set()).add(r.text_en)
                    assert r.text_zh and r.decision is None
        assert any("once a year" in t for t in said["TAX_GRADE_D"])
        assert any("stays in the last-12-months record for 12 months" in t for t in said["SERIOUS_DELINQUENCY"])
        assert said["CAPACITY_BELOW_MIN_LIMIT"]


class TestWhatDecides:
    def test_a_knock_out_decides_the_score_does_not(self, policy: Policy, scored: list[Scored]) -> None:
        knock_outs = {r.code: r.action for r in policy.spec.knock_outs}
        by_rule = by_score = 0
        for s in scored:
            if s.outcome.decision == "approve":
                assert s.recourse is None
                continue
            codes = adverse_codes(s.outcome)
            rules = s.recourse.rules
            if any(knock_outs.get(c) == s.outcome.decision for c in codes):
                assert rules is not None and rules.decides
                by_rule += 1
            elif set(codes) <= {"SCORE_BELOW_CUTOFF", "SCORE_REVIEW_BAND", "PRICE_ABOVE_CAP"}:
                assert rules is None or (not rules.decides and
                                         [r.code for r in rules.remedies] == [REQUEST_ABOVE_FUNDABLE])
                by_score += 1
        assert by_rule and by_score

    def test_the_notes_agree_with_the_re_decisions(self, scored: list[Scored]) -> None:
        for s in scored:
            rules = s.recourse.rules if s.recourse else None
            if rules is None:
                continue
            assert rules.note_en.startswith("With every step for the lender's rules,") == (rules.decision == "approve")
            if not s.recourse.flips and rules.with_suggestions == "approve":
                assert s.recourse.note_en.startswith("Alone, these changes")
            elif not s.recourse.flips:
                claims_nothing_helps = "no realistic change" in s.recourse.note_en
                assert claims_nothing_helps == (rules.with_suggestions is None)  # never beside a working remedy


class TestPlainRuleTexts:
    def test_a_grade_the_product_does_not_fund_is_named(self, policy: Policy) -> None:
        x = PolicyInput(pd=0.3, score=540.0, grade="G", features={}, industry="F", region="east",
                        legal_form="company", application_date=dt.date(2026, 3, 1), requested_amount=2_030_000.0,
                        term_months=12, purpose="working_capital", monthly_revenue=850_000.0)
        [hit] = [h for h in policy.decide(x).rule_hits if h.code == "CAPACITY_BELOW_MIN_LIMIT"]
        assert hit.text_en == "Grade G: this product funds no limit at this risk level"
        assert hit.text_zh == "等级G：本产品在此风险等级下不提供额度"
        small = policy.decide(PolicyInput(**{**x.__dict__, "grade": "F", "pd": 0.1, "monthly_revenue": 15_000.0}))
        [hit] = [h for h in small.rule_hits if h.code == "CAPACITY_BELOW_MIN_LIMIT"]
        assert hit.text_en == ("At grade F this product lends up to 0.5 months of revenue: 7,500 CNY for monthly "
                               "revenue of 15,000 CNY, below the product minimum of 10,000 CNY")
        assert "credit officer" not in hit.text_en  # the headline says what happens next, not the rule

    def test_no_rule_text_promises_a_review(self, scored: list[Scored]) -> None:
        """A refer rule under a decline headline must not say a credit officer reviews the application."""
        texts = {h.text_en for s in scored for h in s.outcome.rule_hits}
        assert texts and not [t for t in texts if "credit officer" in t or "reviews" in t]


def test_months_later_clips_to_the_end_of_a_shorter_month() -> None:
    assert months_later(dt.date(2026, 1, 31), 1) == dt.date(2026, 2, 28)
    assert months_later(dt.date(2027, 11, 15), 3) == dt.date(2028, 2, 15)
    assert months_later(dt.date(2028, 3, 31), 11) == dt.date(2029, 2, 28)
    for months in range(0, 30):
        assert months_later(dt.date(2024, 1, 31), months) == later(dt.date(2024, 1, 31), months)
