"""The scoring engine: features -> model -> PD, score, grade -> explanation -> lender policy, in one pass.

The same ``Engine.score`` serves one API request (n = 1) and a whole folder offline (``smecredit score``):
features from ``build_features``, margin and exact TreeSHAP contributions from one ``pred_contrib`` call
(their row sum *is* the margin), then calibration, points, reasons and the tenant's policy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from service.scoring.bundle import Bundle
from service.scoring.explain import (
    ACTIONS,
    MAX_RECOURSE,
    MIN_GAIN_POINTS,
    Reason,
    Recourse,
    Suggestion,
    group_points,
    no_flip_note,
    principal_reasons,
    recourse_candidates,
    suggestion_text,
)
from service.scoring.features import FeatureMatrix, build_features, monthly_revenue
from service.scoring.policy import Policy, PolicyInput, PolicyOutcome
from service.scoring.raw import MONTHLY_SOURCES, RawData


@dataclass(frozen=True)
class Scored:
    """One application, scored, explained and decided."""

    features: np.ndarray  # (F,) what the model saw; NaN = missing
    sources_used: tuple[str, ...]
    margin: float
    base_value: float
    contributions: np.ndarray  # (F,) log-odds, exact TreeSHAP
    points: np.ndarray  # (F,) contributions in score points
    pd: float
    score: float
    grade: str
    reasons: tuple[Reason, ...]
    groups: dict[str, float]
    outcome: PolicyOutcome
    recourse: Recourse | None  # refer and decline only


def application_context(raw: RawData, i: int) -> dict:
    """What the policy needs to know about application ``i`` besides its features (no identifiers)."""
    apps, prof = raw.applications, raw.profile
    row = apps["enterprise_row"][i]
    return {"industry": str(prof["industry"][row]), "region": str(prof["region"][row]),
            "legal_form": str(prof["legal_form"][row]),
            "application_date": apps["application_date"][i].astype(object),
            "requested_amount": float(apps["requested_amount"][i]), "term_months": int(apps["term_months"][i]),
            "purpose": str(apps["purpose"][i])}


class Engine:
    """A loaded champion bundle, ready to score; immutable, so a promotion swaps engines, never mutates one."""

    def __init__(self, bundle: Bundle) -> None:
        if bundle.kind != "catalog":
            raise ValueError(f"bundle {bundle.version} is a '{bundle.kind}' model; applications need a catalog model")
        self.bundle = bundle
        self.version = bundle.version
        self.names = bundle.feature_names
        self.points_per_margin = bundle.scorer.points_per_margin
        self.medians: dict[str, dict[str, float]] = bundle.metadata.get("industry_medians", {})

    def score(self, raw: RawData, policy: Policy, *, allowed_sources: list[str] | None = None,
              fm: FeatureMatrix | None = None) -> list[Scored]:
        """Score every application of ``raw`` (one for an API request, a whole folder offline)."""
        fm = fm if fm is not None else build_features(raw, allowed_sources=allowed_sources)
        contrib = self.bundle.contributions(fm.values)
        return [self.decide(fm.values[i], contrib[i], application_context(raw, i), policy,
                            tuple(s for j, s in enumerate(MONTHLY_SOURCES) if fm.sources_used[i, j]))
                for i in range(len(fm.values))]

    def decide(self, x: np.ndarray, contrib: np.ndarray, context: dict, policy: Policy,
               sources_used: tuple[str, ...] = ()) -> Scored:
        """One application from its features and TreeSHAP row: PD, score, grade, policy, reasons, recourse.
        Replay calls this with a stored feature snapshot and gets the same result."""
        margin = float(contrib.sum())
        pd, score, grade = (v[0] for v in self.bundle.scorer.apply(np.array([margin])))
        points = contrib[:-1] * self.points_per_margin
        feats = dict(zip(self.names, x, strict=True))
        revenue = float(monthly_revenue(np.array(feats["pay_inflow_avg_12m"]), np.array(feats["tax_sales_avg_12m"])))
        context = {**context, "monthly_revenue": None if math.isnan(revenue) else float(revenue)}
        outcome = policy.decide(PolicyInput(pd=float(pd), score=float(score), grade=str(grade), features=feats,
                                            **context))
        adverse = outcome.decision != "approve"
        medians = self.medians.get(context["industry"])
        groups = group_points(self.names, x, points)
        return Scored(
            features=x, sources_used=sources_used, margin=margin, base_value=float(contrib[-1]),
            contributions=contrib[:-1], points=points, pd=float(pd), score=float(score), grade=str(grade),
            reasons=tuple(principal_reasons(self.names, x, points, medians, groups)) if adverse else (),
            groups=groups, outcome=outcome,
            recourse=self.recourse(x, points, margin, medians, policy, context) if adverse else None)

    def unclipped_score(self, margin: np.ndarray) -> np.ndarray:
        return self.bundle.scorer.scaling.score_from_logit(self.bundle.scorer.calibration.logit(margin))

    def recourse(self, x: np.ndarray, points: np.ndarray, margin: float, medians: dict[str, float] | None,
                 policy: Policy, context: dict) -> Recourse:
        """Up to three changes the applicant can make, each re-scored by the model, and whether together they
        would turn the decision into an approval (re-scored and re-decided, not guessed)."""
        current = float(self.unclipped_score(np.array([margin]))[0])
        candidates = recourse_candidates(self.names, x, points, medians)
        j_loan = self.names.index("loan_to_revenue")
        floor = policy.spec.limit.min_limit / context["requested_amount"] * x[j_loan]  # the ratio at the minimum
        candidates = [(j, max(t, floor) if j == j_loan else t) for j, t in candidates
                      if j != j_loan or max(t, floor) < x[j_loan]]  # a smaller amount, but one the lender offers
        suggestions: list[Suggestion] = []
        if candidates:
            trial = np.repeat(x[None, :], len(candidates), axis=0)
            for k, (j, target) in enumerate(candidates):
                trial[k, j] = target
            gains = self.unclipped_score(self.bundle.margin(trial)) - current
            ranked = sorted(zip(gains, candidates, strict=True), key=lambda t: -t[0])
            for gain, (j, target) in ranked[:MAX_RECOURSE]:
                if gain < MIN_GAIN_POINTS:
                    break
                feature = self.names[j]
                zh, en = suggestion_text(feature, float(x[j]), target, context["requested_amount"])
                suggestions.append(Suggestion(feature, float(x[j]), target, ACTIONS[feature].months, zh, en,
                                              round(float(gain), 2)))
        combined = x.copy()
        changed = dict(context)
        for s in suggestions:
            combined[self.names.index(s.feature)] = s.target
            if s.feature == "loan_to_revenue":
                changed["requested_amount"] = context["requested_amount"] * s.target / s.current
        new_margin = self.bundle.margin(combined[None, :])
        pd, score, grade = self.bundle.scorer.apply(new_margin)
        decision = policy.decide(PolicyInput(pd=float(pd[0]), score=float(score[0]), grade=str(grade[0]),
                                             features=dict(zip(self.names, combined, strict=True)), **changed))
        flips = bool(suggestions) and decision.decision == "approve"
        combined_score = float(self.unclipped_score(new_margin)[0])
        zh, en = no_flip_note(flips, combined_score - current)
        return Recourse(tuple(suggestions), round(combined_score, 2), flips, zh, en)
