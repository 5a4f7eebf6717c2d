"""A new model against the champion, and cut-offs against targets, on the same out-of-time applications.

Every application is decided by ``Engine.score`` under the lender's policy, exactly as the API would decide it.
A decision is the most severe of the policy's hits (decline > refer > approve), and only the two score hits
depend on the cut-offs. So each application is kept as its score and the severity of its other hits, and any
pair of cut-offs is re-decided exactly with two comparisons per row: that is what lets the optimiser sweep
hundreds of cut-off pairs without scoring again (``decisions_at``; tests check it against ``Policy.decide``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from service.monitoring.backtest import auc
from service.scoring.engine import Engine
from service.scoring.policy import SCORE_REVIEW_BAND, Policy
from service.scoring.raw import MONTHLY_SOURCES, RawData

APPROVE, REFER, DECLINE = 0, 1, 2
DECISIONS = ("approve", "refer", "decline")
SCORE_RULES = (SCORE_REVIEW_BAND, "SCORE_BELOW_CUTOFF")  # the hits the cut-offs produce (Policy._score_hits)
APPROVAL_SHIFT_FLAG = 0.02  # an approval-rate move worth a warning at promotion (two points)


@dataclass(frozen=True)
class Decided:
    """One model's decisions on a set of applications, with what re-deciding them at other cut-offs needs."""

    version: str
    pd: np.ndarray
    score: np.ndarray
    grade: np.ndarray
    decision: np.ndarray  # APPROVE / REFER / DECLINE under the policy's own cut-offs
    other: np.ndarray  # severity of every hit but the score hits: what the cut-offs cannot change
    scaling: dict
    withheld: np.ndarray  # (n, sources) True where the application did not share the source


def decide_all(engine: Engine, raw: RawData, policy: Policy) -> Decided:
    scored = engine.score(raw, policy)
    severity = {d: i for i, d in enumerate(DECISIONS)}
    other = [max((severity[h.action] for h in s.outcome.rule_hits
                  if h.code not in SCORE_RULES and h.action in severity), default=APPROVE) for s in scored]
    return Decided(version=engine.version, pd=np.array([s.pd for s in scored]),
                   score=np.array([s.score for s in scored]), grade=np.array([s.grade for s in scored]),
                   decision=np.array([severity[s.outcome.decision] for s in scored], dtype=np.int8),
                   other=np.array(other, dtype=np.int8),
                   scaling=dict(engine.bundle.metadata["scorer"]["scaling"]),
                   withheld=np.array([[src not in s.sources_used for src in MONTHLY_SOURCES] for s in scored],
                                     dtype=bool).reshape(len(scored), len(MONTHLY_SOURCES)))


def decisions_at(d: Decided, approve_min: float, refer_min: float) -> np.ndarray:
    """The decisions the policy would make with these cut-offs (exact: see the module's docstring)."""
    band = np.where(d.score >= approve_min, APPROVE, np.where(d.score >= refer_min, REFER, DECLINE))
    return np.maximum(d.other, band).astype(np.int8)


def _rate(mask: np.ndarray) -> float:
    return float(mask.mean()) if len(mask) else 0.0


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None


def ks(score_risk: np.ndarray, y: np.ndarray) -> float | None:
    """Kolmogorov-Smirnov: the largest gap between the defaulters' and the others' cumulative risk."""
    if y.all() or not y.any():
        return None
    order = np.argsort(-score_risk, kind="stable")
    bad = np.cumsum(y[order]) / y.sum()
    good = np.cumsum(1 - y[order]) / (1 - y).sum()
    return float(np.max(np.abs(bad - good)))


def outcomes(decision: np.ndarray, pd: np.ndarray, y: np.ndarray) -> dict:
    """Rates of each decision, the straight-through share (decided without a person), and the bad rates among
    approvals: expected (mean PD) and observed."""
    approved = decision == APPROVE
    return {"approval_rate": _rate(approved), "referral_rate": _rate(decision == REFER),
            "decline_rate": _rate(decision == DECLINE), "straight_through": 1.0 - _rate(decision == REFER),
            "approved_expected_bad_rate": _mean(pd[approved]), "approved_observed_bad_rate": _mean(y[approved])}


def model_report(d: Decided, y: np.ndarray) -> dict:
    grades = []
    for g in sorted(set(d.grade.tolist())):
        m = d.grade == g
        grades.append({"grade": g, "n": int(m.sum()), "mean_pd": float(d.pd[m].mean()),
                       "observed_bad_rate": float(y[m].mean())})
    return {"version": d.version, "auc": auc(d.pd, y), "ks": ks(d.pd, y), "calibration_by_grade": grades,
            **outcomes(d.decision, d.pd, y)}


def swap_set(old: np.ndarray, new: np.ndarray, y: np.ndarray) -> list[dict]:
    """Champion decision x candidate decision: how many applications, and their observed bad rate."""
    cells = []
    for i, was in enumerate(DECISIONS):
        for j, now in enumerate(DECISIONS):
            m = (old == i) & (new == j)
            cells.append({"champion": was, "candidate": now, "n": int(m.sum()), "bad_rate": _mean(y[m])})
    return cells


def cut_offs_for(d: Decided, approval_rate: float, referral_band_share: float) -> dict:
    """Whole-point cut-offs under which ``d`` approves nearest ``approval_rate`` of the applications and sends
    nearest ``referral_band_share`` to the score band: what keeps a policy's meaning when the scores moved."""
    n = len(d.score)

    def nearest(scores: np.ndarray, share: float, rate) -> float:  # noqa: ANN001 - rate: cut-off -> share
        k = min(round(share * n), len(scores))
        if k == 0:
            return float(math.ceil(scores.max()) + 1) if len(scores) else math.inf
        kth = math.floor(np.sort(scores)[::-1][k - 1])  # the rate is monotone: the nearest point is next to it
        return min((float(kth + step) for step in (-1, 0, 1)), key=lambda c: (abs(rate(c) - share), -c))

    eligible = d.score[d.other == APPROVE]  # only these can be approved at all
    approve = nearest(eligible, approval_rate, lambda c: _rate(decisions_at(d, c, c) == APPROVE))
    below = d.score[(d.score < approve) & (d.other <= REFER)]
    refer = min(nearest(below, referral_band_share, lambda c: _rate(below >= c) * len(below) / n), approve) \
        if len(below) else approve
    achieved = decisions_at(d, approve, refer)
    return {"approve_min_score": approve, "refer_min_score": refer, "approval_rate": _rate(achieved == APPROVE),
            "referral_rate": _rate(achieved == REFER)}


def _band_share(d: Decided, policy: Policy) -> float:
    c = policy.spec.cut_offs
    return _rate((d.score >= c.refer_min_score) & (d.score < c.approve_min_score) & (d.other <= REFER))


def compare(candidate: Decided, champion: Decided, y: np.ndarray, policy: Policy) -> dict:
    """The candidate against the champion on the same applications under the same policy."""
    new, old = model_report(candidate, y), model_report(champion, y)
    warnings = []
    scaling_changed = candidate.scaling != champion.scaling
    if scaling_changed:
        warnings.append(f"score scaling changed ({_scaling_text(champion.scaling)} -> "
                        f"{_scaling_text(candidate.scaling)}): the policy's cut-offs are in points and now mean "
                        "another risk")
    shift = new["approval_rate"] - old["approval_rate"]
    if abs(shift) >= APPROVAL_SHIFT_FLAG:
        warnings.append(f"approval rate moves from {old['approval_rate']:.1%} to {new['approval_rate']:.1%} "
                        f"under the unchanged policy {policy.version}")
    keeping = cut_offs_for(candidate, old["approval_rate"], _band_share(champion, policy)) \
        if scaling_changed or abs(shift) >= APPROVAL_SHIFT_FLAG else None
    c = policy.spec.cut_offs
    return {"policy": policy.version, "applications": len(y), "bad_rate": float(y.mean()) if len(y) else None,
            "cut_offs": {"approve_min_score": c.approve_min_score, "refer_min_score": c.refer_min_score},
            "candidate": new, "champion": old, "swap_set": swap_set(champion.decision, candidate.decision, y),
            "scaling_changed": scaling_changed, "cut_offs_keeping_approval": keeping, "warnings": warnings}


def _scaling_text(s: dict) -> str:
    return f"{s['base_score']:g} points at odds {s['base_odds']:g}:1, {s['pdo']:g} points to double"


# --- the cut-off optimiser --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Targets:
    straight_through: float = 0.95  # share decided without a person
    max_bad_rate: float | None = None  # expected bad rate (mean PD) among approvals
    approval_rate: float | None = None


def sweep(d: Decided, y: np.ndarray, step: float = 1.0) -> list[dict]:
    """Approval rate and bad rates among approvals for every approve cut-off on a grid of ``step`` points."""
    grid = np.arange(math.floor(d.score.min()), math.ceil(d.score.max()) + step, step)
    return [{"approve_min_score": float(a), **outcomes(decisions_at(d, a, a), d.pd, y)} for a in grid]


def optimise(d: Decided, y: np.ndarray, policy: Policy, targets: Targets) -> dict:
    """Approve and refer cut-offs for the targets, with the trade-off curve they were chosen from.

    The approve cut-off is the lowest whose approvals meet the bad-rate target (or the one nearest the approval
    target, or the policy's own when neither is given); the refer band is then the widest that keeps the
    straight-through share at its target. Referrals by the policy's other rules count against that share: when
    they alone exceed it, the report says so and which rules they are, since no cut-off can fix it."""
    curve = sweep(d, y)
    current = policy.spec.cut_offs
    notes = []
    if targets.max_bad_rate is not None:
        meeting = [p for p in curve if p["approved_expected_bad_rate"] is not None
                   and p["approved_expected_bad_rate"] <= targets.max_bad_rate]
        if not meeting:
            raise ValueError(f"no approve cut-off keeps the expected bad rate among approvals at or below "
                             f"{targets.max_bad_rate:.2%} on these applications")
        approve = min(p["approve_min_score"] for p in meeting)
        notes.append(f"approve cut-off: the lowest with an expected bad rate among approvals <= "
                     f"{targets.max_bad_rate:.2%}")
    elif targets.approval_rate is not None:
        approve = min(curve, key=lambda p: (abs(p["approval_rate"] - targets.approval_rate),
                                            -p["approve_min_score"]))["approve_min_score"]
        notes.append(f"approve cut-off: the approval rate nearest {targets.approval_rate:.1%}")
    else:
        approve = current.approve_min_score
        notes.append("approve cut-off: the policy's own (no bad-rate or approval target given)")
    by_rules = _rate(d.other == REFER)
    if 1.0 - by_rules < targets.straight_through:
        notes.append(f"the policy's other rules alone refer {by_rules:.1%}: no cut-off reaches "
                     f"{targets.straight_through:.0%} straight-through; the refer band is closed")
    refer = approve
    for width in np.arange(1.0, approve - math.floor(d.score.min()) + 1.0):
        decided = decisions_at(d, approve, approve - width)
        if 1.0 - _rate(decided == REFER) < targets.straight_through:
            break
        refer = float(approve - width)
    chosen = decisions_at(d, approve, refer)
    before = decisions_at(d, current.approve_min_score, current.refer_min_score)
    # A referral without some source's data may be settled by asking for it before asking a person.
    referred = chosen == REFER
    ask_first = {src: int((referred & d.withheld[:, j]).sum()) for j, src in enumerate(MONTHLY_SOURCES)
                 if (referred & d.withheld[:, j]).any()}
    return {"targets": targets.__dict__, "applications": len(y), "policy": policy.version,
            "current": {"approve_min_score": current.approve_min_score, "refer_min_score": current.refer_min_score,
                        **outcomes(before, d.pd, y)},
            "proposed": {"approve_min_score": float(approve), "refer_min_score": float(refer),
                         "refer_band_points": float(approve - refer), **outcomes(chosen, d.pd, y)},
            "referred_by_other_rules": by_rules, "referred_without_source": ask_first,
            "referred_with_all_sources": int((referred & ~d.withheld.any(axis=1)).sum()), "notes": notes,
            "curve": curve}
