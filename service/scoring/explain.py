"""Explanations from the model actually used: exact TreeSHAP contributions, in score points, by reason group.

Reference: LightGBM's TreeSHAP states each contribution against the model's expected raw score over the
training data (the ``base value``): contributions plus the base value equal the applicant's raw score. Points
are contributions times ``points_per_margin`` (negative points lower the score, i.e. push toward decline).

Principal reasons are reason groups whose points pushed toward decline, at most four, the most adverse first.
Each is phrased from its most adverse *scored* feature: a feature whose value is missing (source absent or
not consented to) is never named, and no catalogue feature reads a protected attribute.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from service.scoring.catalog import BY_NAME, GROUPS, MISSING_DATA
from service.scoring.features import TAX_GRADE_SCORE
from service.scoring.raw import INDUSTRIES

MAX_REASONS = 4
MIN_REASON_POINTS = 0.5  # a group that cost less than half a point is not a reason (the chart drops it too)
GRADE_BY_SCORE = {v: k for k, v in TAX_GRADE_SCORE.items()}


@dataclass(frozen=True)
class Reason:
    code: str
    group: str
    feature: str
    text_zh: str
    text_en: str
    impact_points: float


def group_points(names: tuple[str, ...], values: np.ndarray, points: np.ndarray) -> dict[str, float]:
    """Points per reason group over the features that were scored; features without a value (source absent
    or not consented to) are summed apart, under ``missing_data``, so no reason ever stands on them."""
    totals = dict.fromkeys(GROUPS, 0.0)
    for name, value, p in zip(names, values, points, strict=True):
        totals[MISSING_DATA if math.isnan(value) else BY_NAME[name].group] += float(p)
    return totals


def display_value(feature: str, value: float) -> str:
    """The applicant's value as their reason text shows it (codes back to labels)."""
    f = BY_NAME[feature]
    if feature == "tax_grade":
        return GRADE_BY_SCORE.get(value, "?")
    if f.categorical:
        category = f.categories[int(value)]
        return INDUSTRIES[category][1] if feature == "biz_industry" else category
    return f.fmt.format(value)


def reason_texts(feature: str, value: float, reference: float | None) -> tuple[str, str]:
    f = BY_NAME[feature]
    shown = display_value(feature, value)
    ref = f.fmt.format(reference) if reference is not None and not f.categorical else "—"
    zh, en = f.reason_zh.format(value=shown, reference=ref), f.reason_en.format(value=shown, reference=ref)
    if reference is None and "{reference}" in f.reason_en:
        # No industry comparison available: keep the applicant's own value, drop the comparison clause.
        zh, en = zh.split("，")[0], en.split(";")[0]
    return zh, en


def group_points_matrix(names: tuple[str, ...], X: np.ndarray, points: np.ndarray) -> dict[str, np.ndarray]:
    """``group_points`` for many rows at once (drift references and windows); tests/test_drift.py checks they
    agree row for row."""
    missing = np.isnan(X)
    out = {g: np.zeros(len(X)) for g in GROUPS}
    for j, name in enumerate(names):
        group = BY_NAME[name].group
        out[group] = out[group] + np.where(missing[:, j], 0.0, points[:, j])
        out[MISSING_DATA] = out[MISSING_DATA] + np.where(missing[:, j], points[:, j], 0.0)
    return out


def principal_reasons(names: tuple[str, ...], values: np.ndarray, points: np.ndarray,
                      medians: dict[str, float] | None, totals: dict[str, float] | None = None) -> list[Reason]:
    """At most four reason groups whose scored features together lowered the score, most adverse first, each
    with that group's points (as the chart shows them) and phrased from its most adverse scored feature."""
    totals = totals if totals is not None else group_points(names, values, points)
    worst: dict[str, tuple[float, str, float]] = {}
    for name, value, p in zip(names, values, points, strict=True):
        group = BY_NAME[name].group
        if not math.isnan(value) and (group not in worst or p < worst[group][0]):
            worst[group] = (float(p), name, float(value))
    adverse = sorted((t, g) for g, t in totals.items()
                     if g != MISSING_DATA and t <= -MIN_REASON_POINTS and g in worst)
    reasons = []
    for total, group in adverse[:MAX_REASONS]:
        _, feature, value = worst[group]
        zh, en = reason_texts(feature, value, (medians or {}).get(feature))
        reasons.append(Reason(code=group.upper(), group=group, feature=feature, text_zh=zh, text_en=en,
                              impact_points=round(total, 2)))
    return reasons


# ---------------------------------------------------------------------------------------------------------
# Recourse: what the applicant could change, how long it takes, and what it does to the score (re-scored).


@dataclass(frozen=True)
class Action:
    """A realistic change of one feature: its target (from the current value and the industry median, or None
    when no realistic move is left), how many months it takes, and how to say it."""

    feature: str
    months: int
    text_zh: str
    text_en: str
    target: Callable[[float, float | None], float | None]


def _to(value: float) -> Callable[[float, float | None], float | None]:
    return lambda current, _median: value


def _toward_median(good: int) -> Callable[[float, float | None], float | None]:
    """The industry median, when it is better than the applicant's value (good=-1: higher is better)."""
    return lambda current, median: median if median is not None and (median - current) * -good > 0 else None


def _more_streak(current: float, _median: float | None) -> float | None:
    return min(current + 6.0, 24.0)


def _lower_ratio(current: float, median: float | None) -> float | None:
    return min(current * 0.5, median) if median is not None else current * 0.5


ACTIONS: dict[str, Action] = {a.feature: a for a in (
    Action("tax_on_time_rate_12m", 12, "未来12个月按期申报每一期增值税", "File every VAT return on time for the next 12 months",
           _to(1.0)),
    Action("tax_late_filings_12m", 12, "未来12个月不再逾期申报", "Make no late tax filing for the next 12 months", _to(0.0)),
    Action("tax_arrears_to_sales", 1, "结清欠缴税款", "Pay off the outstanding tax arrears", _to(0.0)),
    Action("tax_arrears_months_12m", 12, "结清欠税并在未来12个月保持无欠税", "Clear tax arrears and keep none for 12 months",
           _to(0.0)),
    Action("tax_invoice_months_12m", 12, "未来12个月每月正常开具发票", "Issue invoices every month for the next 12 months",
           _to(12.0)),
    Action("si_paid_streak_months", 6, "再连续足额缴纳社保6个月", "Pay social insurance without a break for 6 more months",
           _more_streak),
    Action("si_missed_months_12m", 12, "未来12个月社保不断缴", "Miss no social-insurance payment for 12 months", _to(0.0)),
    Action("si_paid_rate_12m", 12, "未来12个月按月足额缴纳社保", "Pay social insurance every month for 12 months", _to(1.0)),
    Action("util_days_late_avg_6m", 6, "未来6个月按时缴纳电费", "Pay electricity bills by the due date for 6 months",
           _to(0.0)),
    Action("util_arrears_months_12m", 12, "结清欠缴电费并在未来12个月保持按时缴费",
           "Clear unpaid utility bills and pay on time for 12 months", _to(0.0)),
    Action("pay_refund_rate_6m", 6, "未来6个月将退款率降至行业中位水平", "Bring refunds down to your industry's median for 6 months",
           _toward_median(1)),
    Action("pay_inflow_cv_3m", 3, "未来3个月保持经营流水平稳", "Keep monthly receipts steady for the next 3 months",
           _toward_median(1)),
    Action("pay_inflow_cv_6m", 6, "未来6个月保持经营流水平稳", "Keep monthly receipts steady for the next 6 months",
           _toward_median(1)),
    Action("pay_net_margin_6m", 6, "未来6个月控制支出，使净流入率达到行业中位水平",
           "Keep spending below receipts so net inflow reaches your industry's median for 6 months", _toward_median(-1)),
    Action("xsrc_declared_to_inflow_6m", 6, "未来6个月通过对公账户收取经营收入，使申报销售与流水一致",
           "Receive sales through your business account for 6 months so that declared sales match your flows",
           _toward_median(1)),
    Action("bureau_inquiries_6m", 6, "未来6个月暂停向其他机构申请贷款", "Make no new loan applications elsewhere for 6 months",
           _to(0.0)),
    Action("loan_to_revenue", 0, "降低申请金额", "Apply for a smaller amount", _lower_ratio),
)}
MAX_RECOURSE = 3
MIN_GAIN_POINTS = 0.5


@dataclass(frozen=True)
class Suggestion:
    feature: str
    current: float
    target: float
    months: int
    text_zh: str
    text_en: str
    score_gain: float  # points, from re-scoring the model with the feature at its target


@dataclass(frozen=True)
class Recourse:
    suggestions: tuple[Suggestion, ...]
    combined_score: float  # the score with every suggestion applied at once, re-scored
    flips: bool  # the combined change would turn the decision into an approval
    note_zh: str
    note_en: str


def recourse_candidates(names: tuple[str, ...], values: np.ndarray, points: np.ndarray,
                        medians: dict[str, float] | None) -> list[tuple[int, float]]:
    """(feature index, target) for each actionable, scored feature that lowered the score and can improve."""
    out = []
    for j, (name, value, p) in enumerate(zip(names, values, points, strict=True)):
        action = ACTIONS.get(name)
        if action is None or not BY_NAME[name].actionable or math.isnan(value) or p >= 0:
            continue
        target = action.target(float(value), (medians or {}).get(name))
        good = -BY_NAME[name].direction  # +1: higher is better
        if target is not None and (target - value) * good > 1e-12:
            out.append((j, float(target)))
    return out


def suggestion_text(feature: str, current: float, target: float, requested_amount: float | None) -> tuple[str, str]:
    zh, en = ACTIONS[feature].text_zh, ACTIONS[feature].text_en
    if feature == "loan_to_revenue" and requested_amount:
        amount = math.floor(requested_amount * target / current / 1000) * 1000
        zh, en = f"{zh}至{amount:,.0f}元", f"{en}: CNY {amount:,.0f}"
    return zh, en


def no_flip_note(flips: bool, gain: float) -> tuple[str, str]:
    if flips:
        return ("完成以上改进后，按当前模型和政策可获批准。",
                "With all of the above, the current model and policy would approve the application.")
    return (f"即使完成以上所有改进（评分约提高{gain:.0f}分），按当前模型和政策仍不足以获得批准。",
            f"Even with all of the above (about {gain:.0f} points), the current model and policy would not approve "
            "the application; no realistic change we can compute would turn this decision.")
