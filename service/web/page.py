"""The applicant's explanation page: server-rendered HTML (no JavaScript), Chinese by default, English on request."""

from __future__ import annotations

from dataclasses import dataclass

from jinja2 import Environment, PackageLoader, select_autoescape

from service.scoring.catalog import GROUPS
from service.scoring.explain import MIN_REASON_POINTS
from service.scoring.raw import MONTHLY_SOURCES
from service.scoring.record import Explanation

LANGS = ("zh", "en")
SOURCE_LABELS = {
    "tax": ("税务申报与发票", "Tax filings and invoices"), "payments": ("经营流水", "Business payment flows"),
    "utilities": ("用电与水电缴费", "Electricity use and bills"), "social_insurance": ("社保缴纳", "Social insurance"),
    "bureau": ("征信记录", "Credit bureau"),
}
DECISIONS = {"approve": ("已批准", "Approved"), "refer": ("转人工审核", "Referred to a loan officer"),
             "decline": ("未通过", "Declined")}

_env = Environment(loader=PackageLoader("service.web", "templates"), autoescape=select_autoescape(["html", "j2"]),
                   trim_blocks=True, lstrip_blocks=True)


def choose_language(lang: str | None, accept_language: str | None) -> str:
    """?lang= wins; otherwise the first of zh/en in Accept-Language; Chinese by default."""
    if lang in LANGS:
        return lang
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("en"):
            return "en"
        if tag.startswith("zh"):
            return "zh"
    return "zh"


@dataclass(frozen=True)
class Bar:
    label: str
    points: float
    x: float
    width: float
    y: int


def chart(groups: dict[str, float], lang: str, width: int = 340) -> tuple[list[Bar], int, float]:
    """Horizontal bars of score points per reason group, around a centre line; groups with no effect dropped."""
    k = LANGS.index(lang)
    items = sorted(((g, p) for g, p in groups.items() if abs(p) >= MIN_REASON_POINTS), key=lambda gp: gp[1])
    scale = max([abs(p) for _, p in items] + [1.0])
    half = width / 2
    bars = []
    for i, (group, p) in enumerate(items):
        w = abs(p) / scale * (half - 10)
        label = GROUPS[group].label_zh if k == 0 else GROUPS[group].label_en
        bars.append(Bar(label=label, points=round(p, 1), x=half - w if p < 0 else half, width=max(w, 1.0),
                        y=28 * i + 8))
    return bars, 28 * len(items) + 16, half


def render(*, decision, lang: str, token: str, review_status: str | None, now_expires: str) -> str:  # noqa: ANN001
    k = LANGS.index(lang)
    explained = Explanation.from_json(decision.explanation)
    bars, height, centre = chart(explained.groups, lang)
    used = set(decision.sources_used)
    return _env.get_template("explanation.html.j2").render(
        lang=lang, k=k, token=token, d=decision, bars=bars, chart_height=height, centre=centre,
        decision_label=DECISIONS[decision.decision][k], reasons=decision.reasons, label_width=190,
        rules=[h for h in explained.rule_hits if h["action"] in ("decline", "refer")],
        recourse=explained.recourse,
        sources_used=[SOURCE_LABELS[s][k] for s in MONTHLY_SOURCES if s in used],
        sources_unused=[SOURCE_LABELS[s][k] for s in MONTHLY_SOURCES if s not in used],
        review_status=review_status, expires=now_expires)


def render_line(*, line: dict, as_of: str, lang: str, expires: str) -> str:
    """The borrower's page for a credit-line recommendation (a rescoring's ``line`` record)."""
    return _env.get_template("line.html.j2").render(lang=lang, k=LANGS.index(lang), line=line, as_of=as_of,
                                                    expires=expires, money=lambda x: f"¥{x:,.0f}")


def render_message(*, lang: str, title: tuple[str, str], body: tuple[str, str]) -> str:
    k = LANGS.index(lang)
    return _env.get_template("message.html.j2").render(lang=lang, title=title[k], body=body[k])
