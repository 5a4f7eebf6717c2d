"""The portfolio report: one self-contained HTML page (inline SVG, no JavaScript, no network) for the risk team
watching a book: the warnings ranked by expected loss with what fired and why, the credit-line recommendations,
and, when the monitor was replayed over past months, how early the warnings came."""

from __future__ import annotations

from dataclasses import dataclass

from jinja2 import Environment, PackageLoader, select_autoescape

from service.monitoring.lines import counts
from service.monitoring.warning import trigger_texts
from service.usecases.portfolio import PortfolioRun, WarningEvaluation

_env = Environment(loader=PackageLoader("service.web", "templates"), autoescape=select_autoescape(["html", "j2"]),
                   trim_blocks=True, lstrip_blocks=True)
TOP = 50  # warnings and recommendations listed in full; the counts cover all of them
CHART_W, CHART_H = 560, 140


@dataclass(frozen=True)
class MonthBar:
    label: str
    x: float
    w: float
    h: float
    count: int


def month_bars(evaluation: WarningEvaluation) -> list[MonthBar]:
    top = max(evaluation.warnings_per_month + [1])
    step = CHART_W / max(len(evaluation.months), 1)
    return [MonthBar(m, i * step + 4, step - 8, n / top * (CHART_H - 40), n)
            for i, (m, n) in enumerate(zip(evaluation.months, evaluation.warnings_per_month, strict=True))]


def render_portfolio(run: PortfolioRun, evaluation: WarningEvaluation | None = None) -> str:
    warnings = [(w, trigger_texts(w.triggers, pd_then=w.pd_then, pd_now=w.pd_now, grade_then=w.grade_then,
                                  grade_now=w.grade_now, indicators=w.indicators)) for w in run.warnings[:TOP]]
    levels = {lvl: sum(w.level == lvl for w in run.warnings) for lvl in ("act", "watch")}
    changed = [r for r in run.recommendations if r.action != "hold"][:TOP]
    return _env.get_template("portfolio_report.html.j2").render(
        run=run, warnings=warnings, levels=levels, total_el=sum(w.expected_loss for w in run.warnings),
        line_counts=counts(run.recommendations), lines=changed, evaluation=evaluation,
        bars=month_bars(evaluation) if evaluation else [], chart_w=CHART_W, chart_h=CHART_H, top=TOP,
        money=lambda x: f"{x:,.0f}", pct=lambda x: "n/a" if x is None else f"{x:.1%}")
