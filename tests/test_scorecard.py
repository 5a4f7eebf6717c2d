"""The scorecard (issue 12 part 4): optbinning's fit saved as data, served by the same Engine, exported as CSV
and Excel. One scorecard is trained on the small synthetic set for the module (about 30 s)."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from openpyxl import load_workbook
from typer.testing import CliRunner

from service.cli import app
from service.export import ExportError, export_model
from service.export.scorecard_export import CSV_FILE, XLSX_FILE
from service.runtime import DEFAULT_POLICY
from service.scoring.bundle import (
    IV_FILE,
    MANIFEST_FILE,
    METADATA_FILE,
    POINTS_FILE,
    SCORECARD_BUNDLE_FILES,
    SCORECARD_FILE,
    BundleError,
    ScorecardBundle,
    canonical_json,
    check_servable,
    load_bundle,
    sha256_bytes,
    verify,
    version_of,
)
from service.scoring.catalog import BY_NAME
from service.scoring.engine import Engine
from service.scoring.features import build_features
from service.scoring.policy import load_policy
from service.scoring.raw import RawData
from service.scoring.registry import Registry
from service.scoring.scorecard import ScorecardModel
from tests.api_fixtures import make_api
from training.config import load_config
from training.dataset import TrainingSet, from_folder
from training.pipeline import _fit_challenger, out_of_time_split, train
from training.scorecard import fit_scorecard
from training.scorecard_bundle import scorecard_json

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(small_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainingSet, Registry, str]:
    ts = from_folder(small_dir)
    registry = Registry(tmp_path_factory.mktemp("scorecards"))
    result = train(ts, load_config(None), registry, model="scorecard")
    return ts, registry, result.version


@pytest.fixture(scope="module")
def bundle(trained: tuple[TrainingSet, Registry, str]) -> ScorecardBundle:
    _, registry, version = trained
    loaded = load_bundle(registry.path(version))
    assert isinstance(loaded, ScorecardBundle)
    return loaded


@pytest.fixture(scope="module")
def features(small_raw: RawData) -> np.ndarray:
    return build_features(small_raw).values


def _points_of(csv_rows: list[dict], X: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """The unclipped score from the exported table alone: one bin per characteristic, located by its bounds,
    its category codes or 'Missing', its points added up."""
    total = np.zeros(len(X))
    by_feature: dict[str, list[dict]] = {}
    for row in csv_rows:
        by_feature.setdefault(row["feature"], []).append(row)
    for feature, rows in by_feature.items():
        x = X[:, names.index(feature)]
        for i, v in enumerate(x):
            if np.isnan(v):
                match = [r for r in rows if r["bin"] == "Missing"]
            elif rows[0]["codes"] or any(r["bin"] == "(unseen category)" for r in rows):
                match = [r for r in rows if r["codes"] and v in [float(c) for c in r["codes"].split(";")]] or \
                    [r for r in rows if r["bin"] == "(unseen category)"]
            else:
                match = [r for r in rows if r["lower"] and float(r["lower"]) <= v < float(r["upper"])]
            assert len(match) == 1, (feature, v, match)
            total[i] += float(match[0]["points"])
    return total


class TestFit:
    def test_the_served_margin_is_optbinnings_scorecard(self) -> None:
        rng = np.random.default_rng(3)
        n = 4000
        X = np.column_stack([rng.normal(size=n), rng.normal(size=n), rng.integers(0, 4, n).astype(float)])
        X[rng.random(n) < 0.15, 0] = np.nan
        y = (rng.random(n) < 1 / (1 + np.exp(3 - np.nan_to_num(X[:, 0]) + 0.7 * X[:, 1] - 0.4 * X[:, 2]))).astype(int)
        feats = [{"name": "risky", "internal": "risky", "categories": [], "direction": 1},
                 {"name": "safe", "internal": "safe", "categories": [], "direction": -1},
                 {"name": "kind", "internal": "kind", "categories": ["a", "b", "c", "d"], "direction": 0}]
        fitted = fit_scorecard(X, y, feats, max_bins=6, seed=7)
        model = ScorecardModel.from_json(json.loads(scorecard_json(fitted.model)))  # as the service reads it
        frame = pd.DataFrame(X, columns=["risky", "safe", "kind"])
        np.testing.assert_allclose(model.margin(X), fitted.optbinning.decision_function(frame), rtol=0, atol=1e-12)
        missing = {c.feature: c.bins[-1] for c in model.characteristics}
        assert missing["risky"].label == "Missing" and missing["risky"].count == int(np.isnan(X[:, 0]).sum())
        woe = {c.feature: [b.woe for b in c.bins[:-1]] for c in model.characteristics}
        assert np.all(np.diff(woe["risky"]) < 0) and np.all(np.diff(woe["safe"]) > 0)  # monotone as asked

    def test_same_data_and_seed_give_the_same_bins_and_bytes(self, trained: tuple) -> None:
        ts, registry, version = trained
        split = out_of_time_split(ts, load_config(None))
        again = _fit_challenger(ts, load_config(None), split.train)
        assert scorecard_json(again.model) == (registry.path(version) / SCORECARD_FILE).read_bytes()

    def test_bad_labels_are_refused(self) -> None:
        feats = [{"name": "x", "internal": "x", "categories": [], "direction": 0}]
        with pytest.raises(ValueError, match="y must be 0/1"):
            fit_scorecard(np.zeros((10, 1)), np.full(10, 2), feats, max_bins=4, seed=0)


class TestBundle:
    def test_saved_as_data_with_digests(self, trained: tuple) -> None:
        _, registry, version = trained
        folder = registry.path(version)
        assert sorted(p.name for p in folder.iterdir()) == sorted([*SCORECARD_BUNDLE_FILES, MANIFEST_FILE])
        digests = verify(folder)
        assert set(digests) == set(SCORECARD_BUNDLE_FILES)
        assert version == version_of(digests[SCORECARD_FILE], digests[METADATA_FILE])
        iv = list(csv.DictReader(io.StringIO((folder / IV_FILE).read_text(encoding="utf-8"))))
        kept = [r for r in iv if r["characteristic"] == "True"]
        model = json.loads((folder / SCORECARD_FILE).read_text(encoding="utf-8"))
        assert [r["feature"] for r in kept] == [c["feature"] for c in model["characteristics"]]
        assert all(r["why_not"] for r in iv if r["characteristic"] == "False")

    def test_models_verify_refuses_a_changed_points_table(self, trained: tuple, tmp_path: Path) -> None:
        _, registry, version = trained
        copy = tmp_path / version
        shutil.copytree(registry.path(version), copy)
        (copy / POINTS_FILE).write_text("feature,points\nx,999\n", encoding="utf-8")
        with pytest.raises(BundleError, match=f"{POINTS_FILE} has SHA-256"):
            verify(copy)

    def test_a_scorecard_that_does_not_reproduce_its_canary_is_not_servable(self, trained: tuple,
                                                                              tmp_path: Path) -> None:
        _, registry, version = trained
        files = {p.name: p.read_bytes() for p in registry.path(version).iterdir() if p.name != MANIFEST_FILE}
        model = json.loads(files[SCORECARD_FILE])
        model["intercept"] += 0.5  # digests recomputed below: only the canary can catch it
        files[SCORECARD_FILE] = scorecard_json(ScorecardModel.from_json(model))
        edited = version_of(sha256_bytes(files[SCORECARD_FILE]), sha256_bytes(files[METADATA_FILE]))
        folder = tmp_path / edited
        folder.mkdir()
        for name, data in files.items():
            (folder / name).write_bytes(data)
        (folder / MANIFEST_FILE).write_bytes(canonical_json({"version": edited, "algorithm": "sha256", "files": {
            name: sha256_bytes(data) for name, data in sorted(files.items())}}))
        verify(folder)
        with pytest.raises(BundleError, match="canary raw margin differ"):
            check_servable(folder)


class TestServing:
    def test_contributions_are_points_lost_below_each_best_bin(self, bundle: ScorecardBundle,
                                                               features: np.ndarray) -> None:
        X = features[:500]
        contrib = bundle.contributions(X)
        np.testing.assert_allclose(contrib.sum(axis=1), bundle.margin(X), rtol=0, atol=1e-12)
        used = [c.index for c in bundle.scorecard.characteristics]
        assert (contrib[:, used] >= -1e-12).all()  # no bin beats the best one
        unused = np.setdiff1d(np.arange(len(bundle.feature_names)), used)
        assert (contrib[:, unused] == 0).all()
        best = np.zeros((1, len(bundle.feature_names)))  # an applicant in every characteristic's best bin
        for c in bundle.scorecard.characteristics:
            if c.kind == "numerical":
                k = int(np.argmin([b.woe * c.coefficient for b in c.bins[:-1]]))
                edges = (-1e300, *c.splits, 1e300)
                best[0, c.index] = edges[k] if k else edges[1] - 1
        regular = [c.index for c in bundle.scorecard.characteristics if c.kind == "numerical"]
        assert np.abs(bundle.contributions(best)[0, regular]).max() < 1e-12

    def test_reasons_are_the_most_points_lost_in_zh_and_en(self, bundle: ScorecardBundle, small_raw: RawData,
                                                           features: np.ndarray) -> None:
        engine = Engine(bundle)
        scored = engine.score(small_raw.select(np.arange(300)), load_policy(DEFAULT_POLICY))
        declined = [s for s in scored if s.outcome.decision != "approve" and s.reasons]
        assert declined, "the small set has refer or decline decisions"
        for s in declined[:30]:
            assert s.score == bundle.scorer.apply(np.array([s.margin]))[1][0]
            assert (s.points[~np.isnan(s.features)] <= 1e-9).all()  # points lost, never gained
            impacts = [r.impact_points for r in s.reasons]
            assert impacts == sorted(impacts) and impacts[0] < 0
            for r in s.reasons:
                assert r.text_zh and r.text_en and BY_NAME[r.feature].group == r.group
                assert r.impact_points == round(s.groups[r.group], 2)

    def test_promoted_and_served_by_post_v1_scores(self, trained: tuple, tmp_path: Path, example_request: dict,
                                                   small_raw: RawData, features: np.ndarray) -> None:
        _, registry, version = trained
        root = tmp_path / "registry"
        shutil.copytree(registry.root, root)
        Registry(root).promote(version, by="tests", reason="the lender prefers a scorecard")
        api = make_api(f"sqlite:///{tmp_path}/db.sqlite", root)
        with api.client:
            r = api.score(example_request)
        api.client.app.state.engine.dispose()
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model_version"] == version
        i = int(np.flatnonzero(small_raw.applications["application_id"]
                               == example_request["application"]["application_id"])[0])
        table = list(csv.DictReader(io.StringIO((root / version / POINTS_FILE).read_text(encoding="utf-8"))))
        expected = _points_of(table, features[i:i + 1], tuple(json.loads(
            (root / version / SCORECARD_FILE).read_text(encoding="utf-8"))["feature_names"]))[0]
        assert body["score"] == np.clip(np.round(expected), 300, 900)
        if body["decision"] != "approve":
            assert body["reasons"] and all(x["impact_points"] < 0 for x in body["reasons"])


class TestExport:
    def test_csv_and_xlsx_reproduce_the_score(self, trained: tuple, bundle: ScorecardBundle, features: np.ndarray,
                                              tmp_path: Path) -> None:
        _, registry, version = trained
        out = export_model(registry, version, "scorecard", tmp_path / "card").out
        raw = (out / CSV_FILE).read_bytes()
        assert raw.startswith(b"\xef\xbb\xbf")  # the BOM Excel needs for the Chinese labels
        rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
        assert any("近" in r["label_zh"] for r in rows)
        X = features[:400]
        unclipped = bundle.scorer.scaling.score_from_logit(bundle.scorer.calibration.logit(bundle.margin(X)))
        from_csv = _points_of(rows, X, bundle.feature_names)
        np.testing.assert_allclose(from_csv, unclipped, rtol=0, atol=1e-9)
        assert (np.clip(np.round(from_csv), 300, 900) == bundle.scorer.apply(bundle.margin(X))[1]).all()
        sheet = load_workbook(out / XLSX_FILE, read_only=True)["points"]
        cells = list(sheet.iter_rows(values_only=True))
        assert list(cells[0]) == list(rows[0])
        # Excel numbers carry 15-16 significant digits (openpyxl writes them so): equal to that precision
        np.testing.assert_allclose([c[list(rows[0]).index("points")] for c in cells[1:]],
                                   [float(r["points"]) for r in rows], rtol=1e-15)
        assert set(load_workbook(out / XLSX_FILE, read_only=True).sheetnames) == {"points", "iv", "scaling"}

    def test_a_lightgbm_bundle_is_not_exported_as_a_scorecard(self, champion_registry: Path, tmp_path: Path) -> None:
        registry = Registry(champion_registry)
        with pytest.raises(ExportError, match=r"^--format: scorecard exports a scorecard bundle .*--model scorecard"):
            export_model(registry, registry.champion(), "scorecard", tmp_path / "out")
        assert not (tmp_path / "out").exists()

    def test_a_scorecard_is_not_exported_as_trees(self, trained: tuple, tmp_path: Path) -> None:
        _, registry, version = trained
        with pytest.raises(ExportError, match="^--format: onnx exports a LightGBM model's trees; .*--format sc"):
            export_model(registry, version, "onnx", tmp_path / "out")


class TestCli:
    def test_an_unknown_model_is_refused(self, tiny_dir: Path, tmp_path: Path) -> None:
        result = runner.invoke(app, ["train", "--data", str(tiny_dir), "--model", "xgboost",
                                     "--registry", str(tmp_path)])
        assert result.exit_code == 2
        assert "--model: unknown model 'xgboost'; one of lightgbm, scorecard" in result.output

    def test_export_and_promote(self, trained: tuple, tmp_path: Path) -> None:
        _, registry, version = trained
        root = tmp_path / "registry"
        shutil.copytree(registry.root, root)
        result = runner.invoke(app, ["models", "export", version, "--format", "scorecard", "--out",
                                     str(tmp_path / "x"), "--registry", str(root)])
        assert result.exit_code == 0, result.output
        assert (tmp_path / "x" / XLSX_FILE).is_file()
        result = runner.invoke(app, ["models", "promote", version, "--reason", "scorecard", "--registry", str(root)])
        assert result.exit_code == 0, result.output
        assert Registry(root).champion() == version
