"""Evaluation: rank ordering, calibration, stability, segments, fairness. Plain functions over numpy arrays."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score, roc_curve

from service.monitoring import drift

MIN_DEFAULTS_FOR_AUC = 5


def ks_statistic(y: np.ndarray, p: np.ndarray) -> float:
    fpr, tpr, _ = roc_curve(y, p)
    return float(np.max(tpr - fpr))


def auc_or_none(y: np.ndarray, p: np.ndarray) -> float | None:
    """AUC, or None when a group has too few defaults (or non-defaults) for it to mean anything."""
    if y.sum() < MIN_DEFAULTS_FOR_AUC or (1 - y).sum() < MIN_DEFAULTS_FOR_AUC:
        return None
    return float(roc_auc_score(y, p))


def calibration_by_decile(y: np.ndarray, p: np.ndarray) -> list[dict]:
    """Applications ordered by PD, cut into ten equal groups: expected (mean PD) against observed."""
    order = np.argsort(p, kind="stable")
    out = []
    for k, idx in enumerate(np.array_split(order, 10), start=1):
        out.append({"decile": k, "n": int(idx.size), "expected": float(p[idx].mean()),
                    "observed": float(y[idx].mean()), "pd_from": float(p[idx].min()), "pd_to": float(p[idx].max())})
    return out


def calibration_error(deciles: list[dict]) -> float:
    """Mean absolute gap between expected and observed default rate over the deciles (weighted by n)."""
    n = np.array([d["n"] for d in deciles], dtype=float)
    gap = np.abs(np.array([d["expected"] - d["observed"] for d in deciles]))
    return float((n * gap).sum() / n.sum())


def capture_rates(y: np.ndarray, p: np.ndarray, shares: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3)) -> dict[str, float]:
    """Share of all defaults found among the riskiest ``share`` of applications."""
    order = np.argsort(-p, kind="stable")
    total = max(int(y.sum()), 1)
    return {f"{int(s * 100)}%": float(y[order[: max(1, int(round(s * len(y))))]].sum() / total) for s in shares}


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict:
    auc = float(roc_auc_score(y, p))
    deciles = calibration_by_decile(y, p)
    return {
        "n": int(len(y)), "default_rate": float(y.mean()), "mean_pd": float(p.mean()),
        "auc": auc, "gini": 2 * auc - 1, "ks": ks_statistic(y, p),
        "brier": float(brier_score_loss(y, p)), "log_loss": float(log_loss(y, np.clip(p, 1e-9, 1 - 1e-9))),
        "calibration_error": calibration_error(deciles), "calibration_by_decile": deciles,
        "capture_rates": capture_rates(y, p),
    }


# ---------------------------------------------------------------------------------------------------------
# Stability


def quantile_edges(reference: np.ndarray, bins: int = 10) -> np.ndarray:
    """Interior bin edges from the reference's non-missing values (ties collapse to fewer bins)."""
    ref = reference[~np.isnan(reference)]
    if ref.size == 0:
        return np.empty(0)
    return np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))


def psi(expected: np.ndarray, actual: np.ndarray, eps: float = 1e-4) -> float:
    """Population stability index between two sets of bin shares (PSI > 0.25: a major shift)."""
    return drift.psi(expected, actual, eps)


REFERENCE_BINS = 10  # quantile bins per numeric subject, fixed on the training rows
REFERENCE_MIN_ROWS = 200  # training rows a segment (and each of its seasons) needs to get its own reference


def drift_reference(X: np.ndarray, features: list[dict], *, pd: np.ndarray, score: np.ndarray,
                    groups: dict[str, np.ndarray] | None, dates: np.ndarray | None,
                    segments: dict[str, np.ndarray]) -> drift.ReferenceSet:
    """What the service keeps to monitor drift: counts over bins fixed here for the score, the PD, every
    feature and every reason group's points, per segment and season where the rows allow
    (service/monitoring/drift.py owns the format and reads it back)."""
    columns = {drift.subject_key("score", "score"): (score, ()), drift.subject_key("pd", "pd"): (pd, ())}
    columns |= {drift.subject_key("feature", f["name"]): (X[:, j], tuple(f["categories"]))
                for j, f in enumerate(features)}
    columns |= {drift.subject_key("group", g): (v, ()) for g, v in (groups or {}).items()}
    return drift.build_reference(columns, dates=dates, segments=segments, bins=REFERENCE_BINS,
                                 min_rows=REFERENCE_MIN_ROWS)


def psi_between(reference: drift.ReferenceSet, key: str, values: np.ndarray) -> float:
    """PSI of ``values`` against a subject's pooled training distribution."""
    binning = reference.binnings[key]
    ref = reference.cells[key][drift.ALL][drift.ALL]
    return psi(ref / ref.sum(), binning.counts(values) / max(len(values), 1))


# ---------------------------------------------------------------------------------------------------------
# Segments and fairness


def by_group(groups: np.ndarray, y: np.ndarray, p: np.ndarray, approved: np.ndarray) -> list[dict]:
    out = []
    for g in sorted({str(v) for v in groups}):
        m = groups.astype(str) == g
        out.append({"group": g, "n": int(m.sum()), "default_rate": float(y[m].mean()), "mean_pd": float(p[m].mean()),
                    "auc": auc_or_none(y[m], p[m]), "approval_rate": float(approved[m].mean())})
    return out


def fairness(groups: np.ndarray, y: np.ndarray, p: np.ndarray, cutoff: float, min_ratio: float) -> dict:
    """Approval-rate ratio (lowest group over highest) at the cut-off, AUC per group, and a flag."""
    rows = by_group(groups, y, p, p < cutoff)
    rates = [r["approval_rate"] for r in rows if r["n"] > 0]
    ratio = min(rates) / max(rates) if rates and max(rates) > 0 else 1.0
    return {"groups": rows, "approval_rate_ratio": ratio, "flagged": ratio < min_ratio}


def age_band(age: np.ndarray) -> np.ndarray:
    bands = np.array(["<30", "30-44", "45-59", "60+"], dtype=object)
    out = bands[np.searchsorted([30, 45, 60], np.nan_to_num(age, nan=-1), side="right")]
    out[np.isnan(age)] = "unknown"
    return out


# ---------------------------------------------------------------------------------------------------------
# Monotone constraints, checked on the fitted model


def monotone_check(predict_margin: Callable[[np.ndarray], np.ndarray], X: np.ndarray, names: tuple[str, ...],
                   directions: list[int], grid_points: int = 15, rows: int = 200, seed: int = 0) -> list[dict]:
    """Sweep each constrained feature over its observed range for sample rows; count direction violations."""
    rng = np.random.default_rng(seed)
    sample = X[rng.choice(len(X), size=min(rows, len(X)), replace=False)]
    out = []
    for j, (name, d) in enumerate(zip(names, directions, strict=True)):
        if d == 0:
            continue
        col = X[:, j][~np.isnan(X[:, j])]
        grid = np.unique(np.quantile(col, np.linspace(0, 1, grid_points))) if col.size else np.empty(0)
        if grid.size < 2:
            out.append({"feature": name, "direction": d, "rows_checked": 0, "violations": 0, "held": True})
            continue
        sweep = np.repeat(sample, grid.size, axis=0)
        sweep[:, j] = np.tile(grid, len(sample))
        margin = predict_margin(sweep).reshape(len(sample), grid.size)
        steps = np.diff(margin, axis=1) * d
        violations = int((steps < -1e-9).any(axis=1).sum())
        out.append({"feature": name, "direction": d, "rows_checked": len(sample), "violations": violations,
                    "held": violations == 0})
    return out
