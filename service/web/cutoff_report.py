"""The cut-off report for a risk team: one self-contained HTML page (inline SVG, no JavaScript, no network).

The trade-off behind ``smecredit policy optimise``: for every approve cut-off, the approval rate and the expected
and observed bad rates among approvals, with the policy's current cut-off and the proposed one marked; then the
proposal's figures beside the current ones. Geometry is computed here, the template only draws it."""

from __future__ import annotations

from dataclasses import dataclass

from jinja2 import Environment, PackageLoader, select_autoescape

_env = Environment(loader=PackageLoader("service.web", "templates"), autoescape=select_autoescape(["html", "j2"]),
                   trim_blocks=True, lstrip_blocks=True)
LEFT, TOP, WIDTH, HEIGHT = 56, 14, 660, 220


@dataclass(frozen=True)
class Line:
    name: str
    css: str
    path: str


@dataclass(frozen=True)
class Mark:
    label: str
    x: float


def _path(points: list[tuple[float, float]]) -> str:
    return " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(points))


def chart(result: dict) -> tuple[list[Line], list[Mark], list[tuple[float, str]], list[tuple[float, str]], float]:
    """Lines of the three rates against the approve cut-off, two rate axes (approval 0-100% on the left, bad
    rate 0 to its maximum on the right), and the current and proposed cut-offs."""
    curve = result["curve"]
    lo, hi = curve[0]["approve_min_score"], curve[-1]["approve_min_score"]
    bad_max = max([p[k] for p in curve for k in ("approved_expected_bad_rate", "approved_observed_bad_rate")
                   if p[k] is not None] + [0.01])

    def x(score: float) -> float:
        return LEFT + WIDTH * (score - lo) / (hi - lo or 1.0)

    def y(rate: float, top: float) -> float:
        return TOP + HEIGHT * (1 - rate / top)

    lines = [Line("approval rate (left axis)", "approval",
                  _path([(x(p["approve_min_score"]), y(p["approval_rate"], 1.0)) for p in curve]))]
    for key, name, css in (("approved_expected_bad_rate", "expected bad rate among approvals (right axis)",
                            "expected"),
                           ("approved_observed_bad_rate", "observed bad rate among approvals (right axis)",
                            "observed")):
        lines.append(Line(name, css, _path([(x(p["approve_min_score"]), y(p[key], bad_max))
                                            for p in curve if p[key] is not None])))
    marks = [Mark(f"current {result['current']['approve_min_score']:g}", x(result["current"]["approve_min_score"])),
             Mark(f"proposed {result['proposed']['approve_min_score']:g}",
                  x(result["proposed"]["approve_min_score"]))]
    x_ticks = [(x(s), f"{s:g}") for s in range(int(lo) // 50 * 50 + 50, int(hi) + 1, 50)]
    y_ticks = [(y(r, 1.0), f"{r:.0%}  ·  {r * bad_max:.2%}") for r in (0.0, 0.25, 0.5, 0.75, 1.0)]
    return lines, marks, x_ticks, y_ticks, TOP + HEIGHT


def render(result: dict) -> str:
    lines, marks, x_ticks, y_ticks, bottom = chart(result)
    return _env.get_template("cutoff_report.html.j2").render(
        r=result, lines=lines, marks=marks, x_ticks=x_ticks, y_ticks=y_ticks, bottom=bottom, left=LEFT,
        width=WIDTH, top=TOP)
