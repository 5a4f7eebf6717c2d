"""The stress-test report: one self-contained HTML page (inline SVG charts drawn by the template, no JavaScript,
no network) that a risk analyst reads at a glance: the headline, what drives the change, expected loss by
segment, the grade migration heat map, the PD distribution shift, concentration and the loans that move most."""

from __future__ import annotations

import math
from dataclasses import dataclass

from jinja2 import Environment, PackageLoader, select_autoescape

from service.monitoring.stress import StressReport

_env = Environment(loader=PackageLoader("service.web", "templates"), autoescape=select_autoescape(["html", "j2"]),
                   trim_blocks=True, lstrip_blocks=True)

BAR_W = 460  # px available to the longest bar
ROW_H = 30


@dataclass(frozen=True)
class PairBar:
    label: str
    y: int
    base_w: float
    stress_w: float
    base: float
    stressed: float
    change: str


@dataclass(frozen=True)
class Cell:
    x: int
    y: int
    count: int
    fill: str
    text_fill: str


@dataclass(frozen=True)
class HistBar:
    x: float
    w: float
    base_h: float
    stress_h: float


def _money(x: float) -> str:
    if abs(x) >= 1e6:
        return f"{x / 1e6:,.2f} M"
    return f"{x / 1e3:,.1f} k" if abs(x) >= 1e4 else f"{x:,.0f}"


def el_bars(report: StressReport, dimension: str) -> tuple[list[PairBar], int]:
    rows = sorted((s for s in report.segments if s.dimension == dimension), key=lambda s: -s.totals.el_stressed)
    top = max([max(s.totals.el_stressed, s.totals.el_baseline) for s in rows] + [1.0])
    bars = [PairBar(label=s.label, y=i * ROW_H + 6, base_w=max(s.totals.el_baseline / top * BAR_W, 1.0),
                    stress_w=max(s.totals.el_stressed / top * BAR_W, 1.0), base=s.totals.el_baseline,
                    stressed=s.totals.el_stressed,
                    change="n/a" if s.totals.el_change_pct is None else f"{s.totals.el_change_pct:+.0%}")
            for i, s in enumerate(rows)]
    return bars, len(rows) * ROW_H + 10


def heat_map(report: StressReport, size: int = 46) -> list[Cell]:
    """Cells coloured by the share of the baseline grade's loans that land in each stressed grade: red below the
    diagonal of worse grades, green for better, blue for unchanged."""
    cells = []
    for i, row in enumerate(report.migration):
        total = sum(row)
        for j, count in enumerate(row):
            share = count / total if total else 0.0
            alpha = 0.0 if count == 0 else 0.12 + 0.88 * math.sqrt(share)
            rgb = "29,78,216" if i == j else ("179,38,30" if j > i else "26,127,55")
            cells.append(Cell(x=j * size, y=i * size, count=count, fill=f"rgba({rgb},{alpha:.3f})",
                              text_fill="#fff" if alpha > 0.55 else "#1d2330"))
    return cells


def histogram(report: StressReport, width: int = 600, height: int = 160) -> tuple[list[HistBar], list[tuple]]:
    n = len(report.pd_hist_baseline)
    top = max(report.pd_hist_baseline + report.pd_hist_stressed + [1])
    step = width / n
    bars = [HistBar(x=k * step, w=step, base_h=report.pd_hist_baseline[k] / top * height,
                    stress_h=report.pd_hist_stressed[k] / top * height) for k in range(n)]
    ticks = []
    for k, edge in enumerate(report.pd_bins[:-1]):
        if k and (k - 1) % 3 == 0:
            ticks.append((k * step, f"{edge:.1%}" if edge < 0.1 else f"{edge:.0%}"))
    return bars, ticks


def render_report(report: StressReport) -> str:
    """The whole report as one HTML document."""
    industry, industry_h = el_bars(report, "industry")
    region, region_h = el_bars(report, "region")
    product, product_h = el_bars(report, "product")
    hist, ticks = histogram(report)
    return _env.get_template("stress_report.html.j2").render(
        r=report, t=report.totals, money=_money, industry=industry, industry_h=industry_h, region=region,
        region_h=region_h, product=product, product_h=product_h, bar_w=BAR_W, cells=heat_map(report), cell=46,
        hist=hist, ticks=ticks, hist_h=160, hist_w=600)
