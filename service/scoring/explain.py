"""Explanations from the model actually used: exact TreeSHAP contributions, in score points, by reason group.

Reference: LightGBM's TreeSHAP states each contribution against the model's expected raw score over the
training data (the ``base value``): contributions plus the base value equal the applicant's raw score. Points
are contributions times ``points_per_margin`` (negative points lower the score, i.e. push toward decline).

Principal reasons are reason groups whose points pushed toward decline, at most four, the most adverse first.
Each is phrased from its most adverse *scored* feature: a feature whose value is missing (source absent or
not consented to) is never named, and no catalogue feature reads a protected attribute.
"""

from __future__ import annotations

import functools
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


GROUP_NAMES = tuple(GROUPS)
_MISSING_INDEX = GROUP_NAMES.index(MISSING_DATA)
_BLOCK_ROWS = 4096  # group sums take rows x groups x features doubles: about 25 MB per block


@functools.cache
def _group_members(names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Each feature's group (its index in GROUPS) and the (groups, features) membership mask."""
    group_of = np.array([GROUP_NAMES.index(BY_NAME[n].group) for n in names], dtype=np.int64)
    return group_of, group_of[None, :] == np.arange(len(GROUP_NAMES))[:, None]


def group_totals(names: tuple[str, ...], X: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points per reason group (columns in GROUPS order) over the features that were scored; features without
    a value (source absent or not consented to) are summed apart, under ``missing_data``, so no reason ever
    stands on them. Each total is added up in catalogue order starting from 0.0, one feature at a time
    (``np.add.accumulate`` is sequential), so a row gives the same bits as a Python loop over its features."""
    X, points = np.atleast_2d(X), np.atleast_2d(points)
    group_of, _ = _group_members(tuple(names))
    out = np.empty((len(X), len(GROUP_NAMES)))
    for start in range(0, len(X), _BLOCK_ROWS):
        x, p = X[start:start + _BLOCK_ROWS], points[start:start + _BLOCK_ROWS]
        group = np.where(np.isnan(x), _MISSING_INDEX, group_of)
        terms = np.zeros((len(x), len(GROUP_NAMES), len(group_of) + 1))  # a leading 0.0, as the loop starts
        terms[np.arange(len(x))[:, None], group, np.arange(1, len(group_of) + 1)] = p
        out[start:start + len(x)] = np.add.accumulate(terms, axis=2)[:, :, -1]
    return out


def group_points(names: tuple[str, ...], values: np.ndarray, points: np.ndarray) -> dict[str, float]:
    """``group_totals`` of one application, by group name."""
    return dict(zip(GROUP_NAMES, group_totals(names, values, points)[0].tolist(), strict=True))


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
    """``group_totals`` by group name (drift references and windows)."""
    totals = group_totals(names, X, points)
    return {g: totals[:, k] for k, g in enumerate(GROUP_NAMES)}


def principal_reasons(names: tuple[str, ...], values: np.ndarray, points: np.ndarray,
                      medians: dict[str, float] | None, totals: dict[str, float] | None = None) -> list[Reason]:
    """At most four reason groups whose scored features together lowered the score, most adverse first, each
    with that group's points (as the chart shows them) and phrased from its most adverse scored feature."""
    row = None if totals is None else np.array([[totals[g] for g in GROUP_NAMES]])
    return principal_reasons_many(names, values[None, :], points[None, :], [medians], row)[0]


def principal_reasons_many(names: tuple[str, ...], X: np.ndarray, points: np.ndarray,
                           medians: list[dict[str, float] | None], totals: np.ndarray | None = None,
                           ) -> list[list[Reason]]:
    """``principal_reasons`` for each row of ``X`` (``totals``: ``group_totals`` of the rows, if at hand)."""
    totals = totals if totals is not None else group_totals(names, X, points)
    _, member = _group_members(tuple(names))
    scored = member[None, :, :] & ~np.isnan(X)[:, None, :]  # (rows, groups, features)
    # The first feature with the group's lowest points, as a loop keeping the strictly lower one finds it.
    worst = np.where(scored, points[:, None, :], np.inf).argmin(axis=2)
    has_scored = scored.any(axis=2)
    out = []
    for i, (row_totals, row_worst, row_has) in enumerate(zip(totals.tolist(), worst.tolist(), has_scored.tolist(),
                                                            strict=True)):
        adverse = sorted((t, g) for g, t, ok in zip(GROUP_NAMES, row_totals, row_has, strict=True)
                         if g != MISSING_DATA and t <= -MIN_REASON_POINTS and ok)
        reasons = []
        for total, group in adverse[:MAX_REASONS]:
            j = row_worst[GROUP_NAMES.index(group)]
            feature = names[j]
            zh, en = reason_texts(feature, float(X[i, j]), (medians[i] or {}).get(feature))
            reasons.append(Reason(code=group.upper(), group=group, feature=feature, text_zh=zh, text_en=en,
                                  impact_points=round(total, 2)))
        out.append(reasons)
    return out


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


@functools.cache
def _actionable(names: tuple[str, ...]) -> tuple[tuple[int, str, Action, int], ...]:
    """(index, name, action, +1 if higher is better) of each feature an applicant can act on."""
    return tuple((j, n, ACTIONS[n], -BY_NAME[n].direction) for j, n in enumerate(names)
                 if n in ACTIONS and BY_NAME[n].actionable)


def recourse_candidates(names: tuple[str, ...], values: np.ndarray, points: np.ndarray,
                        medians: dict[str, float] | None) -> list[tuple[int, float]]:
    """(feature index, target) for each actionable, scored feature that lowered the score and can improve."""
    out = []
    for j, name, action, good in _actionable(tuple(names)):
        value = float(values[j])
        if math.isnan(value) or points[j] >= 0:
            continue
        target = action.target(value, (medians or {}).get(name))
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
