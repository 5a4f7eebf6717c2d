"""Dask: features, offline scoring and post-loan rescoring of a book on a real local cluster (worker processes)
give exactly the single-process results, in the applications file's (or the book's) order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from service.batch.chunks import build_all
from service.batch.distributed import features_distributed, score_book_distributed, score_distributed
from service.batch.score import score_folder
from service.cli import app as cli
from service.runtime import DEFAULT_POLICY
from service.scoring.policy import load_policy
from service.scoring.raw import RawData
from service.scoring.registry import Registry
from service.usecases.portfolio import BookScores, LossParameters, live_loans, score_book

runner = CliRunner()


@pytest.fixture(scope="module")
def cluster_address():  # noqa: ANN201
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def test_features_on_the_cluster_equal_the_local_ones(small_raw: RawData, cluster_address: str) -> None:
    local = build_all(small_raw)
    remote = features_distributed(small_raw, cluster_address, chunk=700)  # several pieces
    np.testing.assert_array_equal(remote.values, local.values)
    np.testing.assert_array_equal(remote.sources_used, local.sources_used)


def test_scoring_on_the_cluster_equals_the_local_one(small_raw: RawData, small_dir: Path, champion_registry: Path,
                                                     cluster_address: str) -> None:
    bundle = champion_registry / Registry(champion_registry).champion()
    policy = load_policy(DEFAULT_POLICY)
    local = score_folder(small_dir, bundle, policy)
    remote = score_distributed(small_raw, bundle, policy, cluster_address, chunk=700)
    assert remote.column_names == local.column_names
    assert remote.to_pylist() == local.to_pylist()


def test_the_cli_scores_on_a_cluster(small_dir: Path, champion_registry: Path, cluster_address: str,
                                     tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "scores.parquet"
    result = runner.invoke(cli, ["score", "--data", str(small_dir), "--out", str(out), "--registry",
                                 str(champion_registry), "--dask", cluster_address])
    assert result.exit_code == 0, result.output
    assert pq.read_table(out).num_rows == pq.read_table(small_dir / "applications.parquet").num_rows


@pytest.fixture(scope="module")
def bundle(champion_registry: Path) -> Path:
    return champion_registry / Registry(champion_registry).champion()


class TestBookOnTheCluster:
    """Early warning at scale: the book rescored piecewise on workers is the book rescored in one process."""

    @staticmethod
    def as_of(data: RawData) -> int:
        return int(np.max(data.book["as_of_month"])) + 1

    def test_rescoring_equals_the_single_process_one(self, small_raw: RawData, bundle: Path,
                                                      cluster_address: str) -> None:
        from service.monitoring.warning import assess
        from service.scoring.bundle import load_bundle
        from service.scoring.engine import Engine

        policy, loss, as_of = load_policy(DEFAULT_POLICY), LossParameters.shipped(), self.as_of(small_raw)
        # Live loans, reversed: results must follow the rows asked for, not the book's or the pieces' order.
        rows = live_loans(small_raw.book, as_of)[::-1].copy()
        assert len(np.unique(small_raw.book["enterprise_row"][rows])) > 300  # many enterprises, several pieces
        engine = Engine(load_bundle(bundle))
        local = score_book(data=small_raw, engine=engine, policy=policy, rows=rows, as_of_month=as_of, loss=loss)
        remote = score_book_distributed(data=small_raw, bundle_dir=bundle, policy=policy, rows=rows,
                                        as_of_month=as_of, loss=loss, address=cluster_address, chunk=150)
        assert isinstance(remote, BookScores) and remote.data is small_raw
        np.testing.assert_array_equal(remote.rows, local.rows)
        for name in ("features_now", "points_now", "pd_then", "grade_then", "pd_now", "grade_now", "exposure",
                     "lgd"):
            assert getattr(remote, name).dtype == getattr(local, name).dtype, name
            np.testing.assert_array_equal(getattr(remote, name), getattr(local, name), err_msg=name)
        np.testing.assert_array_equal(remote.signals.fired, local.signals.fired)
        assert remote.signals.indicators.keys() == local.signals.indicators.keys()
        for name, values in local.signals.indicators.items():
            np.testing.assert_array_equal(remote.signals.indicators[name], values, err_msg=name)
        # What an analyst sees: the same warnings, in the same order, with the same reasons.
        spec, grades = policy.spec.early_warning, policy.grades
        warned = assess(local.borrowers(), spec, grades)
        assert warned, "the fixture's book should raise some warnings"
        assert remote.explain(assess(remote.borrowers(), spec, grades), engine) == local.explain(warned, engine)

    def test_no_loans_gives_an_empty_result(self, small_raw: RawData, bundle: Path, cluster_address: str) -> None:
        remote = score_book_distributed(data=small_raw, bundle_dir=bundle, policy=load_policy(DEFAULT_POLICY),
                                        rows=np.array([], dtype=np.int64), as_of_month=self.as_of(small_raw),
                                        loss=LossParameters.shipped(), address=cluster_address)
        assert remote.pd_now.shape == (0,) and remote.borrowers() == []

    @pytest.mark.parametrize(("change", "message"), [
        ({"rows": np.array([0, 10**9])}, "rows must be a 1-D array of rows of the book"),
        ({"rows": np.array([-1])}, "rows must be a 1-D array of rows of the book"),
        ({"chunk": 0}, "chunk must be at least 1, got 0"),
        ({"bundle_dir": Path("/nonexistent")}, "/nonexistent is not a model bundle"),
        ({"no_book": True}, "the data has no loan book"),
    ])
    def test_bad_input_is_refused_before_any_work(self, small_raw: RawData, bundle: Path, change: dict,
                                                  message: str) -> None:
        data = small_raw
        if change.pop("no_book", False):
            data = RawData(profile=small_raw.profile, applications=small_raw.applications, monthly=small_raw.monthly)
        args = {"data": data, "bundle_dir": bundle, "policy": load_policy(DEFAULT_POLICY), "rows": np.array([0]),
                "as_of_month": self.as_of(small_raw), "loss": LossParameters.shipped(),
                "address": "tcp://127.0.0.1:1", **change}  # no scheduler there: validation must come first
        with pytest.raises(ValueError, match=message):
            score_book_distributed(**args)
