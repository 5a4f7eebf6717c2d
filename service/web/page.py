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
    "bureau": ("征信记录", "Credit bureau"), "links": ("关联关系", "Related parties"),
}
DECISIONS = {"approve": ("已批准", "Approved"),
             "refer": ("转人工审核：信贷人员将与您联系", "Referred: a credit officer will contact you"),
             "decline": ("未通过", "Declined")}
# What a remedy's re-decision leads to, and the short name of a rule that would still apply.
OUTCOMES = {"approve": ("可获批准", "would be approved"), "refer": ("将转人工审核", "would go to a credit officer"),
            "decline": ("仍不予通过", "would still be declined")}
RULE_NAMES = {
    "SCORE_REVIEW_BAND": ("评分处于人工审核区间", "score in the review band"),
    "SCORE_BELOW_CUTOFF": ("评分低于最低分数线", "score below the minimum"),
    "PRICE_ABOVE_CAP": ("风险定价超过利率上限", "risk price above the rate cap"),
    "CAPACITY_BELOW_MIN_LIMIT": ("可贷额度低于产品最低额度", "limit below the product minimum"),
    "REVENUE_UNKNOWN": ("月均经营收入未知", "monthly revenue unknown"),
}
ACTION_TAGS = {"decline": ("导致未通过", "declines"), "refer": ("导致转人工", "refers")}

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
    y: int  # the label's baseline; the bar sits under it


CHART_WIDTH = 300  # viewBox units; drawn at most 380 px wide, so its 13-unit text reads 12.8 px at 296 px (a 360 px
ROW = 46  # phone) and 16.5 px on a desktop. Each row: the label on its own line, the bar and its points under it.
BAR_ROOM = 44  # kept beside the longest bar for its points


def chart(groups: dict[str, float], lang: str, width: int = CHART_WIDTH) -> tuple[list[Bar], int, float]:
    """Bars of score points per reason group around a centre line, each under its label (stacked, so labels
    keep the whole width on a phone); groups with no effect dropped."""
    k = LANGS.index(lang)
    items = sorted(((g, p) for g, p in groups.items() if abs(p) >= MIN_REASON_POINTS), key=lambda gp: gp[1])
    scale = max([abs(p) for _, p in items] + [1.0])
    half = width / 2
    bars = []
    for i, (group, p) in enumerate(items):
        w = abs(p) / scale * (half - BAR_ROOM)
        label = GROUPS[group].label_zh if k == 0 else GROUPS[group].label_en
        w = round(max(w, 1.0), 1)
        bars.append(Bar(label=label, points=round(p, 1), x=half - w if p < 0 else half, width=w, y=ROW * i + 14))
    return bars, ROW * len(items) + 4, half


@dataclass(frozen=True)
class Gauge:
    """The score on its scale: the bundle's range, the policy's review band and approval score, the applicant."""

    zones: list[tuple[float, float, str]]  # x, width, colour
    score_x: float
    score_label_x: float
    approve_x: float
    show_approve_label: bool
    min_score: float
    max_score: float
    refer_min_score: float
    approve_min_score: float


def gauge(scale: dict | None, score: float, width: int = CHART_WIDTH) -> Gauge | None:
    """None for a decision recorded before its scale was (the page then shows the score in words only)."""
    if not scale:
        return None
    lo, hi = scale["min_score"], scale["max_score"]

    def x(v: float) -> float:
        return round((min(max(v, lo), hi) - lo) / (hi - lo) * width, 1)

    refer, approve = x(scale["refer_min_score"]), x(scale["approve_min_score"])
    zones = [(0.0, refer, "#f4c7c3"), (refer, approve - refer, "#f6e2a8"), (approve, width - approve, "#bfe5c8")]
    score_x = x(score)
    return Gauge(zones=[z for z in zones if z[1] > 0], score_x=score_x,
                 score_label_x=min(max(score_x, 16.0), width - 16.0), approve_x=approve,
                 show_approve_label=40 <= approve <= width - 40, min_score=lo, max_score=hi,
                 refer_min_score=scale["refer_min_score"], approve_min_score=scale["approve_min_score"])


def rule_items(rule_hits: list[dict], recourse: dict | None, k: int) -> tuple[list[dict], list[dict], dict | None]:
    """Each adverse rule with its remedy, the remedies tied to no rule (the amount), and the remedies' summary."""
    rules = (recourse or {}).get("rules")
    remedies = {r["code"]: _remedy_view(r, rule_hits, k) for r in (rules or {}).get("remedies", [])}
    items = [{"code": h["code"], "text": (h["text_zh"], h["text_en"])[k], "tag": ACTION_TAGS[h["action"]][k],
              "remedy": remedies.pop(h["code"], None)}
             for h in rule_hits if h["action"] in ("decline", "refer")]
    summary = None if not rules else {"decides": rules["decides"], "note": (rules["note_zh"], rules["note_en"])[k]}
    return items, list(remedies.values()), summary


def _remedy_view(r: dict, rule_hits: list[dict], k: int) -> dict:
    texts = {h["code"]: (h["text_zh"], h["text_en"])[k] for h in rule_hits}
    still = [RULE_NAMES[c][k] if c in RULE_NAMES else texts.get(c, c) for c in r["still"]]
    outcome = None
    if r["decision"] is not None:
        outcome = OUTCOMES[r["decision"]][k]
        offer = r["offer"]
        if r["decision"] == "approve" and offer:
            outcome += (f"（额度{offer['limit']:,.0f}元，期限{offer['term_months']}个月，年化利率{offer['apr']:.2%}）"
                        if k == 0 else f" (CNY {offer['limit']:,.0f} over {offer['term_months']} months at "
                                       f"{offer['apr']:.2%} a year)")
    return {"kind": r["kind"], "text": (r["text_zh"], r["text_en"])[k], "outcome": outcome,
            "still": ("、" if k == 0 else "; ").join(still) if r["decision"] != "approve" else ""}


def render(*, decision, lang: str, token: str, review_status: str | None, now_expires: str) -> str:  # noqa: ANN001
    k = LANGS.index(lang)
    explained = Explanation.from_json(decision.explanation)
    bars, height, centre = chart(explained.groups, lang)
    rules, other_remedies, remedies = rule_items(explained.rule_hits, explained.recourse, k)
    used = set(decision.sources_used)
    return _env.get_template("explanation.html.j2").render(
        lang=lang, k=k, token=token, d=decision, bars=bars, chart_height=height, centre=centre,
        chart_width=CHART_WIDTH, gauge=gauge(explained.scale, decision.score),
        decision_label=DECISIONS[decision.decision][k], reasons=decision.reasons,
        rules=rules, other_remedies=other_remedies, remedies=remedies, rules_first=bool(remedies and
                                                                                        remedies["decides"]),
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
