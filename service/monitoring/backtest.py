"""Do the PDs come true? Performance before labels mature, and back-testing once they have.

Two questions, both answered from arrays of calibrated PDs (numpy, no dataframe, no database):

* **Before labels mature** (confidence-based performance estimation, as NannyML's CBPE): if the PDs are
  calibrated, the expected default rate of a group is their mean and the expected ROC AUC is the AUC weighted by
  the probability that each pair is discordant,
  ``sum_ij p_i (1 - p_j) 1[s_i > s_j] / sum_(i != j) p_i (1 - p_j)`` (ties count one half), computed in
  O(n log n) by sorting. The band is where the *realised* value would fall under calibration: labels are drawn
  from the PDs ``samples`` times with a fixed seed and the central ``band_level`` of the draws is kept.
* **Once labels mature** (12 months after the application): by vintage and grade, the predicted PD (mean) vs the
  realised default rate with the Jeffreys test of the ECB's instructions for IRB validation,
  ``p = Beta(D + 1/2, N - D + 1/2).cdf(PD)``: a p-value below ``alpha`` says the realised rate is significantly
  above the PD (flag ``above``); with ``two_sided``, above ``1 - alpha`` flags ``below``. Equivalently the
  grade's PD lies outside the Jeffreys interval ``[Beta.ppf(alpha), Beta.ppf(1 - alpha)]`` of its realised rate,
  which is what the report draws. The score's AUC per vintage, None when a vintage has one class only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

try:  # scipy comes with scikit-learn; the numpy fallback below gives the same numbers (tests compare them)
    from scipy import special as _special
    from scipy import stats as _stats
except ImportError:  # pragma: no cover - exercised by forcing the fallback in tests
    _special = _stats = None

DEFAULT_SAMPLES = 400
DEFAULT_ALPHA = 0.05
DEFAULT_BAND_LEVEL = 0.95
MATURITY_MONTHS = 12  # defaulted_12m: 90+ days past due within 12 months of the application


# ---------------------------------------------------------------------------------------------------------
# The Beta distribution (regularised incomplete beta) and the Jeffreys test.


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta (modified Lentz), as in Numerical Recipes 6.4."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def beta_cdf_numpy(x: float, a: float, b: float) -> float:
    """Beta(a, b) CDF at ``x`` without scipy."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def beta_ppf_numpy(q: float, a: float, b: float) -> float:
    """Beta(a, b) quantile without scipy: bisection on the CDF (60 halvings: below 1e-18)."""
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if beta_cdf_numpy(mid, a, b) < q:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def beta_cdf(x: float, a: float, b: float) -> float:
    return float(_special.betainc(a, b, x)) if _special is not None else beta_cdf_numpy(x, a, b)


def beta_ppf(q: float, a: float, b: float) -> float:
    return float(_stats.beta.ppf(q, a, b)) if _stats is not None else beta_ppf_numpy(q, a, b)


def _check_counts(defaults: int, n: int) -> None:
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 <= defaults <= n:
        raise ValueError(f"defaults must be between 0 and n = {n}, got {defaults}")


def jeffreys_p_value(defaults: int, n: int, pd: float) -> float:
    """P-value of the Jeffreys test that the realised rate is above ``pd``: Beta(D + 1/2, N - D + 1/2) CDF at pd.
    Small values say the PD is too low for the defaults seen."""
    _check_counts(defaults, n)
    if not 0.0 <= pd <= 1.0:
        raise ValueError(f"pd must be between 0 and 1, got {pd}")
    return beta_cdf(pd, defaults + 0.5, n - defaults + 0.5)


def jeffreys_interval(defaults: int, n: int, alpha: float = DEFAULT_ALPHA) -> tuple[float, float]:
    """The Jeffreys interval of the realised rate, ``alpha`` on each side: a PD below its lower end has a
    p-value below alpha (flag above), a PD above its upper end a p-value above 1 - alpha (flag below)."""
    _check_counts(defaults, n)
    check_alpha(alpha)
    a, b = defaults + 0.5, n - defaults + 0.5
    return beta_ppf(alpha, a, b), beta_ppf(1.0 - alpha, a, b)


def check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be between 0 and 0.5 (exclusive), got {alpha}")


# ---------------------------------------------------------------------------------------------------------
# AUC: realised (labels) and expected (PDs), both in O(n log n).


def _tie_groups(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort order of ``s`` and the start of each group of equal values in that order."""
    order = np.argsort(s, kind="stable")
    ss = s[order]
    starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]]) if len(ss) else np.array([], dtype=np.int64)
    return order, starts


def midranks(s: np.ndarray) -> np.ndarray:
    """1-based ranks of ``s``, ties sharing their mean rank."""
    s = np.asarray(s, dtype=np.float64)
    order, starts = _tie_groups(s)
    ends = np.r_[starts[1:], len(s)]
    mean_rank = (starts + ends + 1) / 2.0  # mean of (start + 1 .. end)
    ranks = np.empty(len(s))
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def auc(risk: np.ndarray, defaulted: np.ndarray) -> float | None:
    """ROC AUC of ``risk`` (higher = riskier) against 0/1 outcomes, ties counting one half; None with one class."""
    y = np.asarray(defaulted).astype(bool)
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return None
    return float((midranks(risk)[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def expected_auc(pd: np.ndarray, risk: np.ndarray | None = None) -> float | None:
    """The AUC that calibrated ``pd`` imply for the ranking by ``risk`` (default: the PD itself):
    sum over ordered pairs i != j of p_i (1 - p_j) [1 if s_i > s_j, 1/2 if equal] / sum of p_i (1 - p_j).
    Sort once, then prefix sums of (1 - p) over lower groups: O(n log n). None when no pair can be discordant."""
    p = np.asarray(pd, dtype=np.float64)
    s = p if risk is None else np.asarray(risk, dtype=np.float64)
    if len(p) < 2:
        return None
    q = 1.0 - p
    order, starts = _tie_groups(s)
    pg = np.add.reduceat(p[order], starts)
    qg = np.add.reduceat(q[order], starts)
    q_below = np.cumsum(qg) - qg
    self_pairs = float(np.dot(p, q))
    numerator = float(np.dot(pg, q_below)) + 0.5 * (float(np.dot(pg, qg)) - self_pairs)
    denominator = float(p.sum()) * float(q.sum()) - self_pairs
    return numerator / denominator if denominator > 0 else None


# ---------------------------------------------------------------------------------------------------------
# CBPE: expected default rate and AUC, with the band a calibrated model's realised values fall in.


@dataclass(frozen=True)
class Estimate:
    """Expected performance of a group of applications from their PDs, next to the realised one if known."""

    n: int
    expected_default_rate: float
    default_rate_band: tuple[float, float]
    expected_auc: float | None
    auc_band: tuple[float, float] | None
    n_mature: int = 0  # applications whose 12-month outcome is known
    defaults: int | None = None
    realised_default_rate: float | None = None
    realised_auc: float | None = None
    flags: tuple[str, ...] = ()  # default_rate_above_band, default_rate_below_band, auc_below_band, auc_above_band


def estimate(pd: np.ndarray, *, risk: np.ndarray | None = None, samples: int = DEFAULT_SAMPLES, seed: int = 0,
             band_level: float = DEFAULT_BAND_LEVEL) -> Estimate:
    """Expected default rate and AUC of applications with calibrated ``pd``, with bands from ``samples`` label
    draws (seeded: the same input gives the same band)."""
    p = np.asarray(pd, dtype=np.float64)
    if len(p) == 0:
        raise ValueError("no applications to estimate")
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError("pd must be between 0 and 1")
    if samples < 10:
        raise ValueError(f"samples must be >= 10, got {samples}")
    if not 0.5 <= band_level < 1.0:
        raise ValueError(f"band_level must be in [0.5, 1), got {band_level}")
    s = p if risk is None else np.asarray(risk, dtype=np.float64)
    rng = np.random.default_rng(seed)
    ranks = midranks(s)  # the ranking is fixed; only the labels are drawn
    rates = np.empty(samples)
    aucs = np.full(samples, np.nan)
    n = len(p)
    for k in range(samples):
        y = rng.random(n) < p
        n1 = int(y.sum())
        rates[k] = n1 / n
        if 0 < n1 < n:
            aucs[k] = (ranks[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * (n - n1))
    tail = (1.0 - band_level) / 2.0
    rate_band = tuple(float(v) for v in np.quantile(rates, [tail, 1.0 - tail]))
    finite = aucs[np.isfinite(aucs)]
    e_auc = expected_auc(p, s)
    auc_band = tuple(float(v) for v in np.quantile(finite, [tail, 1.0 - tail])) \
        if e_auc is not None and len(finite) >= samples // 2 else None
    return Estimate(n=n, expected_default_rate=float(p.mean()), default_rate_band=rate_band,  # type: ignore[arg-type]
                    expected_auc=e_auc, auc_band=auc_band)  # type: ignore[arg-type]


def with_realised(e: Estimate, *, risk: np.ndarray, defaulted: np.ndarray) -> Estimate:
    """``e`` (estimated on exactly these applications) with the realised rate and AUC and the flags where a
    realised value falls outside its band."""
    y = np.asarray(defaulted).astype(bool)
    d = int(y.sum())
    rate = d / len(y)
    realised_auc = auc(risk, y)
    flags = []
    if rate > e.default_rate_band[1]:
        flags.append("default_rate_above_band")
    elif rate < e.default_rate_band[0]:
        flags.append("default_rate_below_band")
    if realised_auc is not None and e.auc_band is not None:
        if realised_auc < e.auc_band[0]:
            flags.append("auc_below_band")
        elif realised_auc > e.auc_band[1]:
            flags.append("auc_above_band")
    return Estimate(**{**e.__dict__, "n_mature": len(y), "defaults": d, "realised_default_rate": rate,
                       "realised_auc": realised_auc, "flags": tuple(flags)})


# ---------------------------------------------------------------------------------------------------------
# Back-test by vintage and grade.


def vintage_labels(months: np.ndarray, by: str = "month") -> np.ndarray:
    """'YYYY-MM' or 'YYYY-Qn' for month indexes (months since 1970-01)."""
    m = np.asarray(months, dtype=np.int64)
    year, month = 1970 + m // 12, m % 12
    if by == "month":
        return np.array([f"{y:04d}-{k + 1:02d}" for y, k in zip(year, month, strict=True)], dtype=object)
    if by == "quarter":
        return np.array([f"{y:04d}-Q{k // 3 + 1}" for y, k in zip(year, month, strict=True)], dtype=object)
    raise ValueError(f"by must be 'month' or 'quarter', got {by!r}")


@dataclass(frozen=True)
class GradeTest:
    """Predicted vs realised default rate of one grade (in one vintage, or pooled over the mature ones)."""

    grade: str
    vintage: str | None  # None: pooled over every mature vintage
    n: int
    defaults: int
    mean_pd: float
    realised_rate: float
    p_value: float  # Jeffreys: Beta(D + 1/2, N - D + 1/2).cdf(mean_pd)
    interval: tuple[float, float]  # Jeffreys interval of the realised rate, alpha on each side
    flag: str | None  # "above": realised significantly above the PD; "below" (two-sided only)


@dataclass(frozen=True)
class VintageRow:
    vintage: str
    mature: bool
    estimate: Estimate  # expected; with realised values when mature


@dataclass(frozen=True)
class Backtest:
    alpha: float
    two_sided: bool
    by: str
    samples: int
    band_level: float
    grades: list[GradeTest]  # pooled over mature vintages, in grade order
    cells: list[GradeTest]  # per mature vintage and grade
    vintages: list[VintageRow]  # every vintage, oldest first
    mature: Estimate | None  # the mature vintages pooled: expected, band and realised
    immature: Estimate | None  # the applications whose outcome is not known yet: expected only
    flagged: list[str] = field(default_factory=list)  # grades flagged in the pooled test


def grade_test(grade: str, vintage: str | None, pd: np.ndarray, defaulted: np.ndarray, *, alpha: float,
               two_sided: bool) -> GradeTest:
    n, d = len(pd), int(np.asarray(defaulted).astype(bool).sum())
    mean_pd = float(np.mean(pd))
    p = jeffreys_p_value(d, n, min(max(mean_pd, 0.0), 1.0))
    flag = "above" if p < alpha else ("below" if two_sided and p > 1.0 - alpha else None)
    return GradeTest(grade=grade, vintage=vintage, n=n, defaults=d, mean_pd=mean_pd, realised_rate=d / n,
                     p_value=p, interval=jeffreys_interval(d, n, alpha), flag=flag)


def backtest(*, pd: np.ndarray, grade: np.ndarray, month: np.ndarray, defaulted: np.ndarray, mature: np.ndarray,
             grade_order: Sequence[str], risk: np.ndarray | None = None, by: str = "month",
             alpha: float = DEFAULT_ALPHA, two_sided: bool = False, samples: int = DEFAULT_SAMPLES, seed: int = 0,
             band_level: float = DEFAULT_BAND_LEVEL) -> Backtest:
    """Back-test PDs against outcomes: ``month`` is each application's month index, ``mature`` whether its
    12-month outcome ``defaulted`` is known (immature outcomes are ignored, whatever they hold). A vintage is
    mature when all of its applications are."""
    check_alpha(alpha)
    pd = np.asarray(pd, dtype=np.float64)
    grade = np.asarray(grade, dtype=object)
    defaulted = np.asarray(defaulted)
    mature = np.asarray(mature, dtype=bool)
    n = len(pd)
    if not all(len(a) == n for a in (grade, month, defaulted, mature)):
        raise ValueError("pd, grade, month, defaulted and mature must have the same length")
    if n == 0:
        raise ValueError("no applications to back-test")
    unknown = sorted(set(grade.tolist()) - set(grade_order))
    if unknown:
        raise ValueError(f"grades {', '.join(map(str, unknown))} are not in the grade order {list(grade_order)}")
    risk = pd if risk is None else np.asarray(risk, dtype=np.float64)
    y = np.where(mature, defaulted, 0).astype(bool)
    vintage = vintage_labels(month, by)
    kw = {"samples": samples, "band_level": band_level}

    rows, cells = [], []
    for k, v in enumerate(sorted(set(vintage.tolist()))):
        idx = np.flatnonzero(vintage == v)
        is_mature = bool(mature[idx].all())
        e = estimate(pd[idx], risk=risk[idx], seed=seed + k, **kw)
        if is_mature:
            e = with_realised(e, risk=risk[idx], defaulted=y[idx])
            for g in grade_order:
                gi = idx[grade[idx] == g]
                if len(gi):
                    cells.append(grade_test(g, v, pd[gi], y[gi], alpha=alpha, two_sided=two_sided))
        rows.append(VintageRow(vintage=v, mature=is_mature, estimate=e))

    in_mature = np.isin(vintage, [r.vintage for r in rows if r.mature])
    grades = [grade_test(g, None, pd[in_mature & (grade == g)], y[in_mature & (grade == g)], alpha=alpha,
                         two_sided=two_sided) for g in grade_order if np.any(in_mature & (grade == g))]
    pooled = estimate(pd[in_mature], risk=risk[in_mature], seed=seed + 10_000, **kw) if in_mature.any() else None
    if pooled is not None:
        pooled = with_realised(pooled, risk=risk[in_mature], defaulted=y[in_mature])
    immature = estimate(pd[~in_mature], risk=risk[~in_mature], seed=seed + 20_000, **kw) \
        if not in_mature.all() else None
    return Backtest(alpha=alpha, two_sided=two_sided, by=by, samples=samples, band_level=band_level, grades=grades,
                    cells=cells, vintages=rows, mature=pooled, immature=immature,
                    flagged=[t.grade for t in grades if t.flag])
