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

from service.scoring.catalog import BY_NAME, GROUPS, MISSING_DATA, Feature
from service.scoring.features import TAX_GRADE_SCORE, loan_to_revenue
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
    rules: RuleRecourse | None = None  # remedies for the lender's rules that fired (none fired: None)

    def to_json(self) -> dict:
        return {"rules": None if self.rules is None else self.rules.to_json(),
                "suggestions": [x.__dict__ for x in self.suggestions], "combined_score": self.combined_score,
                "flips": self.flips, "note_zh": self.note_zh, "note_en": self.note_en}


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


# ---------------------------------------------------------------------------------------------------------
# Recourse for the lender's rules: what lifts each knock-out and limit rule that fired, if anything does. The
# engine re-decides every remedy with the same model and policy (engine.py), so its decision is never guessed.

REQUEST_ABOVE_FUNDABLE = "REQUEST_ABOVE_FUNDABLE"  # not a rule: the amount asked is more than the policy funds
SCORE_RULES = ("SCORE_REVIEW_BAND", "SCORE_BELOW_CUTOFF", "PRICE_ABOVE_CAP")  # lifted by the score (suggestions)


@dataclass(frozen=True)
class RuleFix:
    """How an applicant lifts a knock-out on one feature: ``act`` (change it), ``wait`` (time changes it) or
    ``none``. Texts take ``{target}`` (the nearest value the rule lets through), ``{threshold}`` (the rule's value)
    and ``{months}``. ``window``: the feature counts events in a rolling window of this many months, so once none
    recur it falls to ``target`` within ``window - target`` months, whenever the events were. ``also``: other
    features the same action sets (arrears paid: nothing owed now)."""

    kind: str
    text_zh: str
    text_en: str
    window: int = 0
    also: tuple[tuple[str, float], ...] = ()


RULE_FIXES: dict[str, RuleFix] = {
    "biz_age_months": RuleFix(
        "wait", "企业经营满{threshold}个月后可再次申请（还需{months}个月）",
        "Apply again once the business has operated for {threshold} months, in {months} months"),
    "tax_arrears_months_12m": RuleFix(
        "act", "结清全部欠税并不再欠税：近12个月欠税月数降至{target}个月及以下后（最迟{months}个月）本规则不再适用",
        "Pay all the tax owed and fall into no new arrears: the rule stops applying once no more than {target} of "
        "the last 12 months show arrears, at the latest in {months} months",
        window=12, also=(("tax_arrears_to_sales", 0.0),)),
    "util_arrears_months_12m": RuleFix(
        "act", "结清欠缴电费并按时缴费：近12个月欠费月数降至{target}个月及以下后（最迟{months}个月）本规则不再适用",
        "Pay the unpaid utility bills and pay on time: the rule stops applying once no more than {target} of the last "
        "12 months show unpaid bills, at the latest in {months} months", window=12),
    "tax_grade": RuleFix(
        "none", "纳税信用等级由税务机关每年评定一次，D级在下一次年度评定前不会改变，现在无法通过任何行动解除；"
                "按期申报、足额缴税会计入下一次评定",
        "The tax authority rates the tax credit grade once a year: a grade D stays until the next yearly rating, and "
        "nothing done now lifts it sooner. Filing and paying on time counts towards that rating"),
    "bureau_worst_dpd_12m": RuleFix(
        "none", "逾期{threshold}天及以上的记录在发生后12个月内都计入近12个月的记录，现在无法消除；请保持每笔贷款按时还款",
        "A loan {threshold} or more days past due stays in the last-12-months record for 12 months after it "
        "happened; nothing done now removes it sooner. Keep every loan current"),
}
_NO_FIX = RuleFix("none", "本规则涉及“{label_zh}”，在再次申请前无法改变", "This rule concerns {label_en}, which cannot "
                  "be changed before applying again")
_ACT_FIX = RuleFix("act", "将“{label_zh}”调整至{target_text}", "Bring {label_en} to {target_text}")
_LIMIT_TEXTS = {
    "REVENUE_UNKNOWN": ("data", "授权使用经营流水或纳税申报（含销售额）数据，以便按经营规模核定额度；提供后将重新评估",
                        "Share your business payment flows or tax filings (with declared sales) so the limit can be "
                        "sized to your business; the application is then decided again"),
}


@dataclass(frozen=True)
class Change:
    feature: str
    current: float
    target: float


@dataclass(frozen=True)
class Remedy:
    """What lifts one rule, and the decision it leads to: the engine's own, re-decided with the change alone."""

    code: str  # the rule's code, or REQUEST_ABOVE_FUNDABLE
    kind: str  # act, wait, amount, data (share a source first) or none (no remedy; the text says why)
    text_zh: str
    text_en: str
    changes: tuple[Change, ...] = ()  # the features re-decided with
    amount: float | None = None  # the amount re-decided with (kind amount)
    months: int | None = None  # time it takes when time heals (at the latest, for a rolling count)
    decision: str | None = None  # approve, refer or decline; None when there is nothing to re-decide
    score: float | None = None
    offer: dict | None = None  # the re-decided offer (limit, term, APR), as the decision record holds one
    still: tuple[str, ...] = ()  # the adverse rules that would still apply

    def to_json(self) -> dict:
        return {**self.__dict__, "changes": [c.__dict__ for c in self.changes], "still": list(self.still)}


@dataclass(frozen=True)
class RuleRecourse:
    """Remedies for the lender's rules, first on the page when one of those rules sets the decision."""

    remedies: tuple[Remedy, ...]
    decides: bool  # a knock-out, local or limit rule sets the decision (not the score)
    decision: str | None  # every remedy at once, re-decided; None when no remedy changes anything
    score: float | None
    offer: dict | None
    still: tuple[str, ...]
    with_suggestions: str | None  # every remedy and every model suggestion at once, re-decided
    note_zh: str
    note_en: str

    def to_json(self) -> dict:
        return {**self.__dict__, "remedies": [r.to_json() for r in self.remedies], "still": list(self.still)}


def _nearest_allowed(op: str, value: float, integer: bool) -> float | None:
    """The value nearest the rule's that the rule lets through (``x op value`` is what fires it)."""
    if op in ("<", ">", "!="):
        return value
    if op in ("<=", ">="):
        up = op == "<="
        if integer:
            return value + 1.0 if up else value - 1.0
        return math.nextafter(value, math.inf if up else -math.inf)
    return None  # "==": no direction to move in


def rule_remedy(code: str, feature: str, op: str, value: float, current: float,
                features: dict[str, float]) -> Remedy:
    """The remedy of a knock-out or local rule ``feature op value`` that fired on ``current`` (not yet decided)."""
    f = BY_NAME[feature]
    fix = RULE_FIXES.get(feature)
    target = _nearest_allowed(op, value, f.fmt == "{:.0f}")
    good = -f.direction  # +1: higher is better
    moves_well = target is not None and (good == 0 or (target - current) * good > 0)
    if fix is None:
        fix = _ACT_FIX if f.actionable and moves_well else _NO_FIX
    if fix.kind == "none" or not moves_well:
        fix = fix if fix.kind == "none" else _NO_FIX
        return Remedy(code, "none", *_fill(fix, f, value, None, None))
    months = (math.ceil(target - current) if fix.kind == "wait"
              else max(fix.window - int(target), 0) if fix.window else None)
    changes = [Change(feature, current, target)]
    changes += [Change(other, features[other], v) for other, v in fix.also
                if not math.isnan(features.get(other, math.nan)) and features[other] != v]
    return Remedy(code, fix.kind, *_fill(fix, f, value, target, months), changes=tuple(changes), months=months)


def _fill(fix: RuleFix, f: Feature, threshold: float, target: float | None, months: int | None) -> tuple[str, str]:
    fields = {"threshold": f.fmt.format(threshold), "target": "" if target is None else f.fmt.format(target),
              "months": months,
              "label_zh": f.label_zh, "label_en": f.label_en,
              "target_text": "" if target is None else display_value(f.name, target)}
    return fix.text_zh.format(**fields), fix.text_en.format(**fields)


def limit_remedy(code: str, grade: str, months_of_revenue: float) -> Remedy | None:
    """The remedy of a limit rule, or None for the score's own rules and the price cap (the score sets the price;
    the model's suggestions are their recourse)."""
    if code == "CAPACITY_BELOW_MIN_LIMIT":
        if months_of_revenue == 0:
            return Remedy(code, "none", f"本产品不为{grade}级提供额度，只有提高评分、改善等级才能获得额度（见下方建议）",
                          f"This product funds no limit at grade {grade}; only a better score, and so a better grade, "
                          "opens one (see the suggestions)")
        return Remedy(code, "none", "降低申请金额没有帮助：额度取决于月均经营收入和等级，提高评分（见下方建议）或经营收入可以提高额度",
                      "Asking for less does not help: the limit follows monthly revenue and the grade; a better score "
                      "(see the suggestions) or higher revenue raises it")
    if code in _LIMIT_TEXTS:
        kind, zh, en = _LIMIT_TEXTS[code]
        return Remedy(code, kind, zh, en)
    return None


def amount_remedy(requested: float, fundable: float, current: float, revenue: float) -> Remedy:
    """Ask for the most the policy funds, re-decided with loan_to_revenue as the feature builder computes it for
    that amount (``current``: the feature now)."""
    return Remedy(REQUEST_ABOVE_FUNDABLE, "amount",
                  f"将申请金额调整为{fundable:,.0f}元：这是本产品目前可为贵企业提供的最高额度（您申请了{requested:,.0f}元）",
                  f"Ask for CNY {fundable:,.0f}: the most this product funds for your business now (you asked for "
                  f"CNY {requested:,.0f})",
                  changes=(Change("loan_to_revenue", current, float(loan_to_revenue(fundable, revenue))),),
                  amount=fundable)


_OUTCOMES_WORDS = {"approve": ("批准", "approve the application"), "refer": ("转人工审核", "refer it to a credit officer"),
                  "decline": ("不予通过", "decline it")}


def rules_note(decision: str | None, with_suggestions: str | None, has_suggestions: bool) -> tuple[str, str]:
    """What every remedy together leads to (and with the model's suggestions too), as re-decided."""
    if decision is None:
        return ("以上规则暂无可计算的解决办法。", "No step we can compute lifts these rules.")
    if decision == "approve":
        return ("完成针对贷款机构规则的各项后，按当前模型和政策可获批准。",
                "With every step for the lender's rules, the current model and policy would approve the application.")
    if has_suggestions and with_suggestions == "approve":
        return ("完成针对贷款机构规则的各项并采纳提高评分的建议后，按当前模型和政策可获批准。",
                "With every step for the lender's rules and the suggestions to raise the score, the current model "
                "and policy would approve the application.")
    zh, en = _OUTCOMES_WORDS[with_suggestions or decision]
    extra_zh, extra_en = ("并采纳提高评分的建议", " and the suggestions to raise the score") if has_suggestions else ("", "")
    return (f"即使完成针对贷款机构规则的各项{extra_zh}，按当前模型和政策仍将{zh}。",
            f"Even with every step for the lender's rules{extra_en}, the current model and policy would {en}.")


def suggestions_note(flips: bool, gain: float, rules: RuleRecourse | None) -> tuple[str, str]:
    """``no_flip_note``, unless remedies for the lender's rules were re-decided with these suggestions: then it
    says whether they open the way, and leaves what everything together leads to to the rules' note."""
    if not flips and rules is not None and rules.with_suggestions == "approve":
        return (f"仅完成以上建议（评分约提高{gain:.0f}分）不会改变决定；同时完成针对贷款机构规则的各项后，可获批准。",
                f"Alone, these changes (about {gain:.0f} points) do not change the decision; together with the steps "
                "for the lender's rules, the current model and policy would approve the application.")
    if not flips and rules is not None and rules.with_suggestions is not None:  # the rules' note says the rest
        return (f"即使完成以上所有改进（评分约提高{gain:.0f}分），按当前模型和政策仍不足以获得批准。",
                f"Even with all of the above (about {gain:.0f} points), the current model and policy would not "
                "approve the application.")
    return no_flip_note(flips, gain)
