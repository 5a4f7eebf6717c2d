"""Point-in-time features: one code path for one applicant online and for a whole data folder in batch.

An application dated D sees only monthly records of *complete* months before D: the window is the
``WINDOW_MONTHS`` calendar months ending with the month before D's month. A record for D's own month (the
month is not over, its filing is not due) or any later month changes nothing. Every feature is a
vectorised numpy expression over ``(fields, applications, months)`` arrays, so one applicant is simply n = 1.

For one applicant the cost is the number of numpy calls, not the arithmetic, so the work is fused: every field
of every source sits in one array, each window slice (last 3, 6, 12 months, ...) is summed and counted once for
all fields, and features of one kind (means, growth rates, shares, volatilities, counts) are computed together.
Each sum still runs over the same months in the same order as a reduction of that one field's window, so the
values are the same to the bit as the plain one-feature-at-a-time formulas (tests/test_engine_speed_parity.py
keeps those formulas as the reference).

A source that is absent, or not consented to, yields NaN for the features that read it, never zero:
LightGBM routes missing values explicitly, and the explanation never names a source that was not used.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import numpy as np

from service.scoring.catalog import BY_NAME, FEATURE_NAMES, WINDOW_MONTHS
from service.scoring.graph import GRAPH_FEATURES, applicant_rows, graph_features
from service.scoring.raw import CONTRACT, MONTHLY_SOURCES, TAX_GRADES, RawData, Table, month_index

W = WINDOW_MONTHS
TAX_GRADE_SCORE = {g: float(4 - i) for i, g in enumerate(TAX_GRADES)}  # A=4 ... D=0: higher is better
DAYS_PER_MONTH = 30.4375


@dataclass(frozen=True)
class FeatureMatrix:
    """Features in catalogue order, one row per application."""

    application_id: np.ndarray
    values: np.ndarray  # float64 (n, len(FEATURE_NAMES)); categoricals as their index in the catalogue's tuple
    sources_used: np.ndarray  # bool (n, len(MONTHLY_SOURCES)): the source had records in the window and was allowed
    names: tuple[str, ...] = FEATURE_NAMES

    def column(self, name: str) -> np.ndarray:
        return self.values[:, self.names.index(name)]


# ---------------------------------------------------------------------------------------------------------
# Windows: long monthly records -> one dense (fields, applications, W) array, oldest month first, NaN where no
# record.

FIELDS: tuple[tuple[str, str], ...] = tuple((s, f) for s in MONTHLY_SOURCES for f in CONTRACT[s].fields)
_ROW = {sf: k for k, sf in enumerate(FIELDS)}  # (source, field) -> its row in Windows.values
_SOURCE_ROWS = {s: slice(_ROW[s, CONTRACT[s].fields[0]], _ROW[s, CONTRACT[s].fields[-1]] + 1) for s in MONTHLY_SOURCES}
_SOURCE = {s: j for j, s in enumerate(MONTHLY_SOURCES)}


@dataclass(frozen=True)
class Windows:
    """Each application's last W complete months per source: the one point-in-time view that features (and the
    post-loan signals in signals.py) are computed from."""

    values: np.ndarray  # (len(FIELDS), n, W) float64, oldest month first; NaN = no record or source not allowed
    has: np.ndarray  # (len(MONTHLY_SOURCES), n, W) a record exists (False everywhere for an unused source)
    used: np.ndarray  # (n, len(MONTHLY_SOURCES)) the source had records in the window and was allowed

    def field(self, source: str, name: str) -> np.ndarray:
        return self.values[_ROW[source, name]]

    @property
    def fields(self) -> dict[str, dict[str, np.ndarray]]:
        """source -> field -> (n, W) (views of ``values``)."""
        return {s: {f: self.values[_ROW[s, f]] for f in CONTRACT[s].fields} for s in MONTHLY_SOURCES}

    @property
    def present(self) -> dict[str, np.ndarray]:
        """source -> (n, W) a record exists."""
        return {s: self.has[j] for j, s in enumerate(MONTHLY_SOURCES)}


def _numeric(field: str, values: np.ndarray) -> np.ndarray:
    if field == "tax_grade":
        return np.array([TAX_GRADE_SCORE.get(v, np.nan) for v in values], dtype=np.float64)
    return values.astype(np.float64)


def gather_windows(data: RawData, *, allowed_sources: Collection[str] | None = None) -> Windows:
    """The windows of every application of ``data`` as of its application date, for the allowed sources.

    An applicant without any record of a source in the window has no data from it: every field is NaN, so
    counts such as "months with a filing" come out missing rather than zero.
    """
    apps = data.applications
    n = len(apps["application_id"])
    asof = month_index(apps["application_date"])
    allowed = set(MONTHLY_SOURCES if allowed_sources is None else allowed_sources)
    tables = [(s, data.monthly[s]) for s in MONTHLY_SOURCES
              if s in allowed and s in data.monthly and len(data.monthly[s]["month"])]
    if not (n and tables):
        return Windows(np.full((len(FIELDS), n, W), np.nan), np.zeros((len(MONTHLY_SOURCES), n, W), dtype=bool),
                       np.zeros((n, len(MONTHLY_SOURCES)), dtype=bool))
    # One (enterprise, month) grid: each record's position on it, then one fancy index per source gathers
    # every field's window; the extra last column of a source's records stands for "no record" (NaN).
    m0 = min(int(asof.min()), *(int(t["month"].min()) for _, t in tables)) - W
    span = max(int(asof.max()), *(int(t["month"].max()) for _, t in tables)) - m0 + 1
    cell = apps["enterprise_row"][:, None] * span + ((asof - m0)[:, None] - W + np.arange(W))  # (n, W)
    values = np.full((len(FIELDS), n, W), np.nan)
    has = np.zeros((len(MONTHLY_SOURCES), n, W), dtype=bool)
    for source, table in tables:
        fields = CONTRACT[source].fields
        size = len(table["month"])
        record_at = np.full(data.n_enterprises * span, size)
        record_at[table["enterprise_row"] * span + (table["month"] - m0)] = np.arange(size)
        record = record_at[cell]
        by_record = np.empty((len(fields), size + 1))
        by_record[:, :size] = [_numeric(f, table[f]) if f == "tax_grade" else table[f] for f in fields]
        by_record[:, size] = np.nan
        values[_SOURCE_ROWS[source]] = by_record[:, record]
        has[_SOURCE[source]] = record < size
    return Windows(values, has, has.any(axis=2).T)


# ---------------------------------------------------------------------------------------------------------
# Reductions over the last (months) axis that treat NaN as "no data" and never warn.


def _count(x: np.ndarray) -> np.ndarray:
    return (~np.isnan(x)).sum(axis=-1).astype(np.float64)


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b; NaN where b is 0 (a NaN in a or b gives NaN by itself), without a warning."""
    return np.divide(a, b, out=np.full(np.broadcast(a, b).shape, np.nan), where=b != 0)


def _mean(x: np.ndarray) -> np.ndarray:
    return _div(np.nansum(x, axis=-1), _count(x))


def _trend(x: np.ndarray, y_mean: np.ndarray, n: np.ndarray, min_months: int = 3) -> np.ndarray:
    """Least-squares slope over the months present, as a share of the mean level ``y_mean`` per month."""
    ok = ~np.isnan(x)
    t = np.broadcast_to(np.arange(x.shape[-1], dtype=np.float64), x.shape)
    t_mean = _div(np.where(ok, t, 0.0).sum(axis=-1), n.astype(np.float64))
    dt = np.where(ok, t - t_mean[..., None], 0.0)
    dy = np.where(ok, x - y_mean[..., None], 0.0)
    slope = _div((dt * dy).sum(axis=-1), (dt * dt).sum(axis=-1))
    return np.where((n >= min_months) & (y_mean > 0), _div(slope, y_mean), np.nan)


@functools.cache
def _category_index(categories: tuple[str, ...]) -> dict[str, float]:
    return {c: float(i) for i, c in enumerate(categories)}


def _codes(values: np.ndarray, categories: tuple[str, ...]) -> np.ndarray:
    index = _category_index(categories)
    return np.array([index.get(v, np.nan) for v in values], dtype=np.float64)


# ---------------------------------------------------------------------------------------------------------
# Window statistics: each slice of the window summed and counted once, for every field at once.

SLICES = {"last3": slice(-3, None), "last6": slice(-6, None), "last12": slice(-12, None), "prev3": slice(-6, -3),
          "year_ago3": slice(-15, -12), "prev6": slice(-12, -6), "six_ago3": slice(-9, -6)}
_SLICE = {name: k for k, name in enumerate(SLICES)}
Key = tuple[str, str, str]  # (slice, source, field)


class _Stats:
    """For each (slice, field) key the features read: ``count`` of months with a value, ``sum`` of them (NaN
    when none) and ``mean``, each (keys, n). The zero-filled sum is numpy's nansum: the same pairwise sum over
    the same months as a reduction of that field's own window."""

    def __init__(self, values: np.ndarray, keys: tuple[Key, ...]) -> None:
        ok = ~np.isnan(values)
        zeroed = np.where(ok, values, 0.0)
        order, self._at = _stat_layout(keys)
        self.count = np.concatenate([ok[rows, :, SLICES[w]].sum(axis=-1) for w, rows in order])
        total = np.concatenate([zeroed[rows, :, SLICES[w]].sum(axis=-1) for w, rows in order])
        self.sum = np.where(self.count > 0, total, np.nan)
        self.mean = _div(total, self.count)

    def pick(self, table: np.ndarray, keys: tuple[Key, ...]) -> np.ndarray:
        """Rows of ``table`` (count, sum or mean) for ``keys``, as (len(keys), n)."""
        return table[self._at(keys)]


@functools.cache
def _stat_layout(keys: tuple[Key, ...]) -> tuple[list[tuple[str, list[int]]], functools._lru_cache_wrapper]:
    """The field rows to reduce per slice, and where each key lands in the stacked result."""
    by_slice: dict[str, list[int]] = {}
    for w, source, field in dict.fromkeys(keys):
        by_slice.setdefault(w, []).append(_ROW[source, field])
    position = {(w, *FIELDS[row]): k for k, (w, row) in enumerate((w, r) for w, rows in by_slice.items()
                                                                      for r in rows)}

    @functools.cache
    def at(wanted: tuple[Key, ...]) -> np.ndarray:
        return np.array([position[k] for k in wanted])

    return list(by_slice.items()), at


class _Columns:
    """The feature matrix under construction, one row per feature (catalogue order) until ``matrix``."""

    def __init__(self, n: int) -> None:
        self.rows = np.full((len(FEATURE_NAMES), n), np.nan)

    @staticmethod
    @functools.cache
    def _index(names: tuple[str, ...]) -> np.ndarray:
        return np.array([FEATURE_NAMES.index(name) for name in names])

    def put(self, names: tuple[str, ...], block: np.ndarray) -> None:
        self.rows[self._index(names)] = block

    def __getitem__(self, name: str) -> np.ndarray:
        return self.rows[FEATURE_NAMES.index(name)]

    def matrix(self) -> np.ndarray:
        return np.ascontiguousarray(self.rows.T)


def _keys(spec: Iterable[tuple[str, Key]]) -> tuple[tuple[str, ...], tuple[Key, ...]]:
    names, keys = zip(*spec, strict=True)
    return names, keys


# ---------------------------------------------------------------------------------------------------------
# The features, by kind. Sources: p = payments, t = tax, u = utilities, s = social insurance, b = bureau.

INFLOW, SALES, KWH = ("payments", "inflow"), ("tax", "declared_sales"), ("utilities", "electricity_kwh")
HEADS = ("social_insurance", "insured_headcount")

AVERAGES = _keys((
    ("pay_inflow_avg_3m", ("last3", *INFLOW)),
    ("pay_inflow_avg_12m", ("last12", *INFLOW)),
    ("pay_txn_avg_3m", ("last3", "payments", "transactions")),
    ("pay_counterparties_avg_3m", ("last3", "payments", "counterparties")),
    ("tax_sales_avg_12m", ("last12", *SALES)),
    ("tax_on_time_rate_12m", ("last12", "tax", "filed_on_time")),
    ("tax_invoice_count_avg_3m", ("last3", "tax", "invoices_issued")),
    ("elec_kwh_avg_3m", ("last3", *KWH)),
    ("util_days_late_avg_6m", ("last6", "utilities", "days_paid_late")),
))
# Ratios of two window means, growth rates (the ratio minus 1) and shares (ratios of two window sums).
GROWTH = (
    ("pay_inflow_growth_3m", ("last3", *INFLOW), ("prev3", *INFLOW)),
    ("pay_inflow_growth_yoy", ("last3", *INFLOW), ("year_ago3", *INFLOW)),
    ("tax_sales_growth_6m", ("last6", *SALES), ("prev6", *SALES)),
    ("elec_kwh_growth_3m", ("last3", *KWH), ("prev3", *KWH)),
    ("elec_kwh_growth_yoy", ("last3", *KWH), ("year_ago3", *KWH)),
    ("si_headcount_change_6m", ("last3", *HEADS), ("six_ago3", *HEADS)),
)
MEAN_RATIOS = (("xsrc_declared_to_inflow_6m", ("last6", *SALES), ("last6", *INFLOW)),)
SHARES = (
    ("pay_refund_rate_6m", ("last6", "payments", "refunds"), ("last6", *INFLOW)),
    ("tax_vat_rate_12m", ("last12", "tax", "vat_paid"), ("last12", *SALES)),
    ("xsrc_invoice_to_sales_12m", ("last12", "tax", "invoice_amount"), ("last12", *SALES)),
    ("si_contribution_per_head_6m", ("last6", "social_insurance", "contributions_paid"), ("last6", *HEADS)),
)
# Coefficients of variation (population std / mean over the months present), with the months they need.
VOLATILITY = {
    "last3": (("pay_inflow_cv_3m", INFLOW, 2),),
    "last6": (("pay_inflow_cv_6m", INFLOW, 3),),
    "last12": (("pay_inflow_cv_12m", INFLOW, 4), ("tax_sales_cv_12m", SALES, 4), ("elec_kwh_cv_12m", KWH, 4)),
}
TRENDS = (("pay_txn_trend_6m", ("payments", "transactions")), ("tax_invoice_trend_6m", ("tax", "invoices_issued")))
# The most recent value present in the last 3 or 12 months.
LATEST = (("si_headcount_latest", HEADS, 3), ("bureau_open_loans", ("bureau", "open_loans"), 3),
          ("bureau_inquiries_6m", ("bureau", "inquiries_6m"), 3), ("tax_grade", ("tax", "tax_grade"), 12),
          ("tax_arrears_latest", ("tax", "tax_arrears"), 12))  # not a feature: tax_arrears_to_sales reads it
# Months of the last 12 with a record and a positive value of the field (NaN when the source is not used).
POSITIVE_MONTHS = (("tax_invoice_months_12m", ("tax", "invoices_issued")),
                   ("tax_arrears_months_12m", ("tax", "tax_arrears")),
                   ("util_arrears_months_12m", ("utilities", "utility_arrears")))
RECORD_MONTHS = (("pay_months_12m", "payments"), ("tax_filing_months_12m", "tax"), ("util_months_12m", "utilities"))


def build_features(data: RawData, *, allowed_sources: Collection[str] | None = None,
                   windows: Windows | None = None) -> FeatureMatrix:
    """Compute every catalogue feature for every application in ``data`` as of its application date.

    ``allowed_sources`` limits the monthly sources that may be read (the applicant's consent), and "links" the
    related-party graph (``data.graph``); None allows all.
    ``windows`` (from ``gather_windows`` with the same sources) avoids gathering them twice.
    """
    apps = data.applications
    n = len(apps["application_id"])
    w = windows if windows is not None else gather_windows(data, allowed_sources=allowed_sources)
    f = _Columns(n)
    if n:
        with np.errstate(divide="ignore", invalid="ignore"):
            stats = _Stats(w.values, _STAT_KEYS)
            f.put(AVERAGES[0], stats.pick(stats.mean, AVERAGES[1]))
            _ratios(f, stats)
            _volatility(f, w, stats)
            _windows_shape(f, w, stats)
            _month_counts(f, w, stats)
            _cross_source(f, w, stats, apps)
            _profile(f, data)
            _graph(f, data, allowed_sources)
    return FeatureMatrix(application_id=apps["application_id"], values=f.matrix(), sources_used=w.used)


def _ratios(f: _Columns, stats: _Stats) -> None:
    """GROWTH and MEAN_RATIOS from window means, SHARES from window sums: one division for all of them."""
    means, sums = GROWTH + MEAN_RATIOS, SHARES
    num = np.concatenate([stats.pick(stats.mean, tuple(k for _, k, _ in means)),
                          stats.pick(stats.sum, tuple(k for _, k, _ in sums))])
    den = np.concatenate([stats.pick(stats.mean, tuple(k for _, _, k in means)),
                          stats.pick(stats.sum, tuple(k for _, _, k in sums))])
    ratio = _div(num, den)
    ratio[:len(GROWTH)] -= 1.0
    f.put(tuple(name for name, _, _ in means + sums), ratio)


@functools.cache
def _volatility_layout() -> tuple[tuple[str, ...], tuple[Key, ...], np.ndarray]:
    specs = [(name, (window, *field), months) for window, group in VOLATILITY.items()
             for name, field, months in group]
    return tuple(s[0] for s in specs), tuple(s[1] for s in specs), np.array([[s[2]] for s in specs])


def _volatility(f: _Columns, w: Windows, stats: _Stats) -> None:
    """VOLATILITY: population variance about the window mean, then std / mean, for all of them at once."""
    names, keys, minimum = _volatility_layout()
    mean, n = stats.pick(stats.mean, keys), stats.pick(stats.count, keys)
    squares, at = [], 0
    for window, group in VOLATILITY.items():  # one sum per window length, over its fields
        x = w.values[[_ROW[field] for _, field, _ in group]][..., SLICES[window]]
        deviation = (x - mean[at:at + len(group), :, None]) ** 2
        squares.append(np.where(np.isnan(deviation), 0.0, deviation).sum(axis=-1))  # nansum
        at += len(group)
    cv = _div(np.sqrt(_div(np.concatenate(squares), n)), mean)
    f.put(names, np.where((n >= minimum) & (mean > 0), cv, np.nan))


def _latest(w: Windows) -> np.ndarray:
    """LATEST, (len(LATEST), n): the value of the last month present among the last 12, if it is recent enough."""
    x = w.values[[_ROW[field] for _, field, _ in LATEST]][..., -12:]
    ok = ~np.isnan(x)
    position = 11 - np.argmax(ok[..., ::-1], axis=-1)  # (k, n); 11 when no month is present (then NaN below)
    value = x.reshape(-1, 12)[np.arange(position.size), position.ravel()].reshape(position.shape)
    recent = position >= 12 - np.array([[months] for _, _, months in LATEST])
    return np.where(ok.any(axis=-1) & recent, value, np.nan)


def _windows_shape(f: _Columns, w: Windows, stats: _Stats) -> None:
    """Trends, latest values, the weakest month and the worst arrears."""
    keys = tuple(("last6", *field) for _, field in TRENDS)
    x = w.values[[_ROW[field] for _, field in TRENDS]][..., -6:]
    f.put(tuple(name for name, _ in TRENDS),
          _trend(x, stats.pick(stats.mean, keys), stats.pick(stats.count, keys)))
    latest = _latest(w)
    f.put(tuple(name for name, _, _ in LATEST[:-1]), latest[:-1])
    inflow12 = w.field(*INFLOW)[:, -12:]
    mean12, count12 = (stats.pick(t, (("last12", *INFLOW),))[0] for t in (stats.mean, stats.count))
    f.put(("pay_min_to_avg_12m",), np.where(count12 >= 3, _div(np.fmin.reduce(inflow12, axis=1), mean12), np.nan))
    # Arrears against a floor of 1,000 CNY of monthly sales, so arrears with no sales still read as large.
    f.put(("tax_arrears_to_sales",), _div(latest[-1], np.fmax(f["tax_sales_avg_12m"], 1000.0)))
    f.put(("bureau_worst_dpd_12m",), np.fmax.reduce(w.field("bureau", "worst_dpd")[:, -12:], axis=1))
    missed = w.field("social_insurance", "missed_payment")
    f.put(("si_paid_rate_12m",), 1.0 - stats.pick(stats.mean, (("last12", "social_insurance", "missed_payment"),)))
    paid = missed == 0  # NaN (no record) breaks a streak, as a missed month does
    streak = np.cumprod(paid[:, ::-1], axis=1).sum(axis=1).astype(np.float64)
    f.put(("si_paid_streak_months",), np.where(w.used[:, _SOURCE["social_insurance"]], streak, np.nan))


@functools.cache
def _count_layout() -> tuple[tuple[str, ...], list[int], list[int], np.ndarray]:
    names = (*(n for n, _ in POSITIVE_MONTHS), "tax_late_filings_12m", "elec_low_months_12m",
             "si_missed_months_12m", *(n for n, _ in RECORD_MONTHS))
    positive_rows = [_ROW[field] for _, field in POSITIVE_MONTHS]
    positive_sources = [_SOURCE[source] for _, (source, _) in POSITIVE_MONTHS]
    sources = np.array([*positive_sources, _SOURCE["tax"], _SOURCE["utilities"], _SOURCE["social_insurance"],
                        *(_SOURCE[s] for _, s in RECORD_MONTHS)])
    return names, positive_rows, positive_sources, sources


def _month_counts(f: _Columns, w: Windows, stats: _Stats) -> None:
    names, positive_rows, positive_sources, sources = _count_layout()
    has12 = w.has[..., -12:]
    avg_kwh12 = stats.pick(stats.mean, (("last12", *KWH),))[0]
    months = np.concatenate([
        (w.values[positive_rows][..., -12:] > 0) & has12[positive_sources],
        ((w.field("tax", "filed_on_time")[:, -12:] == 0) & has12[_SOURCE["tax"]])[None],
        ((w.field(*KWH)[:, -12:] < 0.5 * avg_kwh12[:, None]) & has12[_SOURCE["utilities"]])[None],
        (w.field("social_insurance", "missed_payment")[:, -12:] == 1)[None],
        has12[[_SOURCE[s] for _, s in RECORD_MONTHS]],
    ]).sum(axis=-1).astype(np.float64)
    f.put(names, np.where(w.used.T[sources], months, np.nan))


def monthly_revenue(pay_inflow_avg_12m: np.ndarray, tax_sales_avg_12m: np.ndarray) -> np.ndarray:
    """Revenue: payment inflow where the applicant shared it, declared sales otherwise (NaN when neither).
    The features and the lender policy's limit both use this one rule."""
    return np.where(np.isnan(pay_inflow_avg_12m), tax_sales_avg_12m, pay_inflow_avg_12m)


def loan_to_revenue(requested_amount: np.ndarray | float, revenue: np.ndarray | float) -> np.ndarray:
    """The amount asked for against a year of revenue: the feature, and the recourse that asks for less, both
    compute it here."""
    return _div(np.asarray(requested_amount, dtype=np.float64), 12.0 * np.asarray(revenue, dtype=np.float64))


_INTENSITY = (("last6", *KWH), ("prev6", *KWH), ("last6", *SALES), ("prev6", *SALES), ("last6", *INFLOW),
              ("prev6", *INFLOW))


# Every (slice, field) the features above read from _Stats: each reduced once.
_STAT_KEYS: tuple[Key, ...] = tuple(dict.fromkeys((
    *AVERAGES[1], *(k for _, a, b in GROWTH + MEAN_RATIOS + SHARES for k in (a, b)), *_volatility_layout()[1],
    *(("last6", *field) for _, field in TRENDS), ("last12", *INFLOW), ("last12", *KWH),
    ("last12", "social_insurance", "missed_payment"), *_INTENSITY)))


def _cross_source(f: _Columns, w: Windows, stats: _Stats, apps: Table) -> None:
    no_inflow = np.isnan(f["pay_inflow_avg_12m"])
    revenue = monthly_revenue(f["pay_inflow_avg_12m"], f["tax_sales_avg_12m"])
    f.put(("loan_term_months",), apps["term_months"].astype(np.float64))
    f.put(("loan_purpose",), _codes(apps["purpose"], BY_NAME["loan_purpose"].categories))
    # The same rule as monthly_revenue, month by month: the applicant's inflows if shared, else declared sales;
    # the rule picks a whole row, so its window sums are those of the row it picks.
    kwh12 = stats.pick(stats.mean, (("last12", *KWH),))[0]
    kwh6, kwh_prev6, sales6, sales_prev6, inflow6, inflow_prev6 = stats.pick(stats.sum, _INTENSITY)
    net = w.field(*INFLOW)[:, -6:] - w.field("payments", "outflow")[:, -6:]
    net_sum = np.where(_count(net) > 0, np.where(np.isnan(net), 0.0, net).sum(axis=1), np.nan)  # _sum
    ratios = _div(np.stack([kwh12, net_sum, kwh6, kwh_prev6]),
                  np.stack([revenue / 10_000.0, inflow6, np.where(no_inflow, sales6, inflow6),
                            np.where(no_inflow, sales_prev6, inflow_prev6)]))
    f.put(("loan_to_revenue",), loan_to_revenue(apps["requested_amount"], revenue)[None, :])
    f.put(("xsrc_elec_per_revenue_12m", "pay_net_margin_6m"), ratios[:2])
    f.put(("elec_intensity_change_12m",), _div(ratios[2], ratios[3]) - 1.0)
    f.put(("xsrc_sources_available",), w.used.sum(axis=1).astype(np.float64))


def _profile(f: _Columns, data: RawData) -> None:
    apps, prof = data.applications, data.profile
    rows = apps["enterprise_row"]
    age_days = (apps["application_date"] - prof["registration_date"][rows]).astype(np.float64)
    f.put(("biz_age_months",), np.floor(age_days / DAYS_PER_MONTH))
    f.put(("biz_employees",), prof["employees"][rows].astype(np.float64))
    for feature, column in (("biz_industry", "industry"), ("biz_region", "region"), ("biz_city_tier", "city_tier"),
                            ("biz_legal_form", "legal_form")):
        f.put((feature,), _codes(prof[column][rows], BY_NAME[feature].categories))


def _graph(f: _Columns, data: RawData, allowed_sources: Collection[str] | None) -> None:
    """The related-party features (graph.py), missing when there is no graph or the applicant's links were not
    consented to; guarantees given count against a year of the same revenue as the other features."""
    if data.graph is None or (allowed_sources is not None and "links" not in allowed_sources):
        return
    apps, prof = data.applications, data.profile
    at = apps["enterprise_row"]
    firm, rows = applicant_rows(data.graph, prof["enterprise_id"][at], data.related)
    block = graph_features(data.graph, rows, firm=firm, registered=prof["registration_date"][at],
                           application_day=apps["application_date"])
    f.put(GRAPH_FEATURES[:-1], block[:-1])
    revenue = monthly_revenue(f["pay_inflow_avg_12m"], f["tax_sales_avg_12m"])
    f.put(("graph_guarantee_exposure",), _div(block[-1], 12.0 * revenue)[None, :])
