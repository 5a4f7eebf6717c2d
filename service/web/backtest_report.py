"""The back-test report for a risk analyst: one self-contained HTML page (inline SVG, no JavaScript, no network).

Per grade, the predicted PD against the Jeffreys interval of the realised default rate (a PD left of its interval
is a grade whose realised rate is significantly above it); by vintage, the expected default rate and AUC with the
band a calibrated model would realise, and the realised values once mature. Geometry is computed here, the
template only draws it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from jinja2 import Environment, PackageLoader, select_autoescape

from service.monitoring.backtest import Estimate
from service.usecases.backtest import BacktestResult

_env = Environment(loader=PackageLoader("service.web", "templates"), autoescape=select_autoescape(["html", "j2"]),
                   trim_blocks=True, lstrip_blocks=True)

# Grade chart: a log axis of default rates, 0.1% to 100%.
LOG_MIN, LOG_MAX = -3.0, 0.0
GRADE_LEFT, GRADE_WIDTH, GRADE_ROW = 70, 620, 34
TICKS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
# Vintage charts.
V_LEFT, V_TOP, V_WIDTH, V_HEIGHT = 56, 14, 660, 190


def _x_rate(rate: float) -> float:
    value = (math.log10(max(rate, 10 ** LOG_MIN)) - LOG_MIN) / (LOG_MAX - LOG_MIN)
    return round(GRADE_LEFT + GRADE_WIDTH * min(max(value, 0.0), 1.0), 1)


def _pct(rate: float | None) -> str:
    if rate is None:
        return "–"
    return f"{100 * rate:.2f}%" if rate < 0.1 else f"{100 * rate:.1f}%"


@dataclass(frozen=True)
class GradeMark:
    grade: str
    y: float
    lo_x: float
    hi_x: float
    pd_x: float
    realised_x: float
    flag: str | None
    title: str


@dataclass(frozen=True)
class Tick:
    pos: float
    label: str


@dataclass(frozen=True)
class VintagePoint:
    label: str
    x: float
    expected_y: float
    band_top: float
    band_bottom: float
    realised_y: float | None
    outside: bool
    title: str


@dataclass(frozen=True)
class VintageChart:
    name: str
    points: list[VintagePoint]
    ticks: list[Tick]
    expected_path: str
    step: float


def grade_chart(result: BacktestResult) -> tuple[list[GradeMark], list[Tick], int]:
    marks = []
    for i, t in enumerate(result.backtest.grades):
        marks.append(GradeMark(
            grade=t.grade, y=20 + GRADE_ROW * i, lo_x=_x_rate(t.interval[0]), hi_x=_x_rate(t.interval[1]),
            pd_x=_x_rate(t.mean_pd), realised_x=_x_rate(t.realised_rate), flag=t.flag,
            title=(f"grade {t.grade}: PD {_pct(t.mean_pd)}, realised {_pct(t.realised_rate)} "
                   f"({t.defaults}/{t.n}), interval {_pct(t.interval[0])} to {_pct(t.interval[1])}, "
                   f"p = {t.p_value:.4f}")))
    ticks = [Tick(_x_rate(v), f"{100 * v:g}%") for v in TICKS]
    return marks, ticks, 20 + GRADE_ROW * len(marks) + 24


def _scale(lo: float, hi: float) -> tuple[float, float]:
    pad = 0.08 * (hi - lo or max(hi, 0.01))
    return max(lo - pad, 0.0), hi + pad


def vintage_chart(result: BacktestResult, metric: str) -> VintageChart:
    """``metric`` 'default_rate' or 'auc': expected (line), band (bars) and realised (dots) per vintage."""
    rows = result.backtest.vintages
    values: list[float] = []
    picked: list[tuple[str, Estimate, float | None, tuple[float, float] | None, float | None]] = []
    for r in rows:
        e = r.estimate
        if metric == "default_rate":
            exp, band, real = e.expected_default_rate, e.default_rate_band, e.realised_default_rate
        else:
            exp, band, real = e.expected_auc, e.auc_band, e.realised_auc
        picked.append((r.vintage, e, exp, band, real))
        values += [v for v in (exp, real, *(band or ())) if v is not None]
    lo, hi = _scale(min(values, default=0.0), max(values, default=1.0))
    hi = min(hi, 1.0)  # neither a rate nor an AUC goes above 1

    def y(v: float) -> float:
        return round(V_TOP + V_HEIGHT * (1 - (v - lo) / (hi - lo or 1.0)), 1)

    step = V_WIDTH / max(len(rows), 1)
    points = []
    for i, (label, _, exp, band, real) in enumerate(picked):
        x = round(V_LEFT + step * (i + 0.5), 1)
        outside = real is not None and band is not None and not band[0] <= real <= band[1]
        fmt = _pct if metric == "default_rate" else (lambda v: "–" if v is None else f"{v:.3f}")
        title = (f"{label}: expected {fmt(exp)}" + (f", band {fmt(band[0])} to {fmt(band[1])}" if band else "")
                 + (f", realised {fmt(real)}" if real is not None else ", not mature yet"))
        points.append(VintagePoint(label=label, x=x, expected_y=y(exp) if exp is not None else y(lo),
                                   band_top=y(band[1]) if band else y(lo), band_bottom=y(band[0]) if band else y(lo),
                                   realised_y=y(real) if real is not None else None, outside=outside, title=title))
    path = " ".join(f"{'M' if i == 0 else 'L'}{p.x},{p.expected_y}" for i, p in enumerate(points))
    ticks = []
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        ticks.append(Tick(y(v), _pct(v) if metric == "default_rate" else f"{v:.2f}"))
    return VintageChart(name=metric, points=points, ticks=ticks, expected_path=path, step=round(step, 1))


def render(result: BacktestResult) -> str:
    """The report as one HTML document."""
    b = result.backtest
    marks, ticks, height = grade_chart(result)
    return _env.get_template("backtest_report.html.j2").render(
        r=result, b=b, marks=marks, ticks=ticks, grade_height=height, grade_left=GRADE_LEFT, grade_width=GRADE_WIDTH,
        rate_chart=vintage_chart(result, "default_rate"), auc_chart=vintage_chart(result, "auc"),
        v_left=V_LEFT, v_top=V_TOP, v_width=V_WIDTH, v_height=V_HEIGHT, pct=_pct,
        flagged_cells=[c for c in b.cells if c.flag], level=f"{100 * b.alpha:g}%")
