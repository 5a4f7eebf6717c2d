"""Dynamic credit lines: for each live line, raise, hold, cut or freeze its undrawn part, following the lender's
``credit_lines`` policy section (docs/policy.md), with the amount and the reasons, phrased from the borrower's own
numbers in Chinese and English as a decision's reasons are.

In order, the first that applies:

- **freeze** when an operating signal of ``freeze_on`` fired (receipts diverted, contributions stopped): the
  undrawn part is frozen, the line stays at what is drawn (or owed, if more);
- **cut** when the PD grew by ``cut_pd_ratio`` since origination (once at least ``cut_min_pd``) or the grade fell
  by ``cut_grade_notches``: down to the revenue rule of the grade now (``limit.revenue_months_by_grade``), never
  below the outstanding balance; a hold when the rule still covers the line;
- **raise** when declared sales grew (``growth_months`` consecutive months above a year earlier, or
  ``sales_growth`` year on year), orders grew (``orders_growth``), utilities are stable, the loan is current, no
  early-warning trigger fired and the PD is low and not above origination: by ``raise_step``, capped by
  ``limit.max_limit`` and the revenue rule of the grade now, rounded down to ``round_to``;
- **hold** otherwise, saying which condition of a raise is not met.

``decide`` is a pure function of a ``LineInputs`` and a policy, and each recommendation carries its inputs, so a
stored recommendation replays exactly (``decide(rec.inputs, policy)`` gives it back).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np

from service.monitoring.warning import Rescored, trigger_texts, triggers_of
from service.scoring.catalog import FEATURE_NAMES
from service.scoring.explain import Reason
from service.scoring.features import monthly_revenue
from service.scoring.policy import Policy
from service.scoring.raw import RawData
from service.scoring.signals import Signals

ACTIONS = ("freeze", "cut", "raise", "hold")  # also the order of precedence and of the list returned


@dataclass(frozen=True)
class LineInputs:
    """Everything a recommendation was computed from: the loan as booked, the borrower rescored."""

    loan_id: str
    enterprise_id: str
    product: str
    as_of_month: int | None  # month index of the monitoring date (the data read ends the month before)
    limit: float
    drawn: float
    outstanding: float
    status: str
    days_past_due: int
    pd_then: float
    grade_then: str
    pd_now: float
    grade_now: str
    monthly_revenue: float | None  # the decision's revenue rule: payment inflow, else declared sales (12 months)
    signals: tuple[str, ...]  # operating signals that fired
    warning_triggers: tuple[str, ...]  # early-warning triggers (pd_up, grade_down and the signals)
    indicators: dict[str, float] = field(default_factory=dict)  # lead indicators present (no NaN)


@dataclass(frozen=True)
class LineReason:
    code: str
    text_en: str
    text_zh: str


@dataclass(frozen=True)
class LineRecommendation:
    loan_id: str
    enterprise_id: str
    action: str  # freeze, cut, raise or hold
    current_limit: float
    recommended_limit: float  # for a freeze: what stays usable, the drawn amount (or what is owed, if more)
    change: float  # recommended_limit - current_limit (CNY)
    frozen_undrawn: float  # the undrawn part a freeze blocks; 0 otherwise
    reasons: tuple[LineReason, ...]
    inputs: LineInputs
    policy_version: str  # the whole policy file's version; lines_version names the section's own
    lines_version: str
    engine_reasons: tuple[Reason, ...] = ()  # for a cut or a freeze: what pushes the PD up now (as a warning's)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, body: dict) -> LineRecommendation:
        inputs = body["inputs"]
        return cls(**{
            **body, "reasons": tuple(LineReason(**r) for r in body["reasons"]),
            "engine_reasons": tuple(Reason(**r) for r in body.get("engine_reasons", ())),
            "inputs": LineInputs(**{**inputs, "signals": tuple(inputs["signals"]),
                                    "warning_triggers": tuple(inputs["warning_triggers"])})})


class ScoredBook(Protocol):
    """What ``recommend`` reads of a rescored book (service.usecases.portfolio.BookScores)."""

    data: RawData
    rows: np.ndarray
    features_now: np.ndarray
    pd_then: np.ndarray
    grade_then: np.ndarray
    pd_now: np.ndarray
    grade_now: np.ndarray
    signals: Signals


def recommend(scores: ScoredBook, policy: Policy, *, as_of_month: int | None = None) -> list[LineRecommendation]:
    """A recommendation for each live loan of a managed product: freezes first, then cuts, raises and holds,
    each group by the size of the change."""
    return sorted((decide(x, policy) for x in line_inputs(scores, policy, as_of_month=as_of_month)),
                  key=lambda r: (ACTIONS.index(r.action), -abs(r.change), r.loan_id))


def line_inputs(scores: ScoredBook, policy: Policy, *, as_of_month: int | None = None) -> list[LineInputs]:
    book, spec = scores.data.book, policy.spec
    managed = np.isin(book["product"][scores.rows], spec.credit_lines.products)
    indicators = scores.signals.indicators
    out = []
    for k in np.flatnonzero(managed):
        r = scores.rows[k]
        out.append(inputs_for(
            policy, loan_id=str(book["loan_id"][r]), enterprise_id=str(book["enterprise_id"][r]),
            product=str(book["product"][r]), as_of_month=as_of_month, limit=float(book["limit"][r]),
            drawn=float(book["drawn"][r]), outstanding=float(book["outstanding"][r]), status=str(book["status"][r]),
            days_past_due=int(book["days_past_due"][r]), pd_then=float(scores.pd_then[k]),
            grade_then=str(scores.grade_then[k]), pd_now=float(scores.pd_now[k]), grade_now=str(scores.grade_now[k]),
            features_now=scores.features_now[k], signals=scores.signals.names(k),
            indicators={name: float(v[k]) for name, v in indicators.items()}))
    return out


def inputs_for(policy: Policy, *, loan_id: str, enterprise_id: str, product: str, as_of_month: int | None,
               limit: float, drawn: float, outstanding: float, status: str, days_past_due: int, pd_then: float,
               grade_then: str, pd_now: float, grade_now: str, features_now: np.ndarray, signals: tuple[str, ...],
               indicators: dict[str, float | None]) -> LineInputs:
    """One line's inputs: the loan as booked or serviced, the borrower rescored (a book or one API loan)."""
    revenue = float(monthly_revenue(np.array(features_now[FEATURE_NAMES.index("pay_inflow_avg_12m")]),
                                    np.array(features_now[FEATURE_NAMES.index("tax_sales_avg_12m")])))
    probe = Rescored(loan_id=loan_id, enterprise_id=enterprise_id, exposure=0.0, lgd=0.0, pd_then=pd_then,
                     grade_then=grade_then, pd_now=pd_now, grade_now=grade_now, signals=signals, indicators={})
    return LineInputs(
        loan_id=loan_id, enterprise_id=enterprise_id, product=product, as_of_month=as_of_month, limit=limit,
        drawn=drawn, outstanding=outstanding, status=status, days_past_due=days_past_due, pd_then=pd_then,
        grade_then=grade_then, pd_now=pd_now, grade_now=grade_now,
        monthly_revenue=None if np.isnan(revenue) else revenue, signals=signals,
        warning_triggers=triggers_of(probe, policy.spec.early_warning, policy.grades),
        indicators={k: float(v) for k, v in indicators.items() if v is not None and not np.isnan(v)})


def _round_down(amount: float, step: float) -> float:
    return math.floor(amount / step + 1e-9) * step


def _round_up(amount: float, step: float) -> float:
    return math.ceil(amount / step - 1e-9) * step


def _yuan(x: float) -> str:
    return f"{x:,.0f}"


def _pct(x: float) -> str:
    return f"{x:.0%}"


def decide(x: LineInputs, policy: Policy) -> LineRecommendation:
    """The recommendation for one line: pure, so a stored one replays from its inputs."""
    lines, spec = policy.spec.credit_lines, policy.spec.limit

    def make(action: str, new_limit: float, reasons: list[LineReason], frozen: float = 0.0) -> LineRecommendation:
        return LineRecommendation(x.loan_id, x.enterprise_id, action, x.limit, new_limit, new_limit - x.limit, frozen,
                                  tuple(reasons), x, policy.version, lines.version)

    frozen_by = [s for s in x.signals if s in lines.freeze_on]
    if frozen_by:
        stays = min(x.limit, max(x.drawn, x.outstanding))
        undrawn = x.limit - stays
        reasons = [_signal_reason(s, x, policy) for s in frozen_by]
        reasons.append(LineReason(
            "UNDRAWN_FROZEN", f"The undrawn {_yuan(undrawn)} CNY of the {_yuan(x.limit)} CNY line is frozen; the "
            f"{_yuan(stays)} CNY already drawn stays as it is",
            f"额度{_yuan(x.limit)}元中未使用的{_yuan(undrawn)}元冻结，已使用的{_yuan(stays)}元不变"))
        return make("freeze", stays, reasons, undrawn)

    grades = policy.grades
    notches = grades.index(x.grade_now) - grades.index(x.grade_then)
    pd_up = x.pd_now >= lines.cut_min_pd and x.pd_then > 0 and x.pd_now >= lines.cut_pd_ratio * x.pd_then
    grade_down = notches >= lines.cut_grade_notches
    months = spec.revenue_months_by_grade[x.grade_now]
    if pd_up or grade_down:
        reasons = []
        if pd_up:
            reasons.append(LineReason(
                "PD_UP", f"The probability of default rose from {x.pd_then:.2%} at origination to {x.pd_now:.2%} "
                f"({x.pd_now / x.pd_then:.1f} times)", f"违约概率由放款时的{x.pd_then:.2%}升至{x.pd_now:.2%}"
                f"（{x.pd_now / x.pd_then:.1f}倍）"))
        if grade_down:
            reasons.append(LineReason(
                "GRADE_DOWN", f"The grade fell from {x.grade_then} at origination to {x.grade_now} ({notches} "
                "notches)", f"信用等级由放款时的{x.grade_then}级降至{x.grade_now}级（下调{notches}级）"))
        floor = _round_up(x.outstanding, spec.round_to)
        if x.monthly_revenue is None:
            rule, rule_reason = 0.0, LineReason(
                "REVENUE_UNKNOWN", "Monthly revenue is unknown now, so the line is sized to the outstanding balance",
                "当前无法获取月均经营收入，额度按未偿余额核定")
        else:
            rule = _round_down(max(x.monthly_revenue, 0.0) * months, spec.round_to)
            rule_reason = LineReason(
                "REVENUE_RULE", f"Grade {x.grade_now} allows {months:g} months of the monthly revenue of "
                f"{_yuan(x.monthly_revenue)} CNY: {_yuan(rule)} CNY", f"{x.grade_now}级可核定{months:g}个月的月均经营"
                f"收入（{_yuan(x.monthly_revenue)}元），即{_yuan(rule)}元")
        new = min(max(rule, floor), x.limit)
        if new >= x.limit:
            return make("hold", x.limit, [*reasons, rule_reason, LineReason(
                "WITHIN_REVENUE_RULE", f"The {_yuan(x.limit)} CNY line is still within that rule; it is held and "
                "watched", f"现有额度{_yuan(x.limit)}元仍在该规则之内，维持额度并持续关注")])
        reasons.append(rule_reason)
        if floor > rule and x.monthly_revenue is not None:
            reasons.append(LineReason(
                "OUTSTANDING_FLOOR", f"The line is not cut below the outstanding balance of {_yuan(x.outstanding)} "
                "CNY", f"额度不低于未偿余额{_yuan(x.outstanding)}元"))
        return make("cut", new, reasons)

    unmet = _raise_blockers(x, policy)
    if unmet:
        return make("hold", x.limit, unmet)
    cap_revenue = max(x.monthly_revenue or 0.0, 0.0) * months  # known: _raise_blockers refuses an unknown one
    target = x.limit * (1 + lines.raise_step)
    new = _round_down(min(target, spec.max_limit, cap_revenue), spec.round_to)
    reasons = _growth_reasons(x, policy)
    if new <= x.limit:
        binding = "the product maximum" if spec.max_limit <= cap_revenue else "the revenue rule"
        return make("hold", x.limit, [*reasons, LineReason(
            "AT_CAPACITY", f"The business grows, but the {_yuan(x.limit)} CNY line already reaches {binding} "
            f"({_yuan(min(spec.max_limit, cap_revenue))} CNY)", f"经营向好，但现有额度{_yuan(x.limit)}元已达"
            f"{'产品最高额度' if spec.max_limit <= cap_revenue else '按经营收入可核定的额度'}"
            f"（{_yuan(min(spec.max_limit, cap_revenue))}元）")])
    reasons.append(LineReason(
        "RAISE_STEP", f"The line rises by {_yuan(new - x.limit)} CNY to {_yuan(new)} CNY (a step of "
        f"{lines.raise_step:.0%}, within the product maximum of {_yuan(spec.max_limit)} CNY and {months:g} months "
        f"of revenue for grade {x.grade_now}, {_yuan(cap_revenue)} CNY)", f"额度提高{_yuan(new - x.limit)}元至"
        f"{_yuan(new)}元（上调{lines.raise_step:.0%}，不超过产品最高额度{_yuan(spec.max_limit)}元及{x.grade_now}级"
        f"{months:g}个月经营收入{_yuan(cap_revenue)}元）"))
    return make("raise", new, reasons)


def _signal_reason(signal: str, x: LineInputs, policy: Policy) -> LineReason:
    """The same words as the warning raised on the same signal (warning.trigger_texts)."""
    text = trigger_texts([signal], pd_then=x.pd_then, pd_now=x.pd_now, grade_then=x.grade_then,
                         grade_now=x.grade_now, indicators=x.indicators,
                         stopped_months=policy.spec.early_warning.contributions_stopped_months)[0]
    return LineReason(signal.upper(), text["text_en"], text["text_zh"])


def _growth_reasons(x: LineInputs, policy: Policy) -> list[LineReason]:
    i = x.indicators
    months, sales = i.get("sales_growth_months", math.nan), i.get("declared_sales_yoy", math.nan)
    orders, kwh, late = i["orders_yoy"], i["electricity_yoy"], int(i["utility_days_late_3m"])
    yoy_en, yoy_zh = f"{_known(sales - 1, '{:+.0%}')} year on year", f"同比{_known(sales - 1, '{:+.0%}')}"
    if months >= policy.spec.credit_lines.growth_months:
        sales_reason = LineReason("SALES_GROWING", f"Declared sales beat the same month a year earlier for "
                                  f"{months:.0f} consecutive months; the last 3 months are {yoy_en}",
                                  f"申报销售额已连续{months:.0f}个月高于上年同月，近3个月{yoy_zh}")
    else:
        sales_reason = LineReason("SALES_GROWING", f"Declared sales over the last 3 months are {yoy_en}",
                                  f"近3个月申报销售额{yoy_zh}")
    return [
        sales_reason,
        LineReason("ORDERS_GROWING", f"Orders (VAT invoices issued, or payment transactions) are {orders - 1:+.0%} "
                   "year on year over the last 3 months", f"近3个月订单量（开票张数或收款笔数）同比{orders - 1:+.0%}"),
        LineReason("UTILITIES_STABLE", f"Electricity use is {_pct(kwh)} of a year earlier and the latest utility "
                   f"bills were paid at most {late} days late", f"用电量为上年同期的{_pct(kwh)}，近期水电费最长逾期"
                   f"{late}天"),
        LineReason("RISK_STABLE", f"The probability of default is {x.pd_now:.2%} now against {x.pd_then:.2%} at "
                   f"origination (grade {x.grade_then} then, {x.grade_now} now) and no early warning is raised",
                   f"当前违约概率{x.pd_now:.2%}，放款时{x.pd_then:.2%}（等级由{x.grade_then}级到{x.grade_now}级），"
                   "无预警"),
    ]


def _raise_blockers(x: LineInputs, policy: Policy) -> list[LineReason]:
    """Why a line cannot be raised now (empty when it can)."""
    c = policy.spec.credit_lines
    i = x.indicators
    nan = math.nan
    out = []
    if x.status != "current" or x.days_past_due > 0:
        out.append(LineReason("NOT_CURRENT", f"The loan is {x.status.replace('_', ' ')} ({x.days_past_due} days past "
                              "due)", f"贷款当前状态为{_STATUS_ZH.get(x.status, x.status)}（逾期{x.days_past_due}天）"))
    if x.warning_triggers:
        out.append(LineReason("WARNED", f"An early warning is raised ({', '.join(x.warning_triggers)})",
                              f"存在预警信号（{', '.join(x.warning_triggers)}）"))
    months, sales = i.get("sales_growth_months", nan), i.get("declared_sales_yoy", nan)
    if not (months >= c.growth_months or sales >= 1 + c.sales_growth):
        out.append(LineReason(
            "NO_SALES_GROWTH", f"Declared sales are not growing enough: {_known(months, '{:.0f}')} consecutive months "
            f"above a year earlier (a raise needs {c.growth_months}), {_known(sales - 1, '{:+.0%}')} year on year "
            f"(or {c.sales_growth:+.0%})", f"申报销售额增长不足：连续{_known(months, '{:.0f}')}个月高于上年同月"
            f"（需{c.growth_months}个月），同比{_known(sales - 1, '{:+.0%}')}（或需{c.sales_growth:+.0%}）"))
    orders = i.get("orders_yoy", nan)
    if not orders >= 1 + c.orders_growth:
        out.append(LineReason(
            "NO_ORDERS_GROWTH", f"Orders are {_known(orders - 1, '{:+.0%}')} year on year (a raise needs "
            f"{c.orders_growth:+.0%})", f"订单量同比{_known(orders - 1, '{:+.0%}')}（需{c.orders_growth:+.0%}）"))
    kwh, late = i.get("electricity_yoy", nan), i.get("utility_days_late_3m", nan)
    if not (kwh >= c.electricity_stable_at_least and late <= c.max_days_late):
        out.append(LineReason(
            "UTILITIES_NOT_STABLE", f"Utilities are not shown stable: electricity {_known(kwh, '{:.0%}')} of a year "
            f"earlier (needs {c.electricity_stable_at_least:.0%}), bills up to {_known(late, '{:.0f}')} days late "
            f"(at most {c.max_days_late})", f"用电与缴费未见稳定：用电量为上年同期的{_known(kwh, '{:.0%}')}"
            f"（需{c.electricity_stable_at_least:.0%}），水电费最长逾期{_known(late, '{:.0f}')}天（不超过"
            f"{c.max_days_late}天）"))
    if not (x.pd_now <= c.raise_max_pd and x.pd_now <= c.raise_max_pd_ratio * x.pd_then):
        out.append(LineReason(
            "RISK_TOO_HIGH", f"The probability of default is {x.pd_now:.2%} (at origination {x.pd_then:.2%}); a raise "
            f"needs at most {c.raise_max_pd:.2%} and not above {c.raise_max_pd_ratio:g} times origination",
            f"当前违约概率{x.pd_now:.2%}（放款时{x.pd_then:.2%}），提额要求不超过{c.raise_max_pd:.2%}且不高于放款时的"
            f"{c.raise_max_pd_ratio:g}倍"))
    if x.monthly_revenue is None:
        out.append(LineReason("REVENUE_UNKNOWN", "Monthly revenue is unknown, so a raise cannot be sized",
                              "无法获取月均经营收入，无法核定提额"))
    return out


_STATUS_ZH = {"current": "正常", "past_due": "逾期", "defaulted": "违约", "repaid": "已结清"}


def _known(v: float, fmt: str) -> str:
    return "n/a" if math.isnan(v) else fmt.format(v)


def counts(recs: Sequence[LineRecommendation]) -> dict[str, int]:
    """Recommendations by action, every action present (0 when none)."""
    return {a: sum(r.action == a for r in recs) for a in ACTIONS}
