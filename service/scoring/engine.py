"""The scoring engine: features -> model -> PD, score, grade -> explanation -> lender policy, in one pass.

The same ``Engine.score`` serves one API request (n = 1) and a whole folder offline (``smecredit score``):
features from ``build_features``, margin and exact TreeSHAP contributions from one ``pred_contrib`` call
(their row sum *is* the margin), then calibration, points, reasons and the tenant's policy.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import functools
import math
from dataclasses import dataclass

import numpy as np

from service.scoring.bundle import AnyBundle
from service.scoring.explain import (
    ACTIONS,
    GROUP_NAMES,
    MAX_RECOURSE,
    MIN_GAIN_POINTS,
    SCORE_RULES,
    Reason,
    Recourse,
    Remedy,
    RuleRecourse,
    Suggestion,
    amount_remedy,
    group_totals,
    limit_remedy,
    principal_reasons_many,
    recourse_candidates,
    rule_remedy,
    rules_note,
    suggestion_text,
    suggestions_note,
)
from service.scoring.features import FeatureMatrix, build_features, monthly_revenue
from service.scoring.fraud import FraudModel
from service.scoring.graph import GraphIndex
from service.scoring.policy import Policy, PolicyInput, PolicyOutcome
from service.scoring.raw import MONTHLY_SOURCES, RawData


@dataclass(frozen=True)
class Scale:
    """Where a score can stand: the bundle's range and where this policy refers and approves (the page's gauge)."""

    min_score: float
    max_score: float
    refer_min_score: float
    approve_min_score: float


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
    scale: Scale  # one object shared by every row decided together
    fraud: dict[str, float] | None = None  # the fraud model's fraud_score and fraud_flag; None without a model


BLOCK_ROWS = 4096  # rows decided together: one TreeSHAP call, one re-scoring call per block


@functools.cache
def _source_names(mask: int) -> tuple[str, ...]:
    return tuple(s for j, s in enumerate(MONTHLY_SOURCES) if mask >> j & 1)


def sources_of(used: np.ndarray) -> list[tuple[str, ...]]:
    """The names of the sources used, per row of a FeatureMatrix's ``sources_used``."""
    masks = used.astype(np.int64) @ (1 << np.arange(len(MONTHLY_SOURCES), dtype=np.int64))
    return [_source_names(m) for m in masks.tolist()]


def application_contexts(raw: RawData, rows: np.ndarray) -> list[dict]:
    """What the policy needs to know about each application at ``rows`` besides its features (no identifiers)."""
    apps, prof = raw.applications, raw.profile
    ent = apps["enterprise_row"][rows]
    columns = zip(prof["industry"][ent].tolist(), prof["region"][ent].tolist(), prof["legal_form"][ent].tolist(),
                  apps["application_date"][rows].astype(object).tolist(), apps["requested_amount"][rows].tolist(),
                  apps["term_months"][rows].tolist(), apps["purpose"][rows].tolist(), strict=True)
    return [{"industry": str(industry), "region": str(region), "legal_form": str(legal_form),
             "application_date": date, "requested_amount": float(amount), "term_months": int(term),
             "purpose": str(purpose)}
            for industry, region, legal_form, date, amount, term, purpose in columns]


def application_context(raw: RawData, i: int) -> dict:
    """``application_contexts`` of application ``i``."""
    return application_contexts(raw, np.array([i]))[0]


class Engine:
    """A loaded champion bundle, ready to score; immutable, so a promotion swaps engines, never mutates one.
    LightGBM or scorecard: both give ``contributions`` (base value last, row sum = margin) and ``margin``."""

    def __init__(self, bundle: AnyBundle, graph: GraphIndex | None = None, fraud: FraudModel | None = None) -> None:
        if bundle.kind != "catalog":
            raise ValueError(f"bundle {bundle.version} is a '{bundle.kind}' model; applications need a catalog model")
        self.bundle = bundle
        self.graph = graph  # the lender's related-party graph for online applicants (a folder brings its own)
        self.fraud = fraud  # the fraud score the policy's fraud checks may read (fraud_score, fraud_flag)
        self.version = bundle.version
        self.names = bundle.feature_names
        self.points_per_margin = bundle.scorer.points_per_margin
        self.medians: dict[str, dict[str, float]] = bundle.metadata.get("industry_medians", {})
        self._revenue_columns = (self.names.index("pay_inflow_avg_12m"), self.names.index("tax_sales_avg_12m"))
        self._loan = self.names.index("loan_to_revenue")

    def score(self, raw: RawData, policy: Policy, *, allowed_sources: list[str] | None = None,
              fm: FeatureMatrix | None = None, facts: list[dict] | None = None) -> list[Scored]:
        """Score every application of ``raw`` (one for an API request, a whole folder offline). ``facts``: per
        application, what the policy reads besides its features (``{"velocity": counts}``), kept in its context."""
        if raw.graph is None and self.graph is not None:
            raw = dataclasses.replace(raw, graph=self.graph)
        fm = fm if fm is not None else build_features(raw, allowed_sources=allowed_sources)
        out: list[Scored] = []
        for start in range(0, len(fm.values), BLOCK_ROWS):
            rows = np.arange(start, min(start + BLOCK_ROWS, len(fm.values)))
            X = fm.values[start:start + BLOCK_ROWS]
            contexts = application_contexts(raw, rows)
            if facts is not None:
                contexts = [{**c, **facts[i]} for c, i in zip(contexts, rows.tolist(), strict=True)]
            if self.fraud is not None:  # one predict call per block; kept in the context, as replay needs it
                p = self.fraud.score(X).tolist()
                contexts = [{**c, "fraud": {"fraud_score": q, "fraud_flag": float(q >= self.fraud.threshold)}}
                            for c, q in zip(contexts, p, strict=True)]
            out += self.decide_many(X, self.bundle.contributions(X), contexts, policy,
                                    sources_of(fm.sources_used[start:start + BLOCK_ROWS]))
        return out

    def decide(self, x: np.ndarray, contrib: np.ndarray, context: dict, policy: Policy,
               sources_used: tuple[str, ...] = ()) -> Scored:
        """One application from its features and TreeSHAP row: PD, score, grade, policy, reasons, recourse.
        Replay calls this with a stored feature snapshot and gets the same result."""
        return self.decide_many(x[None, :], contrib[None, :], [context], policy, [sources_used])[0]

    def decide_many(self, X: np.ndarray, contrib: np.ndarray, contexts: list[dict], policy: Policy,
                    sources_used: list[tuple[str, ...]]) -> list[Scored]:
        """``decide`` for each row: the arithmetic runs on all rows at once, the policy row by row, and the
        refer and decline rows are explained together (one re-scoring call for all their recourse)."""
        margin = contrib.sum(axis=1)
        points = contrib[:, :-1] * self.points_per_margin
        totals = group_totals(self.names, X, points)
        pd_, score_, grade_, contexts, outcomes = self._policy_decide(X, margin, contexts, policy)
        adverse = [i for i, o in enumerate(outcomes) if o.decision != "approve"]
        medians = [self.medians.get(contexts[i]["industry"]) for i in adverse]
        reasons = dict(zip(adverse, principal_reasons_many(self.names, X[adverse], points[adverse], medians,
                                                           totals[adverse]), strict=True))
        recourse = dict(zip(adverse, self._recourse_many(X[adverse], points[adverse], margin[adverse], medians,
                                                        policy, [contexts[i] for i in adverse],
                                                        [outcomes[i] for i in adverse],
                                                        [(pd_[i], score_[i], str(grade_[i])) for i in adverse]),
                            strict=True))
        scaling, cut_offs = self.bundle.scorer.scaling, policy.spec.cut_offs
        scale = Scale(scaling.min_score, scaling.max_score, cut_offs.refer_min_score, cut_offs.approve_min_score)
        return [Scored(features=X[i], sources_used=sources_used[i], margin=float(margin[i]),
                       base_value=float(contrib[i, -1]), contributions=contrib[i, :-1], points=points[i], pd=pd_[i],
                       score=score_[i], grade=str(grade_[i]), reasons=tuple(reasons.get(i, ())),
                       groups=dict(zip(GROUP_NAMES, row_totals, strict=True)), outcome=outcomes[i],
                       recourse=recourse.get(i), scale=scale, fraud=contexts[i].get("fraud"))
                for i, row_totals in enumerate(totals.tolist())]

    def _policy_decide(self, X: np.ndarray, margin: np.ndarray, contexts: list[dict], policy: Policy,
                       ) -> tuple[list[float], list[float], list[str], list[dict], list[PolicyOutcome]]:
        """PD, score, grade and the policy's outcome of each row: the one decision path, for applications and
        for the remedies of their rules alike. Returns the contexts with the monthly revenue the policy used."""
        pd, score, grade = self.bundle.scorer.apply(margin)
        revenue = monthly_revenue(X[:, self._revenue_columns[0]], X[:, self._revenue_columns[1]])
        # "sector": the industry medians the bundle carries, for fraud checks relative_to: industry_median
        contexts = [{**c, "monthly_revenue": None if math.isnan(r) else r,
                     "sector": self.medians.get(c["industry"], {})}
                    for c, r in zip(contexts, revenue.tolist(), strict=True)]
        pd_, score_, grade_ = pd.tolist(), score.tolist(), grade.tolist()
        outcomes = [policy.decide(PolicyInput(pd=p, score=s, grade=str(g),
                                              features=dict(zip(self.names, x, strict=True)), **c))
                    for p, s, g, x, c in zip(pd_, score_, grade_, X.tolist(), contexts, strict=True)]
        return pd_, score_, grade_, contexts, outcomes

    def unclipped_score(self, margin: np.ndarray) -> np.ndarray:
        return self.bundle.scorer.scaling.score_from_logit(self.bundle.scorer.calibration.logit(margin))

    def _recourse_many(self, X: np.ndarray, points: np.ndarray, margin: np.ndarray,
                       medians: list[dict[str, float] | None], policy: Policy, contexts: list[dict],
                       outcomes: list[PolicyOutcome], scores: list[tuple[float, float, str]]) -> list[Recourse]:
        """For each row, up to three changes the applicant can make, each re-scored by the model, and whether
        together they would turn the decision into an approval (re-scored and re-decided, not guessed); then the
        remedies of the lender's rules that fired, each re-decided by ``_policy_decide``. The trials of all rows
        go to the model in one call, and so do the combined changes and the remedies."""
        if not len(X):
            return []
        current = self.unclipped_score(margin)
        j_loan = self._loan
        candidates = []
        for x, p, m, context in zip(X, points, medians, contexts, strict=True):
            floor = policy.spec.limit.min_limit / context["requested_amount"] * x[j_loan]  # the ratio at the minimum
            candidates.append([(j, max(t, floor) if j == j_loan else t)
                               for j, t in recourse_candidates(self.names, x, p, m)
                               if j != j_loan or max(t, floor) < x[j_loan]])  # a smaller amount the lender offers
        flat = [c for row in candidates for c in row]
        gains = np.empty(0)
        if flat:
            owner = np.repeat(np.arange(len(X)), [len(c) for c in candidates])
            trial = X[owner]
            trial[np.arange(len(flat)), [j for j, _ in flat]] = [t for _, t in flat]
            gains = self.unclipped_score(self.bundle.margin(trial)) - current[owner]
        combined = X.copy()
        changed = [dict(c) for c in contexts]
        suggestions: list[list[Suggestion]] = []
        at = 0
        for i, (row, x, context) in enumerate(zip(candidates, X, contexts, strict=True)):
            ranked = sorted(zip(gains[at:at + len(row)], row, strict=True), key=lambda t: -t[0])
            at += len(row)
            mine: list[Suggestion] = []
            for gain, (j, target) in ranked[:MAX_RECOURSE]:
                if gain < MIN_GAIN_POINTS:
                    break
                feature = self.names[j]
                zh, en = suggestion_text(feature, float(x[j]), target, context["requested_amount"])
                mine.append(Suggestion(feature, float(x[j]), target, ACTIONS[feature].months, zh, en,
                                       round(float(gain), 2)))
                combined[i, j] = target
                if feature == "loan_to_revenue":
                    changed[i]["requested_amount"] = context["requested_amount"] * target / float(x[j])
            suggestions.append(mine)
        new_margin = self.bundle.margin(combined)
        pd, score, grade = self.bundle.scorer.apply(new_margin)
        combined_score = self.unclipped_score(new_margin)
        rules = self._rule_recourse(X, policy, contexts, outcomes, scores, combined, changed,
                                    [bool(m) for m in suggestions])
        out = []
        for i, (mine, c) in enumerate(zip(suggestions, changed, strict=True)):
            decision = policy.decide(PolicyInput(pd=float(pd[i]), score=float(score[i]), grade=str(grade[i]),
                                                 features=dict(zip(self.names, combined[i], strict=True)), **c))
            flips = bool(mine) and decision.decision == "approve"
            zh, en = suggestions_note(flips, float(combined_score[i]) - float(current[i]), rules[i])
            out.append(Recourse(tuple(mine), round(float(combined_score[i]), 2), flips, zh, en, rules[i]))
        return out

    def _remedies(self, x: np.ndarray, outcome: PolicyOutcome, context: dict, pd: float, score: float, grade: str,
                  policy: Policy) -> list[Remedy]:
        """A remedy, not yet decided, for each knock-out and limit rule that fired, and the amount the policy
        funds when more was asked."""
        rules = {r.code: r for r in (*policy.spec.knock_outs, *policy.spec.local_rules)}
        features = dict(zip(self.names, x.tolist(), strict=True))
        out = []
        for hit in outcome.rule_hits:
            if hit.action not in ("decline", "refer"):
                continue
            rule = rules.get(hit.code)
            remedy = (rule_remedy(hit.code, rule.feature, rule.op, rule.value, features[rule.feature], features)
                      if rule is not None else
                      limit_remedy(hit.code, grade, policy.spec.limit.revenue_months_by_grade[grade]))
            if remedy is not None:
                out.append(remedy)
        revenue = context["monthly_revenue"]
        fundable = policy.fundable_limit(PolicyInput(pd=pd, score=score, grade=grade, features=features, **context))
        if fundable is not None and context["requested_amount"] > fundable:
            out.append(amount_remedy(context["requested_amount"], fundable, features["loan_to_revenue"], revenue))
        return out

    def _rule_recourse(self, X: np.ndarray, policy: Policy, contexts: list[dict], outcomes: list[PolicyOutcome],
                       scores: list[tuple[float, float, str]], combined: np.ndarray, changed: list[dict],
                       has_suggestions: list[bool]) -> list[RuleRecourse | None]:
        """Each remedy re-decided alone, then all of a row's remedies at once, with and without the model's
        suggestions; every trial through ``_policy_decide`` with exact TreeSHAP margins, as ``decide`` would."""
        plans = [self._remedies(x, o, c, *sc, policy)
                 for x, o, c, sc in zip(X, outcomes, contexts, scores, strict=True)]
        rows, trial_contexts, slots = [], [], []  # slots: (row, remedy index or "all" or "with")
        for i, plan in enumerate(plans):
            acting = [k for k, r in enumerate(plan) if r.changes]
            trials = [(("all",), X[i], contexts[i])]
            if has_suggestions[i]:
                trials.append((("with",), combined[i], changed[i]))
            if len(acting) > 1:  # one remedy alone is all of them
                trials += [((k,), X[i], contexts[i]) for k in acting]
            for keys, x, context in trials if acting else ():
                remedies = [plan[k] for k in (acting if keys[0] in ("all", "with") else keys)]
                rows.append(self._changed(x, remedies))
                trial_contexts.append(self._later(context, remedies))
                slots.append((i, keys[0]))
        decided: dict[tuple[int, object], tuple[float, PolicyOutcome]] = {}
        if rows:
            T = np.array(rows)
            _, score_, _, _, trial_outcomes = self._policy_decide(T, self.bundle.contributions(T).sum(axis=1),
                                                                  trial_contexts, policy)
            decided = dict(zip(slots, zip(score_, trial_outcomes, strict=True), strict=True))
            for i, plan in enumerate(plans):  # the trials a row's own trials stand for
                acting = [k for k, r in enumerate(plan) if r.changes]
                if len(acting) == 1:
                    decided[(i, acting[0])] = decided[(i, "all")]
                if acting and not has_suggestions[i]:
                    decided[(i, "with")] = decided[(i, "all")]
        out: list[RuleRecourse | None] = []
        for i, (plan, outcome) in enumerate(zip(plans, outcomes, strict=True)):
            if not plan:
                out.append(None)
                continue
            remedies = tuple(dataclasses.replace(r, **_verdict(decided.get((i, k)))) for k, r in enumerate(plan))
            everything = _verdict(decided.get((i, "all")))
            with_suggestions = _verdict(decided.get((i, "with")))["decision"]
            decides = any(h.action == outcome.decision and h.code not in SCORE_RULES for h in outcome.rule_hits)
            zh, en = rules_note(everything["decision"], with_suggestions, has_suggestions[i])
            out.append(RuleRecourse(remedies, decides, **everything, with_suggestions=with_suggestions,
                                    note_zh=zh, note_en=en))
        return out

    def _changed(self, x: np.ndarray, remedies: list[Remedy]) -> np.ndarray:
        y = x.copy()
        for r in remedies:
            for c in r.changes:
                y[self.names.index(c.feature)] = c.target
        return y

    @staticmethod
    def _later(context: dict, remedies: list[Remedy]) -> dict:
        """The application as it would be made once the remedies take effect: the amount asked, and the date
        once the time they need has passed (the term of a harvest loan follows the month)."""
        out = dict(context)
        for r in remedies:
            if r.amount is not None:
                out["requested_amount"] = r.amount
        months = max((r.months or 0 for r in remedies), default=0)
        if months:
            out["application_date"] = months_later(context["application_date"], months)
        return out


def _verdict(decided: tuple[float, PolicyOutcome] | None) -> dict:
    """What a re-decision says: the decision, score, offer and the adverse rules still applying."""
    if decided is None:
        return {"decision": None, "score": None, "offer": None, "still": ()}
    score, outcome = decided
    return {"decision": outcome.decision, "score": score,
            "offer": None if outcome.offer is None else outcome.offer.to_json(),
            "still": tuple(h.code for h in outcome.rule_hits if h.action in ("decline", "refer"))}


def months_later(date: dt.date, months: int) -> dt.date:
    """The same day ``months`` later (the month's last day when it is shorter)."""
    year, month = divmod(date.month - 1 + months, 12)
    year += date.year
    return date.replace(year=year, month=month + 1, day=min(date.day, calendar.monthrange(year, month + 1)[1]))
