"""The catalogue is the single source of truth: consistent, bilingual, and free of protected attributes."""

from __future__ import annotations

import re

import numpy as np

from service.scoring.catalog import (
    CATALOG,
    FEATURE_NAMES,
    GROUPS,
    PROTECTED_FIELDS,
    categorical_features,
    monotone_constraints,
)
from service.scoring.features import build_features
from service.scoring.raw import CONTRACT, MONTHLY_SOURCES

CJK = re.compile(r"[\u4e00-\u9fff]")
KNOWN_SOURCES = set(MONTHLY_SOURCES) | {"profile", "application", "coverage", "links"}  # links: the graph


def test_at_least_forty_unique_features() -> None:
    assert len(FEATURE_NAMES) >= 40
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)


def test_every_entry_is_complete() -> None:
    for f in CATALOG:
        assert f.group in GROUPS, f.name
        assert set(f.sources) <= KNOWN_SOURCES, f.name
        assert f.direction in (-1, 0, 1), f.name
        assert CJK.search(f.label_zh) and CJK.search(f.reason_zh), f.name
        assert f.label_en and f.reason_en and not CJK.search(f.reason_en), f.name
        value = f.categories[0] if f.categorical else 0.5
        for text in (f.reason_zh, f.reason_en):
            text.format(value=f.fmt.format(value), reference=f.fmt.format(value))  # no unknown placeholder
        if f.categorical:
            assert f.direction == 0 and not f.actionable, f.name


def test_monotone_constraints_follow_the_catalogue() -> None:
    assert monotone_constraints() == [f.direction for f in CATALOG]
    assert sum(1 for d in monotone_constraints() if d != 0) >= 35


def test_categorical_features_use_contract_categories() -> None:
    assert set(categorical_features()) == {"loan_purpose", "biz_industry", "biz_region", "biz_city_tier",
                                           "biz_legal_form"}
    assert CONTRACT["profile"].column("industry").categories == next(
        f for f in CATALOG if f.name == "biz_industry").categories


def test_no_feature_reads_a_protected_field() -> None:
    assert PROTECTED_FIELDS <= {c.name for c in CONTRACT["profile"].columns}
    for f in CATALOG:
        assert not any(p in f.name for p in ("owner", "gender")), f.name


def test_builder_computes_exactly_the_catalogue(linked_raw) -> None:
    fm = build_features(linked_raw)  # linked firms: the graph features need the link files
    assert fm.names == FEATURE_NAMES
    # every feature carries information somewhere (none constant or all-missing)
    for j, name in enumerate(FEATURE_NAMES):
        col = fm.values[:, j]
        assert (~np.isnan(col)).sum() > 100 and np.nanstd(col) > 0, name
