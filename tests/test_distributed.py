"""Dask: features and offline scoring on a real local cluster (worker processes) give exactly the single-process
results, in the applications file's order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from service.batch.chunks import build_all
from service.batch.distributed import features_distributed, score_distributed
from service.batch.score import score_folder
from service.cli import app as cli
from service.runtime import DEFAULT_POLICY
from service.scoring.policy import load_policy
from service.scoring.raw import RawData
from service.scoring.registry import Registry

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
