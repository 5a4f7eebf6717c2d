"""The synthetic generator: reproducible, realistic in the ways the issue names, and not trivially separable."""

from __future__ import annotations

import hashlib
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from service.scoring.catalog import FEATURE_NAMES, categorical_features, monotone_constraints
from service.scoring.features import build_features
from service.scoring.raw import RawData, load_folder
from tests.conftest import make_synth
from training.synth import GROUND_TRUTH_FILE, SynthConfig, write


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


@pytest.fixture(scope="module")
def mid(mid_dir: Path) -> RawData:
    return load_folder(mid_dir)


def monthly_mean_by_calendar_month(data: RawData, industry: str) -> np.ndarray:
    pay = data.monthly["payments"]
    rows = data.profile["industry"][pay["enterprise_row"]] == industry
    moy = pay["month"][rows] % 12
    # normalise each firm by its own mean so that big firms do not dominate
    ent = pay["enterprise_row"][rows]
    firm_mean = np.bincount(ent, pay["inflow"][rows]) / np.maximum(np.bincount(ent), 1)
    rel = pay["inflow"][rows] / np.maximum(firm_mean[ent], 1)
    return np.array([rel[moy == m].mean() for m in range(12)])


class TestReproducible:
    def test_same_arguments_give_the_same_bytes(self, tmp_path: Path) -> None:
        a = make_synth(tmp_path / "a", entities=400, months=24, seed=3)
        b = make_synth(tmp_path / "b", entities=400, months=24, seed=3)
        assert digests(a) == digests(b)
        c = make_synth(tmp_path / "c", entities=400, months=24, seed=4)
        assert digests(c)["payments.parquet"] != digests(a)["payments.parquet"]

    def test_streams_in_chunks_that_load_as_one_folder(self, tmp_path: Path) -> None:
        write(SynthConfig(entities=1200, months=24, seed=1, chunk=500), tmp_path / "chunked")
        assert pq.ParquetFile(tmp_path / "chunked" / "tax.parquet").num_row_groups == 3
        data = load_folder(tmp_path / "chunked")
        assert data.n_enterprises == 1200
        assert len(set(data.profile["enterprise_id"])) == 1200
        assert pq.ParquetFile(tmp_path / "chunked" / "loans.parquet").num_row_groups == 3  # the book streams too
        assert data.book is not None and len(data.book["loan_id"]) > 300

    def test_a_failed_run_leaves_the_previous_folder_intact(self, tmp_path: Path) -> None:
        out = make_synth(tmp_path / "keep", entities=100, months=24)
        before = digests(out)
        with pytest.raises(ValueError):
            write(SynthConfig(entities=100, months=24, end_month="not-a-month"), out)
        assert digests(out) == before


class TestRealism:
    def test_default_rate_is_in_range(self, mid: RawData) -> None:
        assert 0.02 <= mid.applications["defaulted_12m"].mean() <= 0.06

    def test_default_rate_differs_by_segment(self, mid_dir: Path, mid: RawData) -> None:
        # Among honest firms: the planted fraud rings bust out wherever they are planted (most firms, and so most
        # rings, are in the east), which says nothing about the segments' credit risk.
        ring = pq.read_table(mid_dir / GROUND_TRUTH_FILE).column("enterprise_id").to_numpy(zero_copy_only=False)
        ent = mid.applications["enterprise_row"]
        honest = ~np.isin(mid.profile["enterprise_id"][ent], ring)
        y = mid.applications["defaulted_12m"][honest]
        region = mid.profile["region"][ent][honest]
        form = mid.profile["legal_form"][ent][honest]
        assert y[region == "west"].mean() > 1.15 * y[region == "east"].mean()
        assert y[form == "individual_business"].mean() > 1.1 * y[form == "company"].mean()

    def test_farming_peaks_at_harvest_and_retail_at_festivals(self, mid: RawData) -> None:
        farm = monthly_mean_by_calendar_month(mid, "A")
        assert farm[[8, 9]].mean() > 2.0 * farm[[2, 3]].mean()  # Sep-Oct vs Mar-Apr
        retail = monthly_mean_by_calendar_month(mid, "F")
        assert retail[[0, 10]].mean() > 1.25 * retail[[2, 3]].mean()  # Jan and Nov vs Mar-Apr
        build = monthly_mean_by_calendar_month(mid, "E")
        assert build[1] < 0.6 * build[[9, 10, 11]].mean()  # the Spring Festival stop

    def test_western_files_are_thinner(self, mid: RawData) -> None:
        region = mid.profile["region"]
        for source in ("payments", "social_insurance"):
            has = np.zeros(mid.n_enterprises, dtype=bool)
            has[mid.monthly[source]["enterprise_row"]] = True
            assert has[region == "west"].mean() < has[region == "east"].mean() - 0.2, source

    def test_a_segment_declares_far_more_than_its_flows_show(self, mid: RawData) -> None:
        fm = build_features(mid)
        ratio = fm.column("xsrc_declared_to_inflow_6m")
        y = mid.applications["defaulted_12m"]
        inflated = ratio > 2.5
        assert 0.01 < np.mean(inflated[~np.isnan(ratio)]) < 0.15
        assert y[inflated].mean() > 1.5 * y[~inflated & ~np.isnan(ratio)].mean()

    def test_shocks_hit_some_firms(self, mid: RawData) -> None:
        fm = build_features(mid)
        drop = fm.column("pay_inflow_growth_3m")
        share = np.mean(drop[~np.isnan(drop)] < -0.5)
        assert 0.005 < share < 0.10

    def test_not_trivially_separable_out_of_time(self, mid: RawData) -> None:
        fm = build_features(mid)
        y = mid.applications["defaulted_12m"]
        dates = mid.applications["application_date"]
        cut_valid, cut_test = np.quantile(dates.astype(np.int64), [0.6, 0.8]).astype(np.int64)
        d = dates.astype(np.int64)
        train, valid, test = d < cut_valid, (d >= cut_valid) & (d < cut_test), d >= cut_test
        params = {"objective": "binary", "learning_rate": 0.05, "num_leaves": 15, "min_data_in_leaf": 50,
                  "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1, "lambda_l2": 1.0,
                  "monotone_constraints": monotone_constraints(), "verbose": -1, "seed": 1, "num_threads": 2,
                  "deterministic": True, "force_row_wise": True}
        cats = [FEATURE_NAMES.index(c) for c in categorical_features()]

        def ds(mask: np.ndarray) -> lgb.Dataset:
            return lgb.Dataset(fm.values[mask], y[mask], feature_name=list(FEATURE_NAMES),
                               categorical_feature=cats, free_raw_data=False)

        model = lgb.train(params, ds(train), 600, valid_sets=[ds(valid)],
                          callbacks=[lgb.early_stopping(50, verbose=False)])
        auc = roc_auc_score(y[test], model.predict(fm.values[test]))
        assert 0.75 <= auc <= 0.90, auc
