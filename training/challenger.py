"""The challenger: a classic scorecard, logistic regression on weight-of-evidence of binned features."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from training.evaluate import quantile_edges


class BinnedLogisticScorecard:
    """Quantile bins per numeric feature (categories as they are), a bin for missing values, WoE encoding,
    then L2-regularised logistic regression. Estimator-style: ``fit`` sets the trailing-underscore state."""

    def __init__(self, bins: int = 6, categorical: tuple[int, ...] = (), C: float = 0.1, seed: int = 0) -> None:
        self.bins = bins
        self.categorical = categorical
        self.C = C
        self.seed = seed

    def _bin(self, j: int, values: np.ndarray) -> np.ndarray:
        """Bin index per value; the last index (len(edges)+1) is 'missing'."""
        edges = self.edges_[j]
        if j in self.categorical:
            idx = np.searchsorted(edges, values)
            known = (idx < len(edges)) & (edges[np.minimum(idx, len(edges) - 1)] == values) if len(edges) else \
                np.zeros(len(values), dtype=bool)
            return np.where(np.isnan(values), len(edges) + 1, np.where(known, idx, len(edges)))
        return np.where(np.isnan(values), len(edges) + 1, np.searchsorted(edges, values, side="right"))

    def fit(self, X: np.ndarray, y: np.ndarray) -> BinnedLogisticScorecard:
        if X.ndim != 2 or len(X) != len(y):
            raise ValueError(f"X must be 2-D with one row per label; got X {X.shape}, y {y.shape}")
        if set(np.unique(y)) - {0, 1}:
            raise ValueError("y must be 0/1")
        self.edges_: list[np.ndarray] = []
        for j in range(X.shape[1]):
            col = X[:, j]
            self.edges_.append(np.unique(col[~np.isnan(col)]) if j in self.categorical
                               else quantile_edges(col, self.bins))
        goods, bads = (1 - y).sum(), y.sum()
        self.woe_: list[np.ndarray] = []
        for j in range(X.shape[1]):
            b = self._bin(j, X[:, j])
            n_bins = len(self.edges_[j]) + 2
            bad = np.bincount(b, weights=y, minlength=n_bins) + 0.5
            good = np.bincount(b, weights=1 - y, minlength=n_bins) + 0.5
            self.woe_.append(np.log((bad / bads) / (good / goods)))
        self.model_ = LogisticRegression(C=self.C, max_iter=2000, random_state=self.seed)
        self.model_.fit(self.transform(X), y)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return np.column_stack([self.woe_[j][self._bin(j, X[:, j])] for j in range(X.shape[1])])

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.model_.predict_proba(self.transform(X))[:, 1]
