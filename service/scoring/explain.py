"""Explanations from the model actually used: exact TreeSHAP contributions, in score points, by reason group.

Reference: LightGBM's TreeSHAP states each contribution against the model's expected raw score over the
training data (the ``base value``): contributions plus the base value equal the applicant's raw score. Points
are contributions times ``points_per_margin`` (negative points lower the score, i.e. push toward decline).

Principal reasons are reason groups whose points pushed toward decline, at most four, the most adverse first.
Each is phrased from its most adverse *scored* feature: a feature whose value is missing (source absent or
not consented to) is never named, and no catalogue feature reads a protected attribute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from service.scoring.catalog import BY_NAME, GROUPS
from service.scoring.features import TAX_GRADE_SCORE
from service.scoring.raw import INDUSTRIES

MAX_REASONS = 4
GRADE_BY_SCORE = {v: k for k, v in TAX_GRADE_SCORE.items()}


@dataclass(frozen=True)
class Reason:
    code: str
    group: str
    feature: str
    text_zh: str
    text_en: str
    impact_points: float


def group_points(names: tuple[str, ...], points: np.ndarray) -> dict[str, float]:
    """Points summed per reason group, in catalogue group order."""
    totals = dict.fromkeys(GROUPS, 0.0)
    for name, p in zip(names, points, strict=True):
        totals[BY_NAME[name].group] += float(p)
    return totals


def display_value(feature: str, value: float) -> str:
    """The applicant's value as their reason text shows it (codes back to labels)."""
    f = BY_NAME[feature]
    if feature == "tax_grade":
        return GRADE_BY_SCORE.get(value, "?")
    if f.categorical:
        category = f.categories[int(value)]
        return INDUSTRIES[category][1] if feature == "biz_industry" else category
    return f.fmt.format(value)


def reason_texts(feature: str, value: float, reference: float | None) -> tuple[str, str]:
    f = BY_NAME[feature]
    shown = display_value(feature, value)
    ref = f.fmt.format(reference) if reference is not None and not f.categorical else "—"
    zh, en = f.reason_zh.format(value=shown, reference=ref), f.reason_en.format(value=shown, reference=ref)
    if reference is None and "{reference}" in f.reason_en:
        # No industry comparison available: keep the applicant's own value, drop the comparison clause.
        zh, en = zh.split("，")[0], en.split(";")[0]
    return zh, en


def principal_reasons(names: tuple[str, ...], values: np.ndarray, points: np.ndarray,
                      medians: dict[str, float] | None) -> list[Reason]:
    """At most four reason groups that pushed toward decline, most adverse first, each named by its most
    adverse scored feature."""
    by_group: dict[str, list[tuple[float, str, float]]] = {}
    for name, value, p in zip(names, values, points, strict=True):
        if math.isnan(value) or p >= 0:
            continue
        by_group.setdefault(BY_NAME[name].group, []).append((float(p), name, float(value)))
    ranked = sorted(by_group.items(), key=lambda kv: sum(p for p, _, _ in kv[1]))
    reasons = []
    for group, items in ranked[:MAX_REASONS]:
        total, (_, feature, value) = sum(p for p, _, _ in items), min(items)
        reference = (medians or {}).get(feature)
        zh, en = reason_texts(feature, value, reference)
        reasons.append(Reason(code=group.upper(), group=group, feature=feature, text_zh=zh, text_en=en,
                              impact_points=round(total, 2)))
    return reasons

