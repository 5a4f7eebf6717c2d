"""Early warning for live loans: rescored with the same engine, compared with what was known at origination.

A borrower is warned when any trigger fires: the PD has grown by the policy's factor since origination, or the
grade has fallen by the policy's number of notches (both only once the PD reaches the policy's floor), or an
operating signal fired (service/scoring/signals.py).
Each warning carries the triggers, the reasons from the same reason engine as a decision (what pushes the PD
up now), the lead indicators, and the exposure at risk; warnings are ranked by expected loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from service.scoring.explain import Reason
from service.scoring.policy import EarlyWarningSpec
from service.scoring.signals import SignalRules

STRONG_SIGNALS = ("receipts_diverted", "contributions_stopped")  # behaviour that precedes defaults: act at once


def signal_rules(spec: EarlyWarningSpec) -> SignalRules:
    return SignalRules(receipts_ratio_below=spec.receipts_ratio_below, sales_hold_at_least=spec.sales_hold_at_least,
                       electricity_ratio_below=spec.electricity_ratio_below,
                       contributions_history_months=spec.contributions_history_months,
                       contributions_stopped_months=spec.contributions_stopped_months,
                       tax_missed_at_least=spec.tax_missed_at_least)


@dataclass(frozen=True)
class Rescored:
    """One live loan as of the monitoring date, next to its origination."""

    loan_id: str
    enterprise_id: str
    exposure: float  # EAD: outstanding plus the undrawn part expected to be drawn
    lgd: float
    pd_then: float
    grade_then: str
    pd_now: float
    grade_now: str
    signals: tuple[str, ...]
    indicators: dict[str, float]
    reasons: tuple[Reason, ...] = ()


@dataclass(frozen=True)
class EarlyWarning:
    loan_id: str
    enterprise_id: str
    level: str  # "act" or "watch"
    triggers: tuple[str, ...]  # pd_up, grade_down and the operating signals, in that order
    pd_then: float
    pd_now: float
    grade_then: str
    grade_now: str
    exposure: float
    expected_loss: float  # PD now x LGD x exposure
    reasons: tuple[Reason, ...]
    indicators: dict[str, float] = field(default_factory=dict)


def triggers_of(r: Rescored, spec: EarlyWarningSpec, grades: Sequence[str]) -> tuple[str, ...]:
    fired = []
    if r.pd_now >= spec.min_pd:
        if r.pd_then > 0 and r.pd_now >= spec.pd_ratio * r.pd_then:
            fired.append("pd_up")
        if grades.index(r.grade_now) - grades.index(r.grade_then) >= spec.grade_notches:
            fired.append("grade_down")
    return (*fired, *r.signals)


def assess(borrowers: Sequence[Rescored], spec: EarlyWarningSpec, grades: Sequence[str]) -> list[EarlyWarning]:
    """The warnings, largest expected loss first (ties: higher PD, then loan id, so the order is stable)."""
    out = []
    for r in borrowers:
        triggers = triggers_of(r, spec, grades)
        if not triggers:
            continue
        act = r.pd_now >= spec.act_pd or any(s in triggers for s in STRONG_SIGNALS)
        out.append(EarlyWarning(r.loan_id, r.enterprise_id, "act" if act else "watch", triggers, r.pd_then, r.pd_now,
                           r.grade_then, r.grade_now, r.exposure, r.pd_now * r.lgd * r.exposure, r.reasons,
                           r.indicators))
    return sorted(out, key=lambda w: (-w.expected_loss, -w.pd_now, w.loan_id))


@dataclass(frozen=True)
class WarningQuality:
    """How early warning did against what happened (synthetic ground truth, or a back-test on a real book)."""

    defaults: int  # loans that defaulted in the evaluation months
    warned_ahead: int  # ... of which warned at least one month before the default month
    median_lead_months: float | None
    live_non_defaulting: int  # loans watched that did not default within the horizon
    false_alarms: int  # ... of which warned at least once

    @property
    def detection_rate(self) -> float | None:
        return self.warned_ahead / self.defaults if self.defaults else None

    @property
    def false_alarm_rate(self) -> float | None:
        return self.false_alarms / self.live_non_defaulting if self.live_non_defaulting else None


def warning_quality(first_warning: dict[str, int], default_month: dict[str, int | None],
                    watched: dict[str, tuple[int, int]]) -> WarningQuality:
    """``first_warning``: loan -> first month (index) a warning was raised; ``default_month``: loan -> month of
    default or None; ``watched``: loan -> (first, last) month it was monitored. A default counts when it falls
    after the loan's first monitored month; it is warned ahead when a warning came in an earlier month."""
    leads = []
    defaults = 0
    for loan, (first, last) in watched.items():
        d = default_month.get(loan)
        if d is None or not first < d <= last + 1:
            continue
        defaults += 1
        w = first_warning.get(loan)
        if w is not None and w < d:
            leads.append(d - w)
    quiet = [loan for loan in watched if default_month.get(loan) is None]
    alarms = sum(loan in first_warning for loan in quiet)
    leads.sort()
    median = None if not leads else (leads[len(leads) // 2] if len(leads) % 2 else
                                     (leads[len(leads) // 2 - 1] + leads[len(leads) // 2]) / 2)
    return WarningQuality(defaults, len(leads), median, len(quiet), alarms)


# Why each trigger fired, in the borrower's own numbers (Chinese first, as on the applicant's page).
_TEXTS = {
    "pd_up": ("违约概率由放款时的{pd_then}升至{pd_now}",
              "The probability of default rose from {pd_then} at origination to {pd_now}"),
    "grade_down": ("信用等级由{grade_then}级降至{grade_now}级", "The grade fell from {grade_then} to {grade_now}"),
    "receipts_diverted": ("近3个月常用账户回款为去年同期的{receipts_yoy}，而申报销售额为去年同期的{declared_sales_yoy}",
                          "Receipts in the last 3 months are {receipts_yoy} of a year earlier while declared sales are "
                          "{declared_sales_yoy}"),
    "contributions_stopped": ("近{recent}个月未缴纳社保，此前12个月中有{paid}个月按时缴纳",
                              "No social-insurance contributions in the last {recent} months, after {paid} paid "
                              "months in the year before"),
    "electricity_vs_sales": ("近3个月用电量为去年同期的{electricity_yoy}，而申报销售额为去年同期的{declared_sales_yoy}",
                             "Electricity use in the last 3 months is {electricity_yoy} of a year earlier while "
                             "declared sales are {declared_sales_yoy}"),
    "tax_filings_missed": ("近3个月有{tax}个月纳税申报逾期或缺失",
                           "Tax filings were late or missing in {tax} of the last 3 months"),
}


def trigger_texts(triggers: Sequence[str], *, pd_then: float, pd_now: float, grade_then: str, grade_now: str,
                  indicators: dict[str, float | None], stopped_months: int = 2) -> list[dict[str, str]]:
    """One line per trigger, from the numbers it fired on (derived, so a replay gives the same lines)."""
    def pct(key: str) -> str:
        v = indicators.get(key)
        return "n/a" if v is None else f"{v:.0%}"

    values = {"pd_then": f"{pd_then:.2%}", "pd_now": f"{pd_now:.2%}", "grade_then": grade_then,
              "grade_now": grade_now, "receipts_yoy": pct("receipts_yoy"),
              "declared_sales_yoy": pct("declared_sales_yoy"), "electricity_yoy": pct("electricity_yoy"),
              "recent": stopped_months, "paid": int(indicators.get("contribution_months_paid_12m") or 0),
              "tax": int(indicators.get("tax_filings_late_or_missing_3m") or 0)}
    return [{"code": t, "text_zh": _TEXTS[t][0].format(**values), "text_en": _TEXTS[t][1].format(**values)}
            for t in triggers if t in _TEXTS]
