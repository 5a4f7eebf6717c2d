"""Point-in-time features: one code path for one applicant online and for a whole data folder in batch.

An application dated D sees only monthly records of *complete* months before D: the window is the
``WINDOW_MONTHS`` calendar months ending with the month before D's month. A record for D's own month (the
month is not over, its filing is not due) or any later month changes nothing. Every feature is a
vectorised numpy expression over ``(applications, months)`` arrays, so one applicant is simply n = 1.

A source that is absent, or not consented to, yields NaN for the features that read it, never zero:
LightGBM routes missing values explicitly, and the explanation never names a source that was not used.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from service.scoring.catalog import BY_NAME, FEATURE_NAMES, WINDOW_MONTHS
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
# Windows: long monthly records -> dense (applications, W) arrays, oldest month first, NaN where no record.


def monthly_window(table: Table, fields: Collection[str], enterprise_row: np.ndarray, asof_month: np.ndarray,
                   n_enterprises: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Gather each application's last W complete months before ``asof_month`` for ``fields``.

    Returns the field arrays and a ``present`` mask (a record exists for that month).
    """
    n = len(asof_month)
    if len(table["month"]) == 0 or n == 0:
        return {f: np.full((n, W), np.nan) for f in fields}, np.zeros((n, W), dtype=bool)
    # A dense (enterprise, month) grid makes the gather one fancy index per field.
    m0 = int(min(table["month"].min(), asof_month.min())) - W
    span = int(max(table["month"].max(), asof_month.max())) - m0 + 1
    cell = table["enterprise_row"] * span + (table["month"] - m0)
    gather = enterprise_row[:, None] * span + ((asof_month - m0)[:, None] - W + np.arange(W))
    grid = np.zeros(n_enterprises * span, dtype=bool)
    grid[cell] = True
    present = grid[gather]
    out = {}
    for name in fields:
        dense = np.full(n_enterprises * span, np.nan)
        dense[cell] = _numeric(name, table[name])
        out[name] = dense[gather]
    return out, present


def _numeric(field: str, values: np.ndarray) -> np.ndarray:
    if field == "tax_grade":
        return np.array([TAX_GRADE_SCORE.get(v, np.nan) for v in values], dtype=np.float64)
    return values.astype(np.float64)


# ---------------------------------------------------------------------------------------------------------
# Row-wise reductions that treat NaN as "no data" and never warn.


def _count(x: np.ndarray) -> np.ndarray:
    return (~np.isnan(x)).sum(axis=1).astype(np.float64)


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.full(np.broadcast(a, b).shape, np.nan)
    np.divide(a, b, out=out, where=(b != 0) & ~np.isnan(b) & ~np.isnan(a))
    return out


def _sum(x: np.ndarray) -> np.ndarray:
    """Sum of the values present; NaN when none is."""
    return np.where(_count(x) > 0, np.nansum(x, axis=1), np.nan)


def _mean(x: np.ndarray) -> np.ndarray:
    return _div(np.nansum(x, axis=1), _count(x))


def _cv(x: np.ndarray, min_months: int = 2) -> np.ndarray:
    """Coefficient of variation (population std / mean) over the months present."""
    n = _count(x)
    mean = _mean(x)
    var = _div(np.nansum((x - mean[:, None]) ** 2, axis=1), n)
    cv = _div(np.sqrt(var), mean)
    return np.where((n >= min_months) & (mean > 0), cv, np.nan)


def _growth(recent: np.ndarray, earlier: np.ndarray) -> np.ndarray:
    return _div(_mean(recent), _mean(earlier)) - 1.0


def _trend(x: np.ndarray, min_months: int = 3) -> np.ndarray:
    """Least-squares slope over the months present, as a share of the mean level per month."""
    ok = ~np.isnan(x)
    n = ok.sum(axis=1)
    t = np.broadcast_to(np.arange(x.shape[1], dtype=np.float64), x.shape)
    t_mean = _div(np.where(ok, t, 0.0).sum(axis=1), n.astype(np.float64))
    y_mean = _mean(x)
    dt = np.where(ok, t - t_mean[:, None], 0.0)
    dy = np.where(ok, x - y_mean[:, None], 0.0)
    slope = _div((dt * dy).sum(axis=1), (dt * dt).sum(axis=1))
    return np.where((n >= min_months) & (y_mean > 0), _div(slope, y_mean), np.nan)


def _last(x: np.ndarray) -> np.ndarray:
    """The most recent value present in each row."""
    ok = ~np.isnan(x)
    idx = x.shape[1] - 1 - np.argmax(ok[:, ::-1], axis=1)
    return np.where(ok.any(axis=1), x[np.arange(x.shape[0]), idx], np.nan)


def _months_where(cond: np.ndarray, present: np.ndarray) -> np.ndarray:
    return (cond & present).sum(axis=1).astype(np.float64)


@functools.cache
def _category_index(categories: tuple[str, ...]) -> dict[str, float]:
    return {c: float(i) for i, c in enumerate(categories)}


def _codes(values: np.ndarray, categories: tuple[str, ...]) -> np.ndarray:
    index = _category_index(categories)
    return np.array([index.get(v, np.nan) for v in values], dtype=np.float64)


# ---------------------------------------------------------------------------------------------------------
# The features.


@dataclass(frozen=True)
class Windows:
    """Each application's last W complete months per source: the one point-in-time view that features (and the
    post-loan signals in signals.py) are computed from."""

    fields: dict[str, dict[str, np.ndarray]]  # source -> field -> (n, W), oldest month first, NaN = no record
    present: dict[str, np.ndarray]  # source -> (n, W) a record exists (False everywhere for an unused source)
    used: np.ndarray  # (n, len(MONTHLY_SOURCES)) the source had records in the window and was allowed


def gather_windows(data: RawData, *, allowed_sources: Collection[str] | None = None) -> Windows:
    """The windows of every application of ``data`` as of its application date, for the allowed sources."""
    apps = data.applications
    n = len(apps["application_id"])
    asof = month_index(apps["application_date"])
    allowed = set(MONTHLY_SOURCES if allowed_sources is None else allowed_sources)
    win: dict[str, dict[str, np.ndarray]] = {}
    has: dict[str, np.ndarray] = {}  # (n, W) record present
    used = np.zeros((n, len(MONTHLY_SOURCES)), dtype=bool)
    for j, source in enumerate(MONTHLY_SOURCES):
        fields = CONTRACT[source].fields
        table = data.monthly.get(source)
        if table is None or source not in allowed:
            table = {"month": np.empty(0, np.int64), "enterprise_row": np.empty(0, np.int64)}
        win[source], has[source] = monthly_window(table, fields, apps["enterprise_row"], asof, data.n_enterprises)
        used[:, j] = has[source].any(axis=1)
        # An applicant without any record of a source in the window has no data from it: every field is NaN,
        # so counts such as "months with a filing" come out missing rather than zero.
        for arr in win[source].values():
            arr[~used[:, j]] = np.nan
        has[source] = np.where(used[:, j][:, None], has[source], False)
    return Windows(win, has, used)


def build_features(data: RawData, *, allowed_sources: Collection[str] | None = None,
                   windows: Windows | None = None) -> FeatureMatrix:
    """Compute every catalogue feature for every application in ``data`` as of its application date.

    ``allowed_sources`` limits the monthly sources that may be read (the applicant's consent); None allows all.
    ``windows`` (from ``gather_windows`` with the same sources) avoids gathering them twice.
    """
    apps = data.applications
    n = len(apps["application_id"])
    w = windows if windows is not None else gather_windows(data, allowed_sources=allowed_sources)
    win, has, used = w.fields, w.present, w.used

    f: dict[str, np.ndarray] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        _payments(f, win["payments"], has["payments"], used[:, MONTHLY_SOURCES.index("payments")])
        _tax(f, win["tax"], has["tax"], used[:, MONTHLY_SOURCES.index("tax")])
        _utilities(f, win["utilities"], has["utilities"], used[:, MONTHLY_SOURCES.index("utilities")])
        _social_insurance(f, win["social_insurance"], used[:, MONTHLY_SOURCES.index("social_insurance")])
        _bureau(f, win["bureau"])
        _cross_source(f, win, apps, used)
        _profile(f, data)

    values = np.column_stack([f[name] for name in FEATURE_NAMES]) if n else np.empty((0, len(FEATURE_NAMES)))
    return FeatureMatrix(application_id=apps["application_id"], values=values, sources_used=used)


def _where_used(used: np.ndarray, values: np.ndarray) -> np.ndarray:
    return np.where(used, values, np.nan)


def _payments(f: dict, p: dict[str, np.ndarray], present: np.ndarray, used: np.ndarray) -> None:
    inflow = p["inflow"]
    f["pay_inflow_avg_3m"] = _mean(inflow[:, -3:])
    f["pay_inflow_avg_12m"] = _mean(inflow[:, -12:])
    f["pay_inflow_growth_3m"] = _growth(inflow[:, -3:], inflow[:, -6:-3])
    f["pay_inflow_growth_yoy"] = _growth(inflow[:, -3:], inflow[:, -15:-12])
    f["pay_inflow_cv_3m"] = _cv(inflow[:, -3:])
    f["pay_inflow_cv_6m"] = _cv(inflow[:, -6:], min_months=3)
    f["pay_inflow_cv_12m"] = _cv(inflow[:, -12:], min_months=4)
    last12 = inflow[:, -12:]
    f["pay_min_to_avg_12m"] = np.where(_count(last12) >= 3, _div(np.fmin.reduce(last12, axis=1), _mean(last12)),
                                       np.nan)
    f["pay_net_margin_6m"] = _div(_sum(inflow[:, -6:] - p["outflow"][:, -6:]), _sum(inflow[:, -6:]))
    f["pay_txn_avg_3m"] = _mean(p["transactions"][:, -3:])
    f["pay_txn_trend_6m"] = _trend(p["transactions"][:, -6:])
    f["pay_counterparties_avg_3m"] = _mean(p["counterparties"][:, -3:])
    f["pay_refund_rate_6m"] = _div(_sum(p["refunds"][:, -6:]), _sum(inflow[:, -6:]))
    f["pay_months_12m"] = _where_used(used, present[:, -12:].sum(axis=1).astype(np.float64))


def _tax(f: dict, t: dict[str, np.ndarray], present: np.ndarray, used: np.ndarray) -> None:
    sales = t["declared_sales"]
    f["tax_sales_avg_12m"] = _mean(sales[:, -12:])
    f["tax_sales_growth_6m"] = _growth(sales[:, -6:], sales[:, -12:-6])
    f["tax_sales_cv_12m"] = _cv(sales[:, -12:], min_months=4)
    on_time = t["filed_on_time"][:, -12:]
    f["tax_on_time_rate_12m"] = _mean(on_time)
    f["tax_late_filings_12m"] = _where_used(used, _months_where(on_time == 0, present[:, -12:]))
    f["tax_filing_months_12m"] = _where_used(used, present[:, -12:].sum(axis=1).astype(np.float64))
    invoices = t["invoices_issued"]
    f["tax_invoice_count_avg_3m"] = _mean(invoices[:, -3:])
    f["tax_invoice_trend_6m"] = _trend(invoices[:, -6:])
    f["tax_invoice_months_12m"] = _where_used(used, _months_where(invoices[:, -12:] > 0, present[:, -12:]))
    # Arrears against a floor of 1,000 CNY of monthly sales, so arrears with no sales still read as large.
    f["tax_arrears_to_sales"] = _div(_last(t["tax_arrears"][:, -12:]),
                                     np.fmax(f["tax_sales_avg_12m"], 1000.0))
    f["tax_arrears_months_12m"] = _where_used(used, _months_where(t["tax_arrears"][:, -12:] > 0, present[:, -12:]))
    f["tax_grade"] = _last(t["tax_grade"][:, -12:])
    f["tax_vat_rate_12m"] = _div(_sum(t["vat_paid"][:, -12:]), _sum(sales[:, -12:]))


def _utilities(f: dict, u: dict[str, np.ndarray], present: np.ndarray, used: np.ndarray) -> None:
    kwh = u["electricity_kwh"]
    f["elec_kwh_avg_3m"] = _mean(kwh[:, -3:])
    f["elec_kwh_cv_12m"] = _cv(kwh[:, -12:], min_months=4)
    f["elec_kwh_growth_3m"] = _growth(kwh[:, -3:], kwh[:, -6:-3])
    f["elec_kwh_growth_yoy"] = _growth(kwh[:, -3:], kwh[:, -15:-12])
    avg12 = _mean(kwh[:, -12:])
    f["elec_low_months_12m"] = _where_used(used, _months_where(kwh[:, -12:] < 0.5 * avg12[:, None], present[:, -12:]))
    f["util_days_late_avg_6m"] = _mean(u["days_paid_late"][:, -6:])
    f["util_arrears_months_12m"] = _where_used(
        used, _months_where(u["utility_arrears"][:, -12:] > 0, present[:, -12:]))
    f["util_months_12m"] = _where_used(used, present[:, -12:].sum(axis=1).astype(np.float64))


def _social_insurance(f: dict, s: dict[str, np.ndarray], used: np.ndarray) -> None:
    heads = s["insured_headcount"]
    missed = s["missed_payment"]
    f["si_headcount_latest"] = _last(heads[:, -3:])
    f["si_headcount_change_6m"] = _growth(heads[:, -3:], heads[:, -9:-6])
    f["si_paid_rate_12m"] = 1.0 - _mean(missed[:, -12:])
    f["si_missed_months_12m"] = _where_used(used, (missed[:, -12:] == 1).sum(axis=1).astype(np.float64))
    paid = missed == 0  # NaN (no record) breaks a streak, as a missed month does
    f["si_paid_streak_months"] = _where_used(used, np.cumprod(paid[:, ::-1], axis=1).sum(axis=1).astype(np.float64))
    f["si_contribution_per_head_6m"] = _div(_sum(s["contributions_paid"][:, -6:]), _sum(heads[:, -6:]))


def _bureau(f: dict, b: dict[str, np.ndarray]) -> None:
    f["bureau_open_loans"] = _last(b["open_loans"][:, -3:])
    f["bureau_inquiries_6m"] = _last(b["inquiries_6m"][:, -3:])
    f["bureau_worst_dpd_12m"] = np.fmax.reduce(b["worst_dpd"][:, -12:], axis=1)


def monthly_revenue(pay_inflow_avg_12m: np.ndarray, tax_sales_avg_12m: np.ndarray) -> np.ndarray:
    """Revenue: payment inflow where the applicant shared it, declared sales otherwise (NaN when neither).
    The features and the lender policy's limit both use this one rule."""
    return np.where(np.isnan(pay_inflow_avg_12m), tax_sales_avg_12m, pay_inflow_avg_12m)


def _cross_source(f: dict, win: dict[str, dict[str, np.ndarray]], apps: Table, used: np.ndarray) -> None:
    revenue = monthly_revenue(f["pay_inflow_avg_12m"], f["tax_sales_avg_12m"])
    inflow, sales, kwh = win["payments"]["inflow"], win["tax"]["declared_sales"], win["utilities"]["electricity_kwh"]
    f["loan_to_revenue"] = _div(apps["requested_amount"], 12.0 * revenue)
    f["loan_term_months"] = apps["term_months"].astype(np.float64)
    f["loan_purpose"] = _codes(apps["purpose"], BY_NAME["loan_purpose"].categories)
    f["xsrc_declared_to_inflow_6m"] = _div(_mean(sales[:, -6:]), _mean(inflow[:, -6:]))
    f["xsrc_invoice_to_sales_12m"] = _div(_sum(win["tax"]["invoice_amount"][:, -12:]), _sum(sales[:, -12:]))
    f["xsrc_elec_per_revenue_12m"] = _div(_mean(kwh[:, -12:]), revenue / 10_000.0)
    # The same rule as monthly_revenue, month by month: the applicant's inflows if shared, else declared sales.
    by_month = np.where(np.isnan(f["pay_inflow_avg_12m"])[:, None], sales, inflow)
    f["elec_intensity_change_12m"] = _div(_div(_sum(kwh[:, -6:]), _sum(by_month[:, -6:])),
                                          _div(_sum(kwh[:, -12:-6]), _sum(by_month[:, -12:-6]))) - 1.0
    f["xsrc_sources_available"] = used.sum(axis=1).astype(np.float64)


def _profile(f: dict, data: RawData) -> None:
    apps, prof = data.applications, data.profile
    rows = apps["enterprise_row"]
    age_days = (apps["application_date"] - prof["registration_date"][rows]).astype(np.float64)
    f["biz_age_months"] = np.floor(age_days / DAYS_PER_MONTH)
    f["biz_employees"] = prof["employees"][rows].astype(np.float64)
    for feature, column in (("biz_industry", "industry"), ("biz_region", "region"), ("biz_city_tier", "city_tier"),
                            ("biz_legal_form", "legal_form")):
        f[feature] = _codes(prof[column][rows], BY_NAME[feature].categories)
