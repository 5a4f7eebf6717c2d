"""The command line as a user runs it: synth, then features; bad input exits 2 with a message and no output."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from service.cli import app
from service.scoring.catalog import FEATURE_NAMES
from tests.conftest import to_csv
from tests.test_contract import edit_csv, rewrite

runner = CliRunner()


def test_synth_then_features(tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "features.parquet"
    result = runner.invoke(app, ["synth", "--entities", "500", "--months", "24", "--seed", "5", "--out", str(data)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in data.iterdir()) == sorted(
        [f"{s}.parquet" for s in ("profile", "tax", "payments", "utilities", "social_insurance", "bureau",
                                  "applications", "loans", "links", "guarantees", "counterparties")]
        + ["ground_truth_rings.parquet"])
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


def broken_folder(tiny_dir: Path, folder: Path) -> Path:
    """Four problems in three files, one value holding brackets; applications.csv saved in GBK."""
    data = to_csv(tiny_dir, folder)
    edit_csv(data, "payments", 4, "inflow", "-1")
    edit_csv(data, "payments", 9, "refunds", "lots")
    edit_csv(data, "tax", 5, "tax_grade", "[A]")
    rewrite(data, "applications", "gbk", lambda rows: rows[2].__setitem__(rows[0].index("purpose"), "流动资金"))
    return data


def said(output: str) -> str:
    return " ".join(output.split())


PROBLEMS = said("""
applications.csv is not UTF-8: read as GB18030
4 problems in 3 files:
tax.csv: 1 problem
  row 5, column 'tax_grade': must be one of A, B, M, C, D (found '[A]')
payments.csv: 2 problems
  row 4, column 'inflow': must be >= 0 (found '-1')
  row 9, column 'refunds': must be a number (found 'lots')
applications.csv: 1 problem
  row 3, column 'purpose': must be one of working_capital, inventory, seasonal_inputs, equipment, expansion,
  refinancing (found '流动资金')
""")


@pytest.mark.parametrize("command", [["features", "--out", "OUT/f.parquet"], ["train", "--registry", "OUT/models"]])
def test_bad_files_list_every_problem_and_exit_2(tmp_path: Path, tiny_dir: Path, command: list[str]) -> None:
    data = broken_folder(tiny_dir, tmp_path / "csv")
    out = tmp_path / "out"
    result = runner.invoke(app, [command[0], "--data", str(data)] + [a.replace("OUT", str(out)) for a in command[1:]])
    assert result.exit_code == 2, result.output
    text = said(result.output)
    assert PROBLEMS.split(" 4 problems")[0] in text  # the warning naming the encoding
    assert "4 problems" + PROBLEMS.split(" 4 problems")[1] in text, text
    assert not out.exists()


def test_score_lists_every_problem_and_exits_2(tmp_path: Path, tiny_dir: Path, champion_registry: Path) -> None:
    data = broken_folder(tiny_dir, tmp_path / "csv")
    out = tmp_path / "scores.parquet"
    result = runner.invoke(app, ["score", "--data", str(data), "--out", str(out), "--registry",
                                 str(champion_registry)])
    assert result.exit_code == 2, result.output
    assert "4 problems" + PROBLEMS.split(" 4 problems")[1] in said(result.output), result.output
    assert not out.exists()


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
