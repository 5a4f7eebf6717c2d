"""The model card says only what was computed: one test per kind of statement, each on a model trained here,
and the CLI summary prints the card's own statements."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from markupsafe import escape
from typer.testing import CliRunner

from service.cli import app
from service.scoring.registry import Registry
from training.card import card_html
from training.config import load_config
from training.dataset import from_table
from training.facts import statements
from training.pipeline import TrainResult, train

runner = CliRunner()


def dated_frame(n: int = 3000, seed: int = 1, *, group_effect: float = 0.0) -> pd.DataFrame:
    """A dated table (an out-of-time split: quick to train) with a protected-by-name column ``gender`` whose
    effect on risk, through a correlated input, is ``group_effect``."""
    rng = np.random.default_rng(seed)
    gender = rng.choice(["f", "m"], size=n)
    x = rng.normal(size=n) + group_effect * (gender == "m")
    logit = 1.5 * x - 1.2
    return pd.DataFrame({
        "when": pd.date_range("2022-01-01", periods=n, freq="4h").strftime("%Y-%m-%d"),
        "x": x, "z": rng.normal(size=n), "gender": gender,
        "y": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int),
    })


def trained(tmp_path: Path, df: pd.DataFrame, **options: object) -> TrainResult:
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    return train(from_table(path, "y", date_column="when", **options), load_config(None), Registry(tmp_path / "r"))


def said(result: TrainResult, topic: str) -> list[dict]:
    return [s for s in result.card["statements"] if s["topic"] == topic]


def html(tmp_path: Path, result: TrainResult) -> str:
    return (tmp_path / "r" / result.version / "model_card.html").read_text()


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TrainResult]:
    """No constraints, a protected column independent of risk."""
    root = tmp_path_factory.mktemp("plain")
    return root, trained(root, dated_frame())


class TestInputs:
    def test_a_protected_column_found_by_name_is_not_an_input(self, plain) -> None:
        root, result = plain
        assert "gender" not in result.metadata["inputs"]["features"]
        assert said(result, "inputs")[0] == {
            "topic": "inputs", "flag": False,
            "text": "'gender' (sex or gender) is not a model input; it is used only for the fairness checks."}
        assert str(escape(said(result, "inputs")[0]["text"])) in html(root, result)

    def test_an_allowed_protected_input_is_flagged_with_the_reason(self, tmp_path: Path) -> None:
        result = trained(tmp_path, dated_frame(), allow_protected="required by the regulator's pricing rule")
        assert "gender" in result.metadata["inputs"]["features"]
        first = said(result, "inputs")[0]
        assert first["flag"] and first["text"] == ("'gender' (sex or gender) is a model input, allowed by the risk "
                                                   "team: required by the regulator's pricing rule")
        assert "never model inputs" not in html(tmp_path, result)

    def test_no_protected_column_says_so_and_fairness_is_not_assessed(self, tmp_path: Path) -> None:
        result = trained(tmp_path, dated_frame().drop(columns=["gender"]))
        texts = [s["text"] for s in result.card["statements"]]
        assert "No protected attribute was found by name among the 4 columns, and none was declared " \
               "(--protected)." in texts
        assert said(result, "fairness") == [{"topic": "fairness", "flag": True, "text": (
            "Fairness was not assessed: the data has no protected attribute to compare groups on.")}]
        assert result.card["fairness"] == {}
        assert not any("Fairness flags" in t for t in texts) and "Fairness flags" not in html(tmp_path, result)

    def test_a_declared_protected_column(self, tmp_path: Path) -> None:
        result = trained(tmp_path, dated_frame().rename(columns={"gender": "segment"}), protected=["segment"])
        assert "segment" not in result.metadata["inputs"]["features"] and "segment" in result.card["fairness"]
        assert said(result, "inputs")[0]["text"].startswith("'segment' (declared with --protected) is not a model")

    def test_an_input_named_like_a_protected_attribute_is_flagged(self, plain) -> None:
        _, result = plain
        facts = result.card | {"inputs": result.card["inputs"] | {"features": ["x", "applicant_age"]}}
        flagged = [s for s in statements(facts) if s.topic == "inputs" and s.flag]
        assert [s.text for s in flagged] == ["Model inputs whose names suggest a protected attribute: "
                                             "'applicant_age'."]


class TestFairness:
    def test_assessed_and_within_the_rule(self, plain) -> None:
        _, result = plain
        f = result.card["fairness"]["gender"]
        rates = [g["approval_rate"] for g in f["groups"]]
        assert f["approval_rate_ratio"] == pytest.approx(min(rates) / max(rates)) and f["approval_rate_ratio"] >= 0.8
        assert said(result, "fairness")[-1] == {"topic": "fairness", "flag": False,
                                                "text": "Fairness flags: none (assessed on 'gender')."}

    def test_flagged_under_the_four_fifths_rule(self, tmp_path: Path) -> None:
        result = trained(tmp_path, dated_frame(group_effect=1.5))
        f = result.card["fairness"]["gender"]
        assert f["flagged"] and f["approval_rate_ratio"] < 0.8
        texts = [s["text"] for s in said(result, "fairness") if s["flag"]]
        assert texts[-1] == "Fairness flags: 'gender' (assessed on 'gender')."
        assert any("FLAGGED: under the four-fifths rule" in t for t in texts)

    def test_the_cut_off_is_stated_and_approves_the_share_that_repaid(self, plain) -> None:
        _, result = plain
        cutoff = result.card["approval_cutoff"]
        approved = sum(g["n"] * g["approval_rate"] for g in result.card["fairness"]["gender"]["groups"])
        total = sum(g["n"] for g in result.card["fairness"]["gender"]["groups"])
        repaid = 1 - result.card["metrics"]["lightgbm"]["default_rate"]
        assert approved / total == pytest.approx(repaid, abs=0.02)
        assert said(result, "fairness")[0]["text"].startswith(f"Approval rates are compared at PD < "
                                                              f"{cutoff['pd']:.4g}")


class TestMonotone:
    def test_none_set_is_said_and_nothing_is_claimed_held(self, plain) -> None:
        root, result = plain
        assert result.card["monotone"] == []
        assert said(result, "monotone") == [{"topic": "monotone", "flag": False,
                                            "text": "No monotone constraints were set."}]
        assert "constraints held" not in html(root, result) and "constraint held" not in html(root, result)

    def test_a_constraint_is_checked_on_the_fitted_model(self, tmp_path: Path) -> None:
        result = trained(tmp_path, dated_frame(), monotone=["x=+1"])
        (check,) = result.card["monotone"]
        assert check["feature"] == "x" and check["rows_checked"] == 200 and check["violations"] == 0
        assert said(result, "monotone")[0]["text"] == ("All 1 monotone constraints held on the fitted model; each "
                                                       "was swept over its observed range for 200 sample rows.")

    def test_a_violation_would_be_flagged(self, plain) -> None:
        _, result = plain
        broken = [{"feature": "x", "direction": 1, "rows_checked": 200, "violations": 3, "held": False}]
        (s,) = [s for s in statements(result.card | {"monotone": broken}) if s.topic == "monotone"]
        assert s.flag and s.text == "Monotone constraints VIOLATED: 'x' in 3 of 200 rows."


class TestModelStatements:
    def test_the_shape_statement_names_the_best_candidate_on_validation(self, plain) -> None:
        _, result = plain
        shape = result.card["training"]["shape"]
        best = max(shape["candidates"], key=lambda c: c["valid_auc"])
        assert shape["chosen"] == best["name"] and shape["selected_on"].startswith("the validation period")
        assert said(result, "shape")[0]["text"].startswith(f"Shape chosen by grid on the validation period (early "
                                                           f"stopping on it too): {best['name']} (validation AUC "
                                                           f"{best['valid_auc']:.4f}; {best['trees']} trees")

    def test_the_challenger_statement_follows_the_aucs(self, plain) -> None:
        _, result = plain
        ours, theirs = (result.card["metrics"][k]["auc"] for k in ("lightgbm", "challenger"))
        (s,) = said(result, "challenger")
        assert s["text"].startswith("LightGBM beats" if ours > theirs else "The scorecard challenger is at least")
        assert f"{ours:.4f}" in s["text"] and f"{theirs:.4f}" in s["text"] and s["flag"] == (ours <= theirs)

    def test_calibration_stability_and_explanations(self, plain) -> None:
        _, result = plain
        m = result.card["metrics"]["lightgbm"]
        assert said(result, "calibration")[0]["text"].startswith(
            f"Calibrated (Platt) on the validation period; on the evaluation rows the mean PD is {m['mean_pd']:.4f} "
            f"against an observed default rate of {m['default_rate']:.4f}.")
        assert said(result, "stability")[0]["text"].startswith(
            f"Score PSI between training and test {result.card['psi']['score']:.4f}")
        check = result.card["importance"]["shap_cross_check"]
        assert said(result, "explanations")[0] == {"topic": "explanations", "flag": False, "text": (
            f"TreeSHAP contributions agree with the shap package to {check['max_abs_difference']:.1e} on "
            f"{check['rows']} rows.")}


class TestCardPresentation:
    """What a reader sees: legends, names for codes, the PSI watch level, Chinese labels drawn."""

    def test_every_chart_has_a_legend_and_the_histogram_names_its_colours(self, tmp_path: Path, plain) -> None:
        root, result = plain
        charts = re.findall(r"<svg.*?</svg>", html(root, result), flags=re.S)
        assert len(charts) == 5
        for chart in charts:
            assert 'id="legend_1"' in chart, chart[:300]
        (scores,) = [c for c in charts if "Score distribution" in c]
        assert "repaid (left axis)" in scores and "defaulted (right axis)" in scores

    def test_the_calibration_formula_reads_as_arithmetic(self, plain) -> None:  # noqa: ANN001
        """It read 'x margin + -0.5957'."""
        from training.card import card_html

        _, result = plain
        for intercept, shown in ((-0.59571, "&times; margin &minus; 0.5957."), (0.125, "&times; margin + 0.125.")):
            scorer = {**result.card["scorer"],
                      "calibration": {**result.card["scorer"]["calibration"], "intercept": intercept}}
            text = card_html(result.card | {"scorer": scorer}, {})
            assert shown in text and "+ -" not in text

    def test_features_above_the_watch_level_are_marked(self, plain) -> None:
        _, result = plain
        card = result.card | {"psi": {"score": 0.0123, "features": {"calm": 0.05, "drifting": 0.137,
                                                                       "shifted": 0.31}}}
        (s,) = [s for s in statements(card) if s.topic == "stability"]
        assert s.text == ("Score PSI between training and test 0.0123; features shifted (PSI > 0.25): 'shifted'; "
                          "features to watch (PSI > 0.1): 'drifting'.") and s.flag
        page = " ".join(card_html(card, {}).split())
        assert '<td>calm</td> <td>0.05</td><td></td>' in page
        assert '<td>drifting</td> <td class="watch">0.137</td><td class="watch">watch</td>' in page
        assert '<td>shifted</td> <td class="flag">0.31</td><td class="flag">shifted</td>' in page
        calm = result.card | {"psi": {"score": 0.0123, "features": {"calm": 0.05}}}
        assert [s.text for s in statements(calm) if s.topic == "stability"] == [
            "Score PSI between training and test 0.0123; no feature PSI above 0.1."]

    def test_industries_are_named_not_coded(self, plain) -> None:
        _, result = plain
        row = {"n": 98, "default_rate": 0.01, "mean_pd": 0.03, "approval_rate": 0.9, "auc": None}
        card = result.card | {"segments": {"industry": [row | {"group": "C"}, row | {"group": "F"}],
                                           "region": [row | {"group": "east"}]}}
        page = card_html(card, {})
        assert "<td>C Manufacturing (制造业)</td>" in page
        assert "<td>F Wholesale and retail trade (批发和零售业)</td>" in page
        assert "<td>east</td>" in page

    def test_chinese_labels_are_drawn_with_a_cjk_font(self) -> None:
        import matplotlib.pyplot as plt

        from training import card

        if card.cjk_font() is None:
            pytest.skip("no CJK font installed (Debian: fonts-noto-cjk)")

        def draw() -> list[str]:
            fig, ax = plt.subplots()
            ax.barh(["月销售额", "纳税信用等级"], [1.0, 2.0])
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                card._svg(fig)
            return [str(w.message) for w in caught if "missing from font" in str(w.message)]

        assert draw() == []
        with matplotlib.rc_context({"font.family": ["DejaVu Sans"]}):  # the control: without the CJK font
            assert draw()

    def test_no_cjk_font_falls_back_quietly(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import matplotlib.font_manager

        from training import card

        fonts = [f for f in matplotlib.font_manager.fontManager.ttflist if "CJK" not in f.name]
        monkeypatch.setattr(matplotlib.font_manager.fontManager, "ttflist", fonts)
        assert card.cjk_font() is None


def test_the_cli_summary_prints_the_cards_statements(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    dated_frame().to_csv(path, index=False)
    result = runner.invoke(app, ["train", "--table", str(path), "--target", "y", "--date", "when",
                                 "--registry", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    version = result.output.strip().splitlines()[-1]
    card = Registry(tmp_path / "r").path(version) / "model_card.json"
    import json

    said_in_card = [s["text"] for s in json.loads(card.read_text())["statements"]]
    output = " ".join(result.output.split())
    assert said_in_card and all(" ".join(t.split()) in output for t in said_in_card)
    assert "monotone constraints held" not in output  # the old summary line, true or not
