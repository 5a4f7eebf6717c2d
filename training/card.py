"""The model card: model_card.json (the facts and the statements made from them, training/facts.py) and
model_card.html (the same, readable, with plots).

Plots are matplotlib SVG embedded inline, drawn with fixed ids and no timestamps so that the same model gives
the same card bytes.
"""

from __future__ import annotations

import io

import matplotlib
import matplotlib.font_manager

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from jinja2 import Environment, PackageLoader, select_autoescape  # noqa: E402

from service.scoring.bundle import stable_numbers  # noqa: E402
from service.scoring.raw import INDUSTRIES  # noqa: E402
from training.facts import PSI_SHIFTED, PSI_WATCH, card_facts  # noqa: E402

matplotlib.rcParams["svg.hashsalt"] = "smecredit-model-card"
matplotlib.rcParams["svg.fonttype"] = "none"
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Zen Hei", "SimHei",
             "Microsoft YaHei", "PingFang SC")


def cjk_font() -> str | None:
    """An installed font with Chinese glyphs (fonts-noto-cjk on Debian), or None: labels such as a table's
    Chinese column names are then laid out with it, instead of matplotlib warning of missing glyphs."""
    installed = {f.name for f in matplotlib.font_manager.fontManager.ttflist}
    return next((name for name in CJK_FONTS if name in installed), None)


_CJK = cjk_font()
if _CJK is not None:
    # Named families, not the generic "sans-serif" (matplotlib falls back only along named ones); DejaVu Sans
    # first, so Latin text is drawn as before.
    matplotlib.rcParams["font.family"] = ["DejaVu Sans", _CJK]

def _svg(fig: plt.Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None}, bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def plots(report: dict, where: str) -> dict[str, str]:
    """The card's charts; ``where`` says which rows they show ("out of time" or "out of fold")."""
    curves = report["curves"]
    out = {}
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.plot(curves["roc"]["fpr"], curves["roc"]["tpr"], label=f"LightGBM (AUC {report['oot']['auc']:.3f})")
    ax.plot(curves["challenger_roc"]["fpr"], curves["challenger_roc"]["tpr"], "--",
            label=f"scorecard (AUC {report['challenger_oot']['auc']:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC, {where}")
    ax.legend(loc="lower right", fontsize=8)
    out["roc"] = _svg(fig)

    fig, ax = plt.subplots(figsize=(4.2, 4))
    fpr, tpr = curves["roc"]["fpr"], curves["roc"]["tpr"]
    ax.plot(range(len(fpr)), tpr, label="defaults captured")
    ax.plot(range(len(fpr)), fpr, label="non-defaults captured")
    ax.set(xlabel="threshold (riskiest first)", ylabel="cumulative share",
           title=f"KS = {report['oot']['ks']:.3f}")
    ax.set_xticks([])
    ax.legend(fontsize=8)
    out["ks"] = _svg(fig)

    deciles = report["oot"]["calibration_by_decile"]
    fig, ax = plt.subplots(figsize=(4.2, 4))
    exp, obs = [d["expected"] for d in deciles], [d["observed"] for d in deciles]
    ax.plot(exp, obs, "o-", label="deciles")
    top = max(max(exp), max(obs)) * 1.05
    ax.plot([0, top], [0, top], ":", color="grey", label="perfect")
    ax.set(xlabel="expected default rate (mean PD)", ylabel="observed default rate", title="Calibration by decile")
    ax.legend(fontsize=8)
    out["calibration"] = _svg(fig)

    hist = curves["score_hist"]
    fig, ax = plt.subplots(figsize=(4.2, 4))
    edges = hist["edges"]
    width = edges[1] - edges[0]
    ax.bar(edges[:-1], hist["good"], width=width, align="edge", alpha=0.6, label="repaid (left axis)")
    ax2 = ax.twinx()
    ax2.bar(edges[:-1], hist["bad"], width=width, align="edge", alpha=0.6, color="C3",
            label="defaulted (right axis)")
    ax.set(xlabel="score", ylabel="repaid", title=f"Score distribution, {where}")
    ax2.set_ylabel("defaulted")
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax2.legend(handles=handles, loc="upper left", fontsize=8)  # on the top axes, so no bar hides it
    out["scores"] = _svg(fig)

    imp = list(report["importance"]["mean_abs_contribution"].items())[:20][::-1]
    fig, ax = plt.subplots(figsize=(5.5, 6))
    ax.barh([k.replace("$", r"\$") for k, _ in imp], [v for _, v in imp],  # a column name is not mathtext
            label="mean |contribution| over the evaluation rows")
    ax.set(xlabel="mean |TreeSHAP contribution| (log-odds)", title="Global importance (top 20)")
    ax.legend(loc="lower right", fontsize=8)
    ax.tick_params(axis="y", labelsize=9)  # still legible once a phone scales the chart down
    out["importance"] = _svg(fig)
    return out


_env = Environment(loader=PackageLoader("training", "templates"), autoescape=select_autoescape(["html", "j2"]),
                   trim_blocks=True, lstrip_blocks=True)


# Segment groups the card names, not only codes: industries are GB/T 4754 section letters in the data.
GROUP_NAMES = {"industry": {code: f"{code} {en} ({zh})" for code, (zh, en) in INDUSTRIES.items()}}


def card_html(card: dict, charts: dict[str, str]) -> str:
    return _env.get_template("model_card.html.j2").render(card=card, plots=charts, psi_watch=PSI_WATCH,
                                                          psi_shifted=PSI_SHIFTED, group_names=GROUP_NAMES)


def render_card(version: str, metadata: dict, report: dict) -> tuple[dict, str]:
    data = stable_numbers(card_facts(version, metadata, report))
    where = "out of time" if data["split"]["method"] == "out_of_time" else "out of fold"
    return data, card_html(data, plots(report, where))
