"""Point-in-time features: hand-checked values, no look-ahead, train/serve parity, missing and withheld sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.batch.chunks import build_all
from service.scoring.catalog import FEATURE_NAMES, features_of_source
from service.scoring.features import build_features
from service.scoring.raw import MONTHLY_SOURCES, RawData, load_folder, month_index
from tests.factories import make_application, make_payment, make_social, make_tax, months, write_folder


def one(folder: Path) -> dict[str, float]:
    fm = build_features(load_folder(folder))
    assert fm.values.shape == (1, len(FEATURE_NAMES))
    return dict(zip(FEATURE_NAMES, fm.values[0], strict=True))


class TestHandComputedValues:
    def test_cash_flow_level_growth_and_volatility(self, tmp_path: Path) -> None:
        # Jan..Jun 2024 inflows 100..600; applying on 10 July sees Apr-Jun = 400, 500, 600.
        pay = [make_payment(m, 100.0 * (i + 1)) for i, m in enumerate(months("2024-01", 6))]
        f = one(write_folder(tmp_path, payments=pay))
        assert f["pay_inflow_avg_3m"] == pytest.approx(500.0)
        assert f["pay_inflow_growth_3m"] == pytest.approx(500 / 200 - 1)
        assert f["pay_inflow_cv_3m"] == pytest.approx(np.std([400, 500, 600]) / 500)
        assert f["pay_months_12m"] == 6
        assert f["pay_min_to_avg_12m"] == pytest.approx(100 / 350)
        assert f["pay_net_margin_6m"] == pytest.approx(0.1)
        assert f["loan_to_revenue"] == pytest.approx(200_000 / (12 * 350))
        assert np.isnan(f["pay_inflow_growth_yoy"])  # no data a year earlier: missing, not zero

    def test_the_application_month_is_not_yet_visible(self, tmp_path: Path) -> None:
        pay = [make_payment(m, 100.0) for m in months("2024-01", 6)]
        before = one(write_folder(tmp_path / "a", payments=pay))
        # Records for July (the application's own month, not yet complete) and later change nothing.
        later = pay + [make_payment(m, 9e6, refunds=5e5) for m in months("2024-07", 3)]
        after = one(write_folder(tmp_path / "b", payments=later))
        np.testing.assert_array_equal(np.array(list(before.values())), np.array(list(after.values())))

    def test_social_insurance_streak_and_missed_months(self, tmp_path: Path) -> None:
        pattern = [False] * 6 + [True, False, True, False, False, False]  # oldest first, Jul 2023 - Jun 2024
        si = [make_social(m, missed) for m, missed in zip(months("2023-07", 12), pattern, strict=True)]
        f = one(write_folder(tmp_path, social_insurance=si))
        assert f["si_paid_streak_months"] == 3
        assert f["si_missed_months_12m"] == 2
        assert f["si_paid_rate_12m"] == pytest.approx(10 / 12)

    def test_tax_compliance(self, tmp_path: Path) -> None:
        rows = [make_tax(m, 1000.0) for m in months("2023-07", 12)]
        rows[-1] = make_tax(rows[-1]["month"], 1000.0, filed_on_time="false", tax_arrears=500, tax_grade="C")
        rows[-4] = make_tax(rows[-4]["month"], 1000.0, invoices_issued=0)
        f = one(write_folder(tmp_path, tax=rows))
        assert f["tax_late_filings_12m"] == 1
        assert f["tax_on_time_rate_12m"] == pytest.approx(11 / 12)
        assert f["tax_arrears_to_sales"] == pytest.approx(500 / 1000)
        assert f["tax_arrears_months_12m"] == 1
        assert f["tax_grade"] == 1.0  # C, on the A=4 ... D=0 scale
        assert f["tax_invoice_months_12m"] == 11
        assert f["tax_vat_rate_12m"] == pytest.approx(0.03)

    def test_a_missing_source_is_missing_not_zero(self, tmp_path: Path) -> None:
        pay = [make_payment(m, 100.0) for m in months("2024-01", 6)]
        fm = build_features(load_folder(write_folder(tmp_path, payments=pay)))
        f = dict(zip(FEATURE_NAMES, fm.values[0], strict=True))
        for name in features_of_source("social_insurance") + features_of_source("utilities"):
            assert np.isnan(f[name]), name
        assert f["xsrc_sources_available"] == 1
        assert fm.sources_used[0].tolist() == [s == "payments" for s in MONTHLY_SOURCES]

    def test_business_age_and_profile_codes(self, tmp_path: Path) -> None:
        f = one(write_folder(tmp_path, applications=[make_application(application_date="2024-03-10")]))
        assert f["biz_age_months"] == 60  # registered 2019-03-10
        assert f["biz_employees"] == 8
        assert f["biz_region"] == 0  # "east" is the first region


def earliest_application_per_enterprise(data: RawData) -> np.ndarray:
    ent = data.applications["enterprise_row"]
    order = np.lexsort((data.applications["application_date"], ent))
    first = np.r_[True, ent[order][1:] != ent[order][:-1]]
    return order[first]


def perturb_from(data: RawData, cutoff_month: np.ndarray, factor: float) -> RawData:
    """A copy of ``data`` whose monthly values from each enterprise's ``cutoff_month`` on are scaled."""
    monthly = {}
    for name, t in data.monthly.items():
        late = t["month"] >= cutoff_month[t["enterprise_row"]]
        monthly[name] = dict(t)
        for col, values in t.items():
            if values.dtype == np.float64 and col != "month":
                monthly[name][col] = np.where(late, values * factor + 1, values)
    return RawData(profile=data.profile, applications=data.applications, monthly=monthly, links=data.links,
                   graph=data.graph)  # the graph's own point in time: tests/test_graph_features.py


class TestPointInTime:
    def test_records_on_or_after_the_application_date_change_nothing(self, small_raw: RawData) -> None:
        rows = earliest_application_per_enterprise(small_raw)
        cutoff = np.full(small_raw.n_enterprises, np.iinfo(np.int64).max)
        cutoff[small_raw.applications["enterprise_row"][rows]] = month_index(
            small_raw.applications["application_date"][rows])
        before = build_features(small_raw).values[rows]
        after = build_features(perturb_from(small_raw, cutoff, 3.0)).values[rows]
        np.testing.assert_array_equal(before, after)

    def test_the_month_before_the_application_does_count(self, small_raw: RawData) -> None:
        # The same perturbation one month earlier must move features: the test above can fail.
        rows = earliest_application_per_enterprise(small_raw)
        cutoff = np.full(small_raw.n_enterprises, np.iinfo(np.int64).max)
        cutoff[small_raw.applications["enterprise_row"][rows]] = month_index(
            small_raw.applications["application_date"][rows]) - 1
        before = build_features(small_raw).values[rows]
        after = build_features(perturb_from(small_raw, cutoff, 3.0)).values[rows]
        changed = ~((before == after) | (np.isnan(before) & np.isnan(after))).all(axis=1)
        assert changed.mean() > 0.9


class TestParity:
    def test_one_applicant_alone_gives_exactly_the_batch_row(self, small_raw: RawData) -> None:
        batch = build_features(small_raw)
        rng = np.random.default_rng(0)
        for i in rng.choice(len(batch.application_id), size=60, replace=False):
            alone = build_features(small_raw.select(np.array([i])))
            assert alone.application_id[0] == batch.application_id[i]
            np.testing.assert_array_equal(alone.values[0], batch.values[i], err_msg=str(batch.application_id[i]))
            np.testing.assert_array_equal(alone.sources_used[0], batch.sources_used[i])

    def test_chunked_batch_equals_whole_batch(self, small_raw: RawData) -> None:
        whole = build_features(small_raw)
        chunked = build_all(small_raw, max_applications=500)
        np.testing.assert_array_equal(whole.values, chunked.values)
        np.testing.assert_array_equal(whole.sources_used, chunked.sources_used)


class TestConsentAndProtectedFields:
    def test_a_withheld_source_is_never_read(self, small_raw: RawData) -> None:
        allowed = [s for s in (*MONTHLY_SOURCES, "links") if s != "payments"]
        full = build_features(small_raw)
        limited = build_features(small_raw, allowed_sources=allowed)
        revenue_fallback = {"loan_to_revenue", "elec_intensity_change_12m", "xsrc_elec_per_revenue_12m",
                            "graph_guarantee_exposure"}
        for name in set(features_of_source("payments")) - revenue_fallback:  # these use declared sales instead
            assert np.isnan(limited.column(name)).all(), name
        assert not limited.sources_used[:, MONTHLY_SOURCES.index("payments")].any()
        untouched = [n for n in FEATURE_NAMES if n not in features_of_source("payments")
                     and n != "xsrc_sources_available"]
        for name in untouched:
            np.testing.assert_array_equal(limited.column(name), full.column(name), err_msg=name)

    def test_owner_age_and_gender_never_reach_features(self, small_raw: RawData) -> None:
        profile = dict(small_raw.profile)
        rng = np.random.default_rng(1)
        profile["owner_age"] = rng.permutation(profile["owner_age"])
        profile["owner_gender"] = np.where(profile["owner_gender"] == "female", "male", "female").astype(object)
        swapped = RawData(profile=profile, applications=small_raw.applications, monthly=small_raw.monthly,
                          links=small_raw.links, graph=small_raw.graph)
        np.testing.assert_array_equal(build_features(swapped).values, build_features(small_raw).values)

    def test_missing_sources_match_the_data(self, small_raw: RawData) -> None:
        fm = build_features(small_raw)
        assert np.isfinite(fm.values[~np.isnan(fm.values)]).all()
        thin = ~fm.sources_used[:, MONTHLY_SOURCES.index("social_insurance")]
        assert 0.2 < thin.mean() < 0.8
        assert np.isnan(fm.column("si_paid_rate_12m")[thin]).all()
        assert not np.isnan(fm.column("si_paid_streak_months")[~thin]).any()
