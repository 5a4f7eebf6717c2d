"""The fast engine gives the same bits as the plain formulas.

The features are fused into a few numpy passes (service/scoring/features.py); this file keeps the plain
formulas, one feature at a time and one field's window at a time, as the reference, and checks that the two agree
bit for bit on random data with gaps, zeros and edge cases (no record at all, withheld consent, records only
after the application). The engine decides a block of rows at once; deciding each row alone gives the same
result. LightGBM is called through its C function directly; ``Booster.predict`` gives the same numbers.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from service.runtime import DEFAULT_POLICY
from service.scoring.bundle import load_bundle
from service.scoring.catalog import BY_NAME, FEATURE_NAMES, GROUPS, MISSING_DATA, WINDOW_MONTHS
from service.scoring.engine import Engine, application_context
from service.scoring.explain import group_points, group_points_matrix
from service.scoring.features import TAX_GRADE_SCORE, build_features, gather_windows, monthly_revenue
from service.scoring.policy import load_policy
from service.scoring.raw import CONTRACT, INDUSTRIES, MONTHLY_SOURCES, PURPOSES, TAX_GRADES, RawData, month_index
from service.scoring.registry import Registry

W = WINDOW_MONTHS

# ---------------------------------------------------------------------------------------------------------
# The reference: each feature written out on its own (n, W) window, as the features were first written.


def ref_windows(data: RawData, allowed: set[str]) -> tuple[dict, dict, np.ndarray]:
    apps = data.applications
    n = len(apps["application_id"])
    asof = month_index(apps["application_date"])
    win, has = {}, {}
    used = np.zeros((n, len(MONTHLY_SOURCES)), dtype=bool)
    for j, source in enumerate(MONTHLY_SOURCES):
        table = data.monthly.get(source) if source in allowed else None
        win[source] = {f: np.full((n, W), np.nan) for f in CONTRACT[source].fields}
        has[source] = np.zeros((n, W), dtype=bool)
        if table is None:
            continue
        for i in range(n):  # one application at a time, one record at a time
            for r in range(len(table["month"])):
                k = int(table["month"][r]) - (int(asof[i]) - W)
                if table["enterprise_row"][r] == apps["enterprise_row"][i] and 0 <= k < W:
                    has[source][i, k] = True
                    for f in CONTRACT[source].fields:
                        v = table[f][r]
                        win[source][f][i, k] = TAX_GRADE_SCORE.get(v, np.nan) if f == "tax_grade" else float(v)
        used[:, j] = has[source].any(axis=1)
    return win, has, used


def _count(x):  # noqa: ANN001, ANN202
    return (~np.isnan(x)).sum(axis=1).astype(np.float64)


def _div(a, b):  # noqa: ANN001, ANN202
    out = np.full(np.broadcast(a, b).shape, np.nan)
    np.divide(a, b, out=out, where=(b != 0) & ~np.isnan(b) & ~np.isnan(a))
    return out


def _sum(x):  # noqa: ANN001, ANN202
    return np.where(_count(x) > 0, np.nansum(x, axis=1), np.nan)


def _mean(x):  # noqa: ANN001, ANN202
    return _div(np.nansum(x, axis=1), _count(x))


def _cv(x, min_months=2):  # noqa: ANN001, ANN202
    n, mean = _count(x), _mean(x)
    var = _div(np.nansum((x - mean[:, None]) ** 2, axis=1), n)
    return np.where((n >= min_months) & (mean > 0), _div(np.sqrt(var), mean), np.nan)


def _growth(recent, earlier):  # noqa: ANN001, ANN202
    return _div(_mean(recent), _mean(earlier)) - 1.0


def _trend(x, min_months=3):  # noqa: ANN001, ANN202
    ok = ~np.isnan(x)
    n = ok.sum(axis=1)
    t = np.broadcast_to(np.arange(x.shape[1], dtype=np.float64), x.shape)
    t_mean = _div(np.where(ok, t, 0.0).sum(axis=1), n.astype(np.float64))
    y_mean = _mean(x)
    dt = np.where(ok, t - t_mean[:, None], 0.0)
    dy = np.where(ok, x - y_mean[:, None], 0.0)
    slope = _div((dt * dy).sum(axis=1), (dt * dt).sum(axis=1))
    return np.where((n >= min_months) & (y_mean > 0), _div(slope, y_mean), np.nan)


def _last(x):  # noqa: ANN001, ANN202
    ok = ~np.isnan(x)
    idx = x.shape[1] - 1 - np.argmax(ok[:, ::-1], axis=1)
    return np.where(ok.any(axis=1), x[np.arange(x.shape[0]), idx], np.nan)


def _months(cond, present):  # noqa: ANN001, ANN202
    return (cond & present).sum(axis=1).astype(np.float64)


def _codes(values, categories):  # noqa: ANN001, ANN202
    return np.array([float(categories.index(v)) if v in categories else np.nan for v in values])


def ref_features(data: RawData, allowed_sources: list[str] | None = None) -> np.ndarray:
    allowed = set(MONTHLY_SOURCES if allowed_sources is None else allowed_sources)
    win, has, used = ref_windows(data, allowed)
    u = {s: used[:, j] for j, s in enumerate(MONTHLY_SOURCES)}
    p, t, e, s, b = (win[k] for k in MONTHLY_SOURCES[:0] + ("payments", "tax", "utilities", "social_insurance",
                                                             "bureau"))
    f: dict[str, np.ndarray] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        inflow, sales, kwh = p["inflow"], t["declared_sales"], e["electricity_kwh"]
        f["pay_inflow_avg_3m"] = _mean(inflow[:, -3:])
        f["pay_inflow_avg_12m"] = _mean(inflow[:, -12:])
        f["pay_inflow_growth_3m"] = _growth(inflow[:, -3:], inflow[:, -6:-3])
        f["pay_inflow_growth_yoy"] = _growth(inflow[:, -3:], inflow[:, -15:-12])
        f["pay_inflow_cv_3m"] = _cv(inflow[:, -3:])
        f["pay_inflow_cv_6m"] = _cv(inflow[:, -6:], 3)
        f["pay_inflow_cv_12m"] = _cv(inflow[:, -12:], 4)
        f["pay_min_to_avg_12m"] = np.where(_count(inflow[:, -12:]) >= 3,
                                           _div(np.fmin.reduce(inflow[:, -12:], axis=1), _mean(inflow[:, -12:])),
                                           np.nan)
        f["pay_net_margin_6m"] = _div(_sum(inflow[:, -6:] - p["outflow"][:, -6:]), _sum(inflow[:, -6:]))
        f["pay_txn_avg_3m"] = _mean(p["transactions"][:, -3:])
        f["pay_txn_trend_6m"] = _trend(p["transactions"][:, -6:])
        f["pay_counterparties_avg_3m"] = _mean(p["counterparties"][:, -3:])
        f["pay_refund_rate_6m"] = _div(_sum(p["refunds"][:, -6:]), _sum(inflow[:, -6:]))
        f["pay_months_12m"] = np.where(u["payments"], has["payments"][:, -12:].sum(axis=1).astype(float), np.nan)
        f["tax_sales_avg_12m"] = _mean(sales[:, -12:])
        f["tax_sales_growth_6m"] = _growth(sales[:, -6:], sales[:, -12:-6])
        f["tax_sales_cv_12m"] = _cv(sales[:, -12:], 4)
        on_time, present = t["filed_on_time"][:, -12:], has["tax"][:, -12:]
        f["tax_on_time_rate_12m"] = _mean(on_time)
        f["tax_late_filings_12m"] = np.where(u["tax"], _months(on_time == 0, present), np.nan)
        f["tax_filing_months_12m"] = np.where(u["tax"], present.sum(axis=1).astype(float), np.nan)
        f["tax_invoice_count_avg_3m"] = _mean(t["invoices_issued"][:, -3:])
        f["tax_invoice_trend_6m"] = _trend(t["invoices_issued"][:, -6:])
        f["tax_invoice_months_12m"] = np.where(u["tax"], _months(t["invoices_issued"][:, -12:] > 0, present), np.nan)
        f["tax_arrears_to_sales"] = _div(_last(t["tax_arrears"][:, -12:]), np.fmax(f["tax_sales_avg_12m"], 1000.0))
        f["tax_arrears_months_12m"] = np.where(u["tax"], _months(t["tax_arrears"][:, -12:] > 0, present), np.nan)
        f["tax_grade"] = _last(t["tax_grade"][:, -12:])
        f["tax_vat_rate_12m"] = _div(_sum(t["vat_paid"][:, -12:]), _sum(sales[:, -12:]))
        f["elec_kwh_avg_3m"] = _mean(kwh[:, -3:])
        f["elec_kwh_cv_12m"] = _cv(kwh[:, -12:], 4)
        f["elec_kwh_growth_3m"] = _growth(kwh[:, -3:], kwh[:, -6:-3])
        f["elec_kwh_growth_yoy"] = _growth(kwh[:, -3:], kwh[:, -15:-12])
        util12 = has["utilities"][:, -12:]
        f["elec_low_months_12m"] = np.where(u["utilities"], _months(kwh[:, -12:] < 0.5 * _mean(kwh[:, -12:])[:, None],
                                                                    util12), np.nan)
        f["util_days_late_avg_6m"] = _mean(e["days_paid_late"][:, -6:])
        f["util_arrears_months_12m"] = np.where(u["utilities"], _months(e["utility_arrears"][:, -12:] > 0, util12),
                                                np.nan)
        f["util_months_12m"] = np.where(u["utilities"], util12.sum(axis=1).astype(float), np.nan)
        heads, missed = s["insured_headcount"], s["missed_payment"]
        f["si_headcount_latest"] = _last(heads[:, -3:])
        f["si_headcount_change_6m"] = _growth(heads[:, -3:], heads[:, -9:-6])
        f["si_paid_rate_12m"] = 1.0 - _mean(missed[:, -12:])
        f["si_missed_months_12m"] = np.where(u["social_insurance"], (missed[:, -12:] == 1).sum(axis=1).astype(float),
                                             np.nan)
        f["si_paid_streak_months"] = np.where(u["social_insurance"],
                                              np.cumprod((missed == 0)[:, ::-1], axis=1).sum(axis=1).astype(float),
                                              np.nan)
        f["si_contribution_per_head_6m"] = _div(_sum(s["contributions_paid"][:, -6:]), _sum(heads[:, -6:]))
        f["bureau_open_loans"] = _last(b["open_loans"][:, -3:])
        f["bureau_inquiries_6m"] = _last(b["inquiries_6m"][:, -3:])
        f["bureau_worst_dpd_12m"] = np.fmax.reduce(b["worst_dpd"][:, -12:], axis=1)
        apps, prof = data.applications, data.profile
        revenue = monthly_revenue(f["pay_inflow_avg_12m"], f["tax_sales_avg_12m"])
        f["loan_to_revenue"] = _div(apps["requested_amount"], 12.0 * revenue)
        f["loan_term_months"] = apps["term_months"].astype(np.float64)
        f["loan_purpose"] = _codes(apps["purpose"], BY_NAME["loan_purpose"].categories)
        f["xsrc_declared_to_inflow_6m"] = _div(_mean(sales[:, -6:]), _mean(inflow[:, -6:]))
        f["xsrc_invoice_to_sales_12m"] = _div(_sum(t["invoice_amount"][:, -12:]), _sum(sales[:, -12:]))
        f["xsrc_elec_per_revenue_12m"] = _div(_mean(kwh[:, -12:]), revenue / 10_000.0)
        by_month = np.where(np.isnan(f["pay_inflow_avg_12m"])[:, None], sales, inflow)
        f["elec_intensity_change_12m"] = _div(_div(_sum(kwh[:, -6:]), _sum(by_month[:, -6:])),
                                              _div(_sum(kwh[:, -12:-6]), _sum(by_month[:, -12:-6]))) - 1.0
        f["xsrc_sources_available"] = used.sum(axis=1).astype(np.float64)
        rows = apps["enterprise_row"]
        age = (apps["application_date"] - prof["registration_date"][rows]).astype(np.float64)
        f["biz_age_months"] = np.floor(age / 30.4375)
        f["biz_employees"] = prof["employees"][rows].astype(np.float64)
        for feature, column in (("biz_industry", "industry"), ("biz_region", "region"),
                                ("biz_city_tier", "city_tier"), ("biz_legal_form", "legal_form")):
            f[feature] = _codes(prof[column][rows], BY_NAME[feature].categories)
    assert data.graph is None  # these data have no links: the graph's own reference is tests/test_graph_features.py
    for name in FEATURE_NAMES:
        if BY_NAME[name].source == "links" or name == "graph_guarantee_exposure":
            f[name] = np.full(len(data.applications["application_id"]), np.nan)
    assert set(f) == set(FEATURE_NAMES)
    return np.column_stack([f[name] for name in FEATURE_NAMES])


# ---------------------------------------------------------------------------------------------------------
# Random data: gaps, zeros, repeated enterprises, records before, inside and after each window.


def random_raw(rng: np.random.Generator, n_enterprises: int = 12, n_apps: int = 20, sparse: float = 0.4) -> RawData:
    profile = {
        "enterprise_id": np.array([f"E{k}" for k in range(n_enterprises)], dtype=object),
        "industry": rng.choice(list(INDUSTRIES), n_enterprises).astype(object),
        "region": rng.choice(["east", "central", "west", "northeast"], n_enterprises).astype(object),
        "city_tier": rng.choice(["tier1", "tier2", "tier3", "county"], n_enterprises).astype(object),
        "legal_form": rng.choice(["individual_business", "company"], n_enterprises).astype(object),
        "registration_date": np.datetime64("2015-01-01")
        + rng.integers(0, 2000, n_enterprises).astype("timedelta64[D]"),
        "employees": rng.integers(0, 200, n_enterprises).astype(np.int64),
    }
    dates = np.datetime64("2021-06-01") + rng.integers(0, 900, n_apps).astype("timedelta64[D]")
    applications = {
        "application_id": np.array([f"A{k}" for k in range(n_apps)], dtype=object),
        "enterprise_id": np.empty(n_apps, dtype=object),
        "enterprise_row": rng.integers(0, n_enterprises, n_apps).astype(np.int64),
        "application_date": dates.astype("datetime64[D]"),
        "requested_amount": rng.choice([1000.0, 50_000.0, 2e6], n_apps),
        "term_months": rng.integers(1, 60, n_apps).astype(np.int64),
        "purpose": rng.choice(list(PURPOSES), n_apps).astype(object),
    }
    applications["enterprise_id"] = profile["enterprise_id"][applications["enterprise_row"]]
    monthly = {}
    all_months = np.arange(month_index(np.array(["2019-01-01"], dtype="datetime64[D]"))[0],
                           month_index(np.array(["2024-12-01"], dtype="datetime64[D]"))[0])
    for source in MONTHLY_SOURCES:
        ent, mon = np.meshgrid(np.arange(n_enterprises), all_months, indexing="ij")
        keep = rng.random(ent.shape) > sparse
        keep[rng.random(n_enterprises) < 0.2] = False  # some enterprises never have this source
        table = {"enterprise_row": ent[keep].astype(np.int64), "month": mon[keep].astype(np.int64)}
        for column in CONTRACT[source].columns:
            if column.name in ("enterprise_id", "month"):
                continue
            size = int(keep.sum())
            if column.kind == "bool":
                table[column.name] = rng.random(size) < 0.8
            elif column.kind == "category":
                table[column.name] = rng.choice([*TAX_GRADES, None], size).astype(object)
            elif column.kind == "int":
                table[column.name] = np.where(rng.random(size) < 0.2, 0, rng.integers(0, 40, size)).astype(np.int64)
            else:
                table[column.name] = np.where(rng.random(size) < 0.1, 0.0, rng.lognormal(8, 2, size))
        monthly[source] = table
    return RawData(profile=profile, applications=applications, monthly=monthly)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


class TestFusedFeaturesEqualThePlainFormulas:
    @pytest.mark.parametrize("seed", range(6))
    def test_random_data_every_consent(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        raw = random_raw(rng, sparse=[0.0, 0.3, 0.6, 0.9, 0.97, 0.5][seed])
        for allowed in (None, [], ["tax"], ["payments", "utilities"], list(rng.permutation(MONTHLY_SOURCES)[:3])):
            fm = build_features(raw, allowed_sources=allowed)
            expected = ref_features(raw, allowed)
            bad = [name for j, name in enumerate(FEATURE_NAMES) if not same_bits(fm.values[:, j], expected[:, j])]
            assert not bad, f"seed {seed}, sources {allowed}: {bad}"

    def test_no_monthly_data_at_all_and_records_only_after_the_application(self) -> None:
        raw = random_raw(np.random.default_rng(9))
        empty = dataclasses.replace(raw, monthly={})
        assert same_bits(build_features(empty).values, ref_features(empty))
        assert not build_features(empty).sources_used.any()
        late = dataclasses.replace(raw, monthly={s: {k: v[t["month"] >= month_index(np.array(["2024-01-01"],
                                                  dtype="datetime64[D]"))[0]] for k, v in t.items()}
                                                 for s, t in raw.monthly.items()})
        assert same_bits(build_features(late).values, ref_features(late))

    def test_no_applications(self) -> None:
        raw = random_raw(np.random.default_rng(4))
        none = raw.select(np.array([], dtype=np.int64))
        fm = build_features(none)
        assert fm.values.shape == (0, len(FEATURE_NAMES)) and fm.sources_used.shape == (0, len(MONTHLY_SOURCES))

    def test_windows_keep_their_per_source_views(self) -> None:
        raw = random_raw(np.random.default_rng(5))
        w = gather_windows(raw, allowed_sources=["tax", "bureau"])
        win, has, used = ref_windows(raw, {"tax", "bureau"})
        assert same_bits(w.used, used)
        for source in MONTHLY_SOURCES:
            assert same_bits(w.present[source], has[source])
            for field, values in w.fields[source].items():
                assert same_bits(values, win[source][field]), (source, field)


class TestGroupSums:
    def test_group_sums_equal_a_python_loop_bit_for_bit(self) -> None:
        rng = np.random.default_rng(3)
        X = rng.normal(size=(300, len(FEATURE_NAMES)))
        X[rng.random(X.shape) < 0.3] = np.nan
        points = rng.normal(size=X.shape) * 10.0 ** rng.integers(-3, 3, size=X.shape)
        points[rng.random(X.shape) < 0.2] = -0.0
        matrix = group_points_matrix(FEATURE_NAMES, X, points)
        for i in range(len(X)):
            loop = dict.fromkeys(GROUPS, 0.0)
            for name, value, p in zip(FEATURE_NAMES, X[i], points[i], strict=True):
                loop[MISSING_DATA if math.isnan(value) else BY_NAME[name].group] += float(p)
            row = group_points(FEATURE_NAMES, X[i], points[i])
            assert [np.float64(v).tobytes() for v in row.values()] == [np.float64(v).tobytes() for v in loop.values()]
            assert all(np.float64(matrix[g][i]).tobytes() == np.float64(loop[g]).tobytes() for g in GROUPS)


# ---------------------------------------------------------------------------------------------------------
# The engine: a block of rows decided together equals each row decided alone; LightGBM's numbers unchanged.


@pytest.fixture(scope="module")
def engine(champion_registry: Path) -> Engine:
    return Engine(load_bundle(champion_registry / Registry(champion_registry).champion()))


def test_direct_prediction_equals_booster_predict(engine: Engine, small_raw: RawData) -> None:
    X = build_features(small_raw.select(np.arange(500))).values
    booster = engine.bundle.booster
    assert same_bits(engine.bundle.margin(X), booster.predict(X, raw_score=True, num_threads=1))
    assert same_bits(engine.bundle.contributions(X), booster.predict(X, pred_contrib=True, num_threads=1))
    assert same_bits(engine.bundle.contributions(np.asfortranarray(X[:7])),
                     booster.predict(X[:7], pred_contrib=True, num_threads=1))
    with pytest.raises(Exception, match="features"):
        engine.bundle.margin(X[:, :-1])


def test_a_block_decides_each_row_as_it_would_alone(engine: Engine, small_raw: RawData) -> None:
    policy = load_policy(DEFAULT_POLICY)
    rows = np.arange(0, len(small_raw.applications["application_id"]), 17)[:150]
    raw = small_raw.select(rows)
    together = engine.score(raw, policy)
    decisions = {s.outcome.decision for s in together}
    assert decisions == {"approve", "refer", "decline"}, decisions  # every branch is exercised
    for i, s in enumerate(together):
        alone = engine.score(raw.select(np.array([i])), policy)[0]
        assert repr(s) == repr(alone), i
        fm = build_features(raw.select(np.array([i])))
        replayed = engine.decide(fm.values[0], engine.bundle.contributions(fm.values)[0],
                                 application_context(raw, i), policy, s.sources_used)
        assert repr(replayed) == repr(s), i
