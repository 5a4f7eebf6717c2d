"""Training on the reference data set: a good, calibrated, reproducible, verifiable bundle, and its registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from service.cli import app
from service.scoring.bundle import BUNDLE_FILES, MANIFEST_FILE, BundleError, load_bundle
from service.scoring.catalog import CATALOG, FEATURE_CODE_VERSION, FEATURE_NAMES
from service.scoring.registry import Registry, RegistryError
from training.config import load_config
from training.dataset import TrainingSet, from_folder
from training.pipeline import TrainResult, train

runner = CliRunner()


@pytest.fixture(scope="module")
def mid_set(mid_dir: Path) -> TrainingSet:
    return from_folder(mid_dir)


@pytest.fixture(scope="module")
def trained(mid_set: TrainingSet, tmp_path_factory: pytest.TempPathFactory) -> tuple[Registry, TrainResult]:
    registry = Registry(tmp_path_factory.mktemp("registry"))
    return registry, train(mid_set, load_config(None), registry)


def flat(text: str) -> str:
    return " ".join(text.split())


class TestModelQuality:
    def test_out_of_time_auc_is_in_the_expected_band(self, trained) -> None:
        _, result = trained
        assert 0.75 <= result.metadata["metrics"]["oot"]["auc"] <= 0.92

    def test_lightgbm_beats_the_challenger(self, trained) -> None:
        _, result = trained
        m = result.card["metrics"]
        assert m["lightgbm"]["auc"] > m["challenger"]["auc"]
        assert m["lightgbm"]["brier"] <= m["challenger"]["brier"]

    def test_calibration_error_by_decile_is_small(self, trained) -> None:
        _, result = trained
        deciles = result.card["metrics"]["lightgbm"]["calibration_by_decile"]
        assert result.card["metrics"]["lightgbm"]["calibration_error"] < 0.01
        riskiest = deciles[-1]
        assert riskiest["observed"] == pytest.approx(riskiest["expected"], rel=0.35)
        observed = [d["observed"] for d in deciles]
        assert observed[-1] > 5 * observed[0]  # PD ranks risk

    def test_every_monotone_constraint_held(self, trained) -> None:
        _, result = trained
        assert result.card["monotone_all_held"]
        assert len(result.card["monotone"]) == sum(1 for f in CATALOG if f.direction != 0)

    def test_pd_stays_sensible_when_a_source_is_withheld(self, trained) -> None:
        _, result = trained
        rows = {r["source"]: r for r in result.card["robustness"]}
        assert set(rows) == {"tax", "payments", "utilities", "social_insurance", "bureau"}
        for r in rows.values():
            assert 0.6 < r["mean_pd_without"] / r["observed_default_rate"] < 1.6, r
            assert r["auc_without"] > 0.72, r

    def test_fairness_and_segments_are_reported(self, trained) -> None:
        _, result = trained
        fairness = result.card["fairness"]
        assert set(fairness) == {"owner_gender", "owner_age_band"}
        for f in fairness.values():
            assert f["flagged"] == (f["approval_rate_ratio"] < 0.8)
            assert sum(g["n"] for g in f["groups"]) == result.card["metrics"]["lightgbm"]["n"]
        assert {s["group"] for s in result.card["segments"]["region"]} == {"east", "central", "west", "northeast"}

    def test_psi_of_every_feature_and_the_score(self, trained) -> None:
        _, result = trained
        psi = result.card["psi"]
        assert set(psi["features"]) == set(FEATURE_NAMES)
        assert 0 <= psi["score"] < 0.25


class TestBundle:
    def test_files_manifest_and_metadata(self, trained) -> None:
        registry, result = trained
        folder = registry.path(result.version)
        assert sorted(p.name for p in folder.iterdir()) == sorted([*BUNDLE_FILES, MANIFEST_FILE])
        for p in folder.iterdir():
            p.read_text(encoding="utf-8")  # every artifact is text: no pickle, no opaque binary
        md = json.loads((folder / "metadata.json").read_text())
        assert [f["name"] for f in md["features"]] == list(FEATURE_NAMES)
        assert md["feature_code_version"] == FEATURE_CODE_VERSION
        assert {"auc", "ks", "brier"} <= set(md["metrics"]["oot"])
        assert {"calibration", "scaling", "grades"} <= set(md["scorer"])
        assert set(md["reference"]["features"]) == set(FEATURE_NAMES)
        assert md["data"]["sha256"] and md["seed"] == 7 and md["libraries"]["lightgbm"]
        assert md["config"]["lightgbm"]["num_leaves"] == 7

    def test_the_card_has_plots_and_the_numbers(self, trained) -> None:
        registry, result = trained
        html = (registry.path(result.version) / "model_card.html").read_text()
        assert html.count("<svg") >= 5
        for needle in (result.version, "Intended use", "Limitations", "Calibration by decile", "Fairness",
                       "Robustness to absent sources", result.metadata["data"]["sha256"]):
            assert needle in html
        assert result.card["importance"]["shap_cross_check"].get("max_abs_difference", 1) < 1e-6

    def test_the_bundle_loads_and_scores(self, trained, mid_set: TrainingSet) -> None:
        registry, result = trained
        bundle = load_bundle(registry.path(result.version))
        contrib = bundle.contributions(mid_set.X[:50])
        np.testing.assert_allclose(contrib.sum(axis=1), bundle.margin(mid_set.X[:50]), atol=1e-9)

    def test_same_data_config_and_seed_give_the_same_bytes(self, trained, mid_set, tmp_path: Path) -> None:
        registry, result = trained
        again = train(mid_set, load_config(None), Registry(tmp_path))
        assert again.version == result.version
        for name in BUNDLE_FILES:
            assert (tmp_path / again.version / name).read_bytes() == \
                (registry.path(result.version) / name).read_bytes(), name


class TestRegistry:
    @pytest.fixture()
    def copy(self, trained, tmp_path: Path) -> tuple[Registry, str]:
        import shutil

        registry, result = trained
        shutil.copytree(registry.path(result.version), tmp_path / result.version)
        return Registry(tmp_path), result.version

    def test_verify_fails_after_one_changed_byte(self, copy) -> None:
        registry, version = copy
        model = registry.path(version) / "model.txt"
        data = bytearray(model.read_bytes())
        data[len(data) // 2] ^= 0x01
        model.write_bytes(bytes(data))
        result = runner.invoke(app, ["models", "verify", version, "--registry", str(registry.root)])
        assert result.exit_code == 1
        assert f"bundle {version}: model.txt has SHA-256" in flat(result.output)
        with pytest.raises(BundleError, match="model.txt"):
            load_bundle(registry.path(version))
        with pytest.raises(RegistryError, match="model.txt"):
            registry.promote(version, reason="should be refused")

    def test_an_extra_file_is_refused(self, copy) -> None:
        registry, version = copy
        (registry.path(version) / "model.pkl").write_bytes(b"\x80\x04")
        with pytest.raises(RegistryError, match=r"unexpected files \['model.pkl'\]"):
            registry.verify(version)

    def test_promote_rollback_and_history(self, copy, trained) -> None:
        registry, version = copy
        assert runner.invoke(app, ["models", "verify", version, "--registry", str(registry.root)]).exit_code == 0
        with pytest.raises(RegistryError, match="needs a reason"):
            registry.promote(version, reason=" ")
        registry.promote(version, by="risk-lead", reason="first champion")
        assert registry.champion() == version
        with pytest.raises(RegistryError, match="no earlier champion"):
            registry.rollback(reason="nothing before")
        with pytest.raises(RegistryError, match="already the champion"):
            registry.promote(version, reason="again")
        events = [(e.event, e.version, e.by, e.reason, e.previous) for e in registry.events()]
        assert events == [("promote", version, "risk-lead", "first champion", None)]
        assert runner.invoke(app, ["models", "history", "--registry", str(registry.root)]).exit_code == 0

    def test_unknown_version(self, copy) -> None:
        registry, _ = copy
        result = runner.invoke(app, ["models", "show", "m000000000000", "--registry", str(registry.root)])
        assert result.exit_code == 2 and "no model version 'm000000000000'" in flat(result.output)
        with pytest.raises(RegistryError, match="no model version"):
            registry.path("../etc")


def test_a_second_champion_can_be_rolled_back(tmp_path: Path, small_dir: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Two real versions (two seeds), promoted in turn; rollback returns to the first and is logged, in the
    registry's log and in the database's audit chain."""
    from service.config import get_settings

    monkeypatch.setenv("SMECREDIT_DATABASE_URL", f"sqlite:///{tmp_path}/db.sqlite")
    get_settings.cache_clear()
    registry = tmp_path / "reg"
    versions = []
    for seed in (1, 2):
        cfg = tmp_path / f"seed{seed}.yaml"
        cfg.write_text(f"seed: {seed}\nsplit: {{valid_share: 0.25, test_share: 0.25}}\n")
        result = runner.invoke(app, ["train", "--data", str(small_dir), "--config", str(cfg), "--registry",
                                     str(registry), "--promote"])
        assert result.exit_code == 0, result.output
        versions.append(result.output.strip().splitlines()[-1])
    reg = Registry(registry)
    assert reg.champion() == versions[1] and reg.versions() == versions
    result = runner.invoke(app, ["models", "rollback", "--reason", "drift on new data", "--by", "cro",
                                 "--registry", str(registry)])
    assert result.exit_code == 0, result.output
    assert reg.champion() == versions[0]
    assert [(e.event, e.version) for e in reg.events()][-1] == ("rollback", versions[0])
    listing = runner.invoke(app, ["models", "list", "--registry", str(registry)])
    assert all(v in listing.output for v in versions)
    import sqlite3

    actions = [r[0] for r in sqlite3.connect(tmp_path / "db.sqlite").execute(
        "SELECT action FROM audit_events ORDER BY id")]
    assert actions == ["model.promoted", "model.promoted", "model.rolled_back"]
    get_settings.cache_clear()


class TestConfig:
    def test_unknown_key_is_named(self, tmp_path: Path) -> None:
        cfg = tmp_path / "c.yaml"
        cfg.write_text("lightgbm:\n  num_leafs: 7\n")
        with pytest.raises(ValueError, match=r"lightgbm.num_leafs: Extra inputs are not permitted"):
            load_config(cfg)

    def test_bad_split_dates(self, tmp_path: Path, small_dir: Path) -> None:
        cfg = tmp_path / "c.yaml"
        cfg.write_text("split:\n  valid_from: 2030-01-01\n  test_from: 2031-01-01\n")
        result = runner.invoke(app, ["train", "--data", str(small_dir), "--config", str(cfg), "--registry",
                                     str(tmp_path / "r")])
        assert result.exit_code == 2
        assert "the valid part" in flat(result.output) and "Adjust split.valid_from" in flat(result.output)
        assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())

    def test_dates_out_of_order(self, tmp_path: Path) -> None:
        cfg = tmp_path / "c.yaml"
        cfg.write_text("split:\n  valid_from: 2025-06-01\n  test_from: 2025-01-01\n")
        with pytest.raises(ValueError, match="valid_from must be before test_from"):
            load_config(cfg)


def test_tuning_runs_the_trials_and_trains_with_the_best(small_dir: Path, tmp_path: Path) -> None:
    from training.config import LightGBMConfig

    result = train(from_folder(small_dir), load_config(None), Registry(tmp_path), tune_trials=3)
    tuned = result.metadata["training"]["lightgbm"]
    assert tuned != LightGBMConfig().model_dump()  # the search changed the shape or regularisation
    assert 0.5 < result.metadata["metrics"]["oot"]["auc"] < 1


class TestStreamingLoader:
    """The folder read a range of enterprises at a time gives exactly what the whole folder in memory gave."""

    @staticmethod
    def in_memory(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from service.batch.chunks import build_all
        from service.scoring.raw import load_folder

        data = load_folder(folder)
        labelled = np.flatnonzero(~np.isnan(data.applications["defaulted_12m"]))
        data = data.select(labelled)
        fm = build_all(data)
        return fm.values, fm.sources_used, data.applications["application_id"]

    @staticmethod
    def scrambled(src: Path, dst: Path) -> Path:
        """The same folder with monthly rows shuffled and written in many small row groups."""
        import shutil

        import pyarrow.parquet as pq

        from service.scoring.raw import MONTHLY_SOURCES

        shutil.copytree(src, dst)
        rng = np.random.default_rng(0)
        for source in MONTHLY_SOURCES:
            table = pq.read_table(src / f"{source}.parquet")
            pq.write_table(table.take(rng.permutation(table.num_rows)), dst / f"{source}.parquet",
                           row_group_size=4000)
        return dst

    def test_the_same_training_set_as_the_folder_in_memory(self, small_dir: Path) -> None:
        values, used, ids = self.in_memory(small_dir)
        ts = from_folder(small_dir)
        np.testing.assert_array_equal(ts.X, values)
        np.testing.assert_array_equal(ts.sources_used, used)
        assert len(ts.y) == len(ids)

    def test_any_row_order_and_csv_give_the_same_features(self, small_dir: Path, tmp_path: Path) -> None:
        from tests.conftest import to_csv

        values, used, _ = self.in_memory(small_dir)
        for folder in (self.scrambled(small_dir, tmp_path / "scrambled"), to_csv(small_dir, tmp_path / "csv")):
            ts = from_folder(folder)
            np.testing.assert_array_equal(ts.X, values)
            np.testing.assert_array_equal(ts.sources_used, used)

    def test_pieces_hold_whole_enterprises_and_each_application_once(self, small_dir: Path, tmp_path: Path) -> None:
        from training.stream import StreamedFolder

        folder = StreamedFolder(self.scrambled(small_dir, tmp_path / "scrambled"))
        seen = []
        for rows, piece in folder.pieces(max_applications=500):
            seen.append(rows)
            for table in piece.monthly.values():  # every record belongs to an enterprise of the piece
                assert table["enterprise_row"].min() >= 0
                assert table["enterprise_row"].max() < piece.n_enterprises
        assert sorted(np.concatenate(seen).tolist()) == list(range(len(folder.applications["application_id"])))

    @pytest.mark.parametrize(("row", "column", "value", "rule"), [
        (9_000, "declared_sales", -5.0, "must be >= 0 (found -5)"),
        (15_000, "enterprise_id", "E-NOBODY", "unknown enterprise (not in profile) (found 'E-NOBODY')"),
    ])
    def test_errors_name_the_row_of_the_file(self, small_dir: Path, tmp_path: Path, row: int, column: str,
                                             value: object, rule: str) -> None:
        """A broken value far into the file, in a later row group: the same error as reading it whole."""
        import shutil

        import pyarrow as pa
        import pyarrow.parquet as pq

        from service.scoring.raw import ContractError, load_folder

        folder = Path(shutil.copytree(small_dir, tmp_path / "broken"))
        table = pq.read_table(small_dir / "tax.parquet")
        values = table.column(column).to_pylist()
        values[row - 2] = value  # row as a spreadsheet numbers it: the header is row 1
        table = table.set_column(table.column_names.index(column), column, pa.array(values))
        pq.write_table(table, folder / "tax.parquet", row_group_size=4000)
        with pytest.raises(ContractError) as whole:
            load_folder(folder)
        with pytest.raises(ContractError) as streamed:
            from_folder(folder)
        assert str(streamed.value) == str(whole.value)
        assert f"tax.parquet, row {row}, column '{column}': {rule}" == str(streamed.value)

    def test_every_row_group_s_problems_are_listed(self, small_dir: Path, tmp_path: Path) -> None:
        """Problems in three row groups: the streamed reader lists all of them, as reading the file whole does."""
        import shutil

        import pyarrow as pa
        import pyarrow.parquet as pq

        from service.scoring.raw import ContractError, load_folder

        folder = Path(shutil.copytree(small_dir, tmp_path / "broken"))
        table = pq.read_table(small_dir / "tax.parquet")
        sales = table.column("declared_sales").to_pylist()
        grades = table.column("tax_grade").to_pylist()
        for row in (6_000, 9_000, 9_001, 15_000):
            sales[row - 2] = -1.0
        grades[12_000 - 2] = "Z"
        table = table.set_column(table.column_names.index("declared_sales"), "declared_sales", pa.array(sales))
        table = table.set_column(table.column_names.index("tax_grade"), "tax_grade", pa.array(grades))
        pq.write_table(table, folder / "tax.parquet", row_group_size=4000)
        with pytest.raises(ContractError) as whole:
            load_folder(folder)
        with pytest.raises(ContractError) as streamed:
            from_folder(folder)
        assert str(streamed.value) == str(whole.value)
        assert [(p.row, p.column) for p in streamed.value.problems] == [
            (6_000, "declared_sales"), (9_000, "declared_sales"), (9_001, "declared_sales"), (12_000, "tax_grade"),
            (15_000, "declared_sales")]

    def test_a_repeated_month_is_refused(self, small_dir: Path, tmp_path: Path) -> None:
        import shutil

        import pyarrow as pa
        import pyarrow.parquet as pq

        from service.scoring.raw import ContractError

        folder = Path(shutil.copytree(small_dir, tmp_path / "repeated"))
        table = pq.read_table(small_dir / "payments.parquet")
        pq.write_table(pa.concat_tables([table, table.slice(100, 1)]), folder / "payments.parquet",
                       row_group_size=4000)
        with pytest.raises(ContractError, match=r"payments.parquet, row \d+, column 'month': duplicate"):
            from_folder(folder)


class TestWithheldSources:
    """Features without a source are built only for the rows that use them, with the values they always had."""

    def test_only_the_masked_and_test_rows_are_built_with_the_old_values(self, small_dir: Path) -> None:
        from service.batch.chunks import build_all
        from service.scoring.raw import MONTHLY_SOURCES, load_folder
        from training.pipeline import masked_rows, out_of_time_split, prepare_withheld, robustness_rows

        cfg = load_config(None)
        ts = from_folder(small_dir)
        split = out_of_time_split(ts, cfg)
        prepare_withheld(ts, cfg, split)
        picks, tested = masked_rows(ts, split.train, cfg.source_masking_rate, cfg.seed), robustness_rows(ts, split.test)
        data = load_folder(small_dir)
        assert ts.withheld.sources == tuple(sorted(data.monthly))
        for source in ts.withheld.sources:
            expected_rows = np.union1d(picks[source], tested[source])
            np.testing.assert_array_equal(ts.withheld.rows[source], expected_rows)
            assert len(expected_rows) < 0.5 * len(ts.y)  # not every row, as before
            had = ts.sources_used[split.train, MONTHLY_SOURCES.index(source)].sum()
            assert len(picks[source]) == int(cfg.source_masking_rate * had)
            everything = build_all(data, allowed_sources=[s for s in (*MONTHLY_SOURCES, "links")
                                                          if s != source]).values
            np.testing.assert_array_equal(ts.withheld.take(source, expected_rows), everything[expected_rows])

    def test_rows_asked_for_later_are_built_on_demand(self, small_dir: Path) -> None:
        from service.batch.chunks import build_all
        from service.scoring.raw import load_folder

        ts = from_folder(small_dir)
        rows = np.array([3, 50, 700])
        everything = build_all(load_folder(small_dir), allowed_sources=["tax", "utilities", "social_insurance",
                                                                        "bureau", "links"]).values
        np.testing.assert_array_equal(ts.withheld.take("payments", rows), everything[rows])
        np.testing.assert_array_equal(ts.withheld.take("payments", rows[::-1]), everything[rows[::-1]])
        assert list(ts.withheld.rows) == ["payments"]

    def test_a_folder_changed_since_loading_is_refused(self, small_dir: Path, tmp_path: Path) -> None:
        """The folder is read again for these rows: it must still hold the data the features came from."""
        import os
        import shutil

        folder = Path(shutil.copytree(small_dir, tmp_path / "changing"))
        ts = from_folder(folder)
        payments = folder / "payments.parquet"
        stat = payments.stat()
        os.utime(payments, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # rewritten a second later
        with pytest.raises(ValueError, match="the data files changed during training; train again"):
            ts.withheld.take("payments", np.array([3]))
