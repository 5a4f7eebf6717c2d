"""A table model's shape, chosen on held-out data from a small grid, with what each candidate costs to explain.

The catalogue model keeps its configured shape (measured on the synthetic data, docs/training.md). A risk
team's table can be 1,000 rows or 200,000, balanced or with 2% positives, so one fixed shape either underfits
the large ones or overfits the small ones: the grid runs from depth-2 trees to depth-6 (depth-8 from 50,000 rows),
with leaf sizes and categorical smoothing scaled to the table, and the validation AUC picks.

Cost of an explanation: exact TreeSHAP for one row walks every leaf of every tree (time grows with trees x
leaves x depth^2), so each candidate reports its trees and leaves beside its validation AUC; the numbers are
deterministic, so they can go in the card without breaking byte-identical retraining.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
from sklearn.model_selection import StratifiedKFold

from training.config import LightGBMConfig
from training.fit import lgb_params

INNER_FOLDS = 5  # cross-validation folds that choose the shape and the number of trees of a table without dates
DEEP_FROM_ROWS = 50_000
_SHAPES = (("depth 2", 4, 2), ("depth 3", 7, 3), ("depth 4", 15, 4), ("depth 6", 31, 6))


@dataclass(frozen=True)
class Candidate:
    name: str
    cfg: LightGBMConfig


def configured(cfg: LightGBMConfig) -> list[Candidate]:
    return [Candidate("configured", cfg)]


def table_candidates(base: LightGBMConfig, rows: int) -> list[Candidate]:
    """The grid for a table of ``rows`` rows, simplest first (ties go to the cheaper model). Leaves need at least
    20 rows (up to 100 on large tables), and so does each side of a categorical split: LightGBM's default of 100
    per group would forbid most category splits of a 1,000-row table."""
    min_leaf = int(np.clip(rows // 500, 20, 100))
    common = {"learning_rate": 0.05, "min_data_in_leaf": min_leaf, "min_data_per_group": min_leaf,
              "cat_smooth": 10.0, "cat_l2": 10.0, "num_boost_round": 2000}
    shapes = [*_SHAPES, ("depth 8", 127, 8)] if rows >= DEEP_FROM_ROWS else list(_SHAPES)
    return [Candidate(name, base.model_copy(update=common | {"num_leaves": leaves, "max_depth": depth}))
            for name, leaves, depth in shapes]


def leaves_of(model_text: str) -> int:
    """Leaves in every tree of a LightGBM text model."""
    return sum(int(n) for n in re.findall(r"^num_leaves=(\d+)$", model_text, flags=re.MULTILINE))


def describe(candidate: Candidate, valid_auc: float, booster: lgb.Booster, trees: int) -> dict:
    """One row of the shape table: the shape, its validation AUC and its explanation cost."""
    c = candidate.cfg
    return {"name": candidate.name, "num_leaves": c.num_leaves, "max_depth": c.max_depth,
            "min_data_in_leaf": c.min_data_in_leaf, "learning_rate": c.learning_rate, "valid_auc": valid_auc,
            "trees": trees, "leaves": leaves_of(booster.model_to_string(num_iteration=trees))}


@dataclass(frozen=True)
class Choice:
    cfg: LightGBMConfig  # the chosen shape, num_boost_round set to the trees it should be trained with
    name: str
    candidates: list[dict]  # every candidate described (``describe``)


def choose_by_cross_validation(candidates: list[Candidate], X: np.ndarray, y: np.ndarray, *,
                               names: tuple[str, ...], categorical: list[int], monotone: list[int],
                               seed: int) -> Choice:
    """Each candidate's mean AUC over stratified inner folds of (X, y), early-stopped on that mean (``lgb.cv``):
    on a small table one validation part of a few hundred rows is too noisy to pick either a shape or a number
    of trees. The best mean wins; its number of trees is the one to train on all of (X, y)."""
    folds = list(StratifiedKFold(n_splits=INNER_FOLDS, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
    data = lgb.Dataset(X, y, feature_name=list(names), categorical_feature=categorical, free_raw_data=False,
                       params={"verbose": -1})
    rows, best = [], None
    for candidate in candidates:
        cfg = candidate.cfg
        result = lgb.cv(lgb_params(cfg, seed=seed, monotone=monotone), data, num_boost_round=cfg.num_boost_round,
                        folds=folds, callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)],
                        return_cvbooster=True)
        auc = result["valid auc-mean"]
        trees = int(np.argmax(auc)) + 1
        rows.append(describe(candidate, float(auc[trees - 1]), result["cvbooster"].boosters[0], trees))
        if best is None or rows[-1]["valid_auc"] > rows[best]["valid_auc"]:
            best = len(rows) - 1
    chosen = candidates[best]
    return Choice(chosen.cfg.model_copy(update={"num_boost_round": rows[best]["trees"]}), chosen.name, rows)
