"""The bar a table model must clear: what a careful analyst gets from LightGBM with its defaults
(``LGBMClassifier()``, text columns as pandas categories, so LightGBM's native categorical splits), scored
out of fold on the very folds the table path uses. The test on German credit and benchmarks/bench_tables.py
both measure against it."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score


def as_lightgbm_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Numbers stay numbers; everything else becomes a pandas category, which LightGBM splits natively."""
    out = df.copy()
    for name in out.columns:
        col = out[name]
        if not (pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)):
            out[name] = col.astype(str).where(col.notna()).astype("category")
    return out


def default_lightgbm_oof_auc(df: pd.DataFrame, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]],
                             seed: int = 0) -> float:
    """Out-of-fold AUC of ``LGBMClassifier()`` (defaults; only the seed and quiet logging set) over ``folds``."""
    X = as_lightgbm_frame(df)
    X.columns = [f"c{j}" for j in range(X.shape[1])]  # LightGBM refuses some characters of real column names
    oof = np.empty(len(y))
    for train, test in folds:
        model = lgb.LGBMClassifier(random_state=seed, verbose=-1).fit(X.iloc[train], y[train])
        oof[test] = model.predict_proba(X.iloc[test])[:, 1]
    return float(roc_auc_score(y, oof))
