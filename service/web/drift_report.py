"""The drift report as one HTML file a risk analyst reads at a glance: flagged subjects first, each with what
changed (reference against window shares, bin by bin) and since when (PSI month by month against the
thresholds). Server-rendered Jinja2, charts as inline SVG drawn from numbers computed here; no JavaScript,
nothing fetched from the network."""

from __future__ import annotations

from dataclasses import dataclass

from jinja2 import Environment, PackageLoader, select_autoescape

from service.monitoring.drift import SubjectDrift
from service.scoring.catalog import BY_NAME, GROUPS
from service.usecases.drift import DriftResult

MAX_CHARTS = 16  # flagged subjects drawn; the rest are listed in the table
MAX_STABLE_ROWS = 40
_env = Environment(loader=PackageLoader("service.web", "templates"), autoescape=select_autoescape(["html", "j2"]),
                   trim_blocks=True, lstrip_blocks=True)

W, H, PAD_L, PAD_B, PAD_T = 560, 200, 64, 62, 16  # chart box and margins (px)
STATUS_COLOURS = {"act": "#b42318", "watch": "#b54708", "stable": "#027a48", "untested": "#667085"}


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    w: float
    h: float
    fill: str
    title: str


@dataclass(frozen=True)
class Label:
    x: float
    y: float
    text: str


@dataclass(frozen=True)
class Chart:
    rects: tuple[Rect, ...]
    labels: tuple[Label, ...]
    lines: tuple[tuple[float, str, str], ...]  # y, colour, caption: threshold lines
    ticks: tuple[Label, ...]  # y-axis
    values: tuple[Label, ...] = ()  # values of bars cut at the top


def label_of(item: SubjectDrift) -> str:
    if item.kind == "feature" and item.subject in BY_NAME:
        return f"{BY_NAME[item.subject].label_en} ({item.subject})"
    if item.kind == "group" and item.subject in GROUPS:
        return f"Reason group: {GROUPS[item.subject].label_en}"
    return {"score": "Score", "pd": "PD"}.get(item.kind, item.subject)


def _ticks(top: float, fmt: str) -> tuple[Label, ...]:
    plot_h = H - PAD_B - PAD_T
    return tuple(Label(PAD_L - 6, PAD_T + plot_h * (1 - f), fmt.format(top * f)) for f in (0, 0.5, 1))


def shares_chart(item: SubjectDrift) -> Chart:
    """Reference (grey) against window (status colour) share of every bin that either side uses."""
    keep = [k for k, (e, a) in enumerate(zip(item.reference_shares, item.window_shares, strict=True)) if e or a]
    top = max([max(item.reference_shares[k], item.window_shares[k]) for k in keep] + [0.01])
    plot_w, plot_h = W - PAD_L - 8, H - PAD_B - PAD_T
    slot = plot_w / max(len(keep), 1)
    bar = min(slot * 0.38, 22)
    rects, labels = [], []
    for n, k in enumerate(keep):
        x0 = PAD_L + n * slot + slot / 2 - bar
        for off, share, fill, who in ((0, item.reference_shares[k], "#98a2b3", "training"),
                                      (bar, item.window_shares[k], STATUS_COLOURS[item.status], "window")):
            h = plot_h * share / top
            rects.append(Rect(round(x0 + off, 1), round(PAD_T + plot_h - h, 1), round(bar, 1), round(h, 1), fill,
                              f"{item.bins[k]}: {who} {share:.1%}"))
        labels.append(Label(round(PAD_L + n * slot + slot / 2, 1), H - PAD_B + 12, item.bins[k]))
    return Chart(tuple(rects), tuple(labels), (), _ticks(top, "{:.0%}"))


def months_chart(item: SubjectDrift, watch: float, act: float) -> Chart:
    """PSI of each month against its season, with the watch and act thresholds."""
    months = item.by_month
    top = max(min(max([m.psi for m in months] + [0.0]), 4 * act), act * 1.2)  # taller bars are cut, labelled
    plot_w, plot_h = W - PAD_L - 8, H - PAD_B - PAD_T
    slot = plot_w / max(len(months), 1)
    bar = min(slot * 0.6, 28)
    rects, labels, values = [], [], []
    for n, m in enumerate(months):
        h = plot_h * min(m.psi, top) / top
        fill = STATUS_COLOURS["act" if m.crossed and m.psi >= act else "watch" if m.crossed else "stable"]
        if m.p_value is None:
            fill = STATUS_COLOURS["untested"]
        rects.append(Rect(round(PAD_L + n * slot + (slot - bar) / 2, 1), round(PAD_T + plot_h - h, 1), round(bar, 1),
                          round(h, 1), fill, f"{m.month[:7]}: PSI {m.psi:.3f} vs {m.season}, {m.applications} "
                                             "applications"))
        labels.append(Label(round(PAD_L + n * slot + slot / 2, 1), H - PAD_B + 12, m.month[:7]))
        if m.psi > top:
            values.append(Label(round(PAD_L + n * slot + slot / 2, 1), PAD_T - 3, f"{m.psi:.2f}"))
    lines = tuple((round(PAD_T + plot_h * (1 - t / top), 1), STATUS_COLOURS[s], f"{s} {t:g}")
                  for t, s in ((watch, "watch"), (act, "act")))
    return Chart(tuple(rects), tuple(labels), lines, _ticks(top, "{:.2f}"), tuple(values))


def render_drift_report(result: DriftResult) -> str:
    report = result.report
    flagged = [i for i in report.items if i.flagged] if report else []
    rest = [i for i in report.items if not i.flagged] if report else []
    config = report.config if report else None
    panels = [{"item": i, "label": label_of(i), "shares": shares_chart(i),
               "months": months_chart(i, config.psi_watch, config.psi_act)} for i in flagged[:MAX_CHARTS]]
    by_segment: dict[str, dict] = {}
    for i in flagged:
        seen = by_segment.setdefault(i.segment, {"act": 0, "watch": 0, "since": None})
        seen[i.status] += 1
        if i.since and (seen["since"] is None or i.since[:7] < seen["since"]):
            seen["since"] = i.since[:7]
    return _env.get_template("drift_report.html.j2").render(by_segment=by_segment,
        result=result, report=report, flagged=flagged, panels=panels, rest=rest[:MAX_STABLE_ROWS],
        rest_total=len(rest), config=config, counts=report.counts() if report else {}, label_of=label_of,
        colours=STATUS_COLOURS, W=W, H=H, PAD_L=PAD_L, PAD_B=PAD_B, PAD_T=PAD_T)
