"""The command line as a user runs it: synth, then features; bad input exits 2 with a message and no output."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from service.cli import app
from service.scoring.catalog import FEATURE_NAMES
from tests.conftest import to_csv
from tests.test_contract import edit_csv

runner = CliRunner()


def test_synth_then_features(tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "features.parquet"
    result = runner.invoke(app, ["synth", "--entities", "500", "--months", "24", "--seed", "5", "--out", str(data)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in data.iterdir()) == sorted(
        f"{s}.parquet" for s in ("profile", "tax", "payments", "utilities", "social_insurance", "bureau",
                                 "applications", "loans"))
    result = runner.invoke(app, ["features", "--data", str(data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    apps = pq.read_table(data / "applications.parquet")
    assert table.num_rows == apps.num_rows
    assert table.column("application_id").to_pylist() == apps.column("application_id").to_pylist()
    assert set(FEATURE_NAMES) <= set(table.column_names)
    assert table.column("defaulted_12m").to_pylist() == apps.column("defaulted_12m").to_pylist()


def test_features_to_csv(tmp_path: Path, tiny_dir: Path) -> None:
    out = tmp_path / "f.csv"
    result = runner.invoke(app, ["features", "--data", str(tiny_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text().splitlines()[0].startswith('"application_id"')


def test_a_bad_file_names_the_problem_and_writes_nothing(tmp_path: Path, tiny_dir: Path) -> None:
    data = to_csv(tiny_dir, tmp_path / "csv")
    edit_csv(data, "payments", 4, "inflow", "-1")
    out = tmp_path / "f.parquet"
    result = runner.invoke(app, ["features", "--data", str(data), "--out", str(out)])
    assert result.exit_code == 2
    assert "payments.csv, row 4, column 'inflow': must be >= 0" in " ".join(result.output.split())
    assert not out.exists()
    assert list(tmp_path.glob(".f.parquet*")) == []


def test_bad_arguments(tmp_path: Path) -> None:
    result = runner.invoke(app, ["synth", "--entities", "0", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--entities" in result.output
    result = runner.invoke(app, ["synth", "--end-month", "2025/10", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--end-month must be YYYY-MM" in " ".join(result.output.split())
    result = runner.invoke(app, ["features", "--data", str(tmp_path), "--out", str(tmp_path / "f.txt")])
    assert result.exit_code == 2 and "--out must end in .parquet or .csv" in " ".join(result.output.split())
    result = runner.invoke(app, ["features", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "f.csv")])
    assert result.exit_code == 2 and "data folder does not exist" in " ".join(result.output.split())


@pytest.mark.parametrize("command", [["synth", "--out", "x"], ["train", "--data", "x"]])
def test_training_commands_name_the_missing_extra(command: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The serving image leaves out training/ and its packages: a clear exit 2, not a ModuleNotFoundError."""
    import sys

    monkeypatch.setitem(sys.modules, "training.pipeline", None)  # as if it could not be imported
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output
    assert "needs the training code and the 'train' extra" in " ".join(result.output.split())
