"""A new model against the champion, and cut-offs for targets, on the out-of-time applications (issue 12).

A risk team changed score scaling (pdo 20 -> 40) and nothing warned that the policy's cut-offs, in points, now
declined more applicants; retrains were never compared with the model in production; 14.8% of applications
waited for a person and nothing helped choose cut-offs for a straight-through target."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from service.batch.compare import APPROVE, REFER, Targets, decide_all, decisions_at, optimise
from service.cli import app as cli
from service.db.session import make_engine, session_factory
from service.db.tables import AuditEvent
from service.runtime import DEFAULT_POLICY
from service.scoring.bundle import load_bundle
from service.scoring.engine import Engine
from service.scoring.policy import Policy, load_policy
from service.scoring.raw import load_folder
from service.scoring.registry import Registry
from service.usecases.compare import CompareError, compare_with_champion, out_of_time, policy_with_cut_offs
from training.config import load_config
from training.dataset import from_folder
from training.pipeline import train

runner = CliRunner()


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(DEFAULT_POLICY)


@pytest.fixture(scope="module")
def rescaled(champion_registry: Path, small_dir: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[Path, str]:
    """A copy of the champion's registry with a retrain at 40 points to double the odds instead of 20."""
    root = tmp_path_factory.mktemp("rescaled") / "registry"
    shutil.copytree(champion_registry, root)
    cfg = load_config(None)
    cfg = cfg.model_copy(update={"scaling": cfg.scaling.model_copy(update={"pdo": 40.0})})
    return root, train(from_folder(small_dir), cfg, Registry(root)).version


@pytest.fixture(scope="module")
def champion_oot(champion_registry: Path, small_dir: Path) -> tuple[Engine, object, np.ndarray]:
    reg = Registry(champion_registry)
    engine = Engine(load_bundle(reg.path(str(reg.champion()))))
    raw, y = out_of_time(load_folder(small_dir), engine.version, engine.bundle.metadata)
    return engine, raw, y


def _with_cut_offs(policy: Policy, approve: float, refer: float) -> Policy:
    return Policy.from_yaml(policy_with_cut_offs(policy, approve, refer, "test"))


@pytest.mark.parametrize(("approve", "refer"), [(600, 570), (620, 550), (585, 585), (640, 600), (500, 480)])
def test_re_deciding_at_other_cut_offs_is_what_the_policy_decides(champion_oot: tuple, policy: Policy,
                                                                 approve: float, refer: float) -> None:
    """The optimiser's shortcut (other hits' severity + two comparisons) against Engine.score with a policy
    that has those cut-offs: the same decision for every application."""
    engine, raw, _ = champion_oot
    d = decide_all(engine, raw, policy)
    full = decide_all(engine, raw, _with_cut_offs(policy, approve, refer))
    assert len(d.score) > 300
    np.testing.assert_array_equal(decisions_at(d, approve, refer), full.decision)


def test_a_scaling_change_is_flagged_with_cut_offs_that_keep_the_approval_rate(rescaled: tuple[Path, str],
                                                                              small_dir: Path, policy: Policy) -> None:
    root, version = rescaled
    reg = Registry(root)
    result = compare_with_champion(reg, version, small_dir, policy)
    assert result is not None and result["against"] == reg.champion() and result["scaling_changed"]
    assert any("score scaling changed" in w and "pdo" not in w and "40 points to double" in w
               for w in result["warnings"])
    new, old = result["candidate"], result["champion"]
    # 600 points is odds 50:1 under both scalings, but 570 is not: the same cut-offs decline more applicants.
    assert new["decline_rate"] > old["decline_rate"] + 0.01
    # The swap set accounts for every application, and agrees with each model's own rates.
    cells = result["swap_set"]
    n = result["applications"]
    assert sum(c["n"] for c in cells) == n
    assert sum(c["n"] for c in cells if c["candidate"] == "approve") == round(new["approval_rate"] * n)
    assert sum(c["n"] for c in cells if c["champion"] == "approve") == round(old["approval_rate"] * n)
    # The proposed cut-offs, applied for real, give the champion's approval rate back.
    keep = result["cut_offs_keeping_approval"]
    engine = Engine(load_bundle(reg.path(version)))
    raw, _ = out_of_time(load_folder(small_dir), version, engine.bundle.metadata)
    redone = decide_all(engine, raw, _with_cut_offs(policy, keep["approve_min_score"], keep["refer_min_score"]))
    assert float((redone.decision == APPROVE).mean()) == pytest.approx(keep["approval_rate"], abs=1e-12)
    # ... as near as whole points get: a point either side does no better.
    gap = abs(keep["approval_rate"] - old["approval_rate"])
    for other in (keep["approve_min_score"] - 1, keep["approve_min_score"] + 1):
        moved = decide_all(engine, raw, _with_cut_offs(policy, other, min(other, keep["refer_min_score"])))
        assert abs(float((moved.decision == APPROVE).mean()) - old["approval_rate"]) >= gap
    assert gap < 0.02
    # Kept in the registry for the promotion to show and record.
    stored = json.loads((root / "comparisons" / f"{version}.json").read_text())
    assert stored["against"] == result["against"] and stored["swap_set"] == cells


def test_nothing_to_compare_with_the_champion_itself(champion_registry: Path, small_dir: Path,
                                                     policy: Policy) -> None:
    reg = Registry(champion_registry)
    assert compare_with_champion(reg, str(reg.champion()), small_dir, policy) is None


def test_promotion_shows_the_comparison_and_records_it_in_the_audit_chain(
        rescaled: tuple[Path, str], small_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from service.config import get_settings

    root, version = rescaled
    work = tmp_path / "registry"
    shutil.copytree(root, work)
    previous = Registry(work).champion()
    url = f"sqlite:///{tmp_path}/db.sqlite"
    monkeypatch.setenv("SMECREDIT_DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        result = runner.invoke(cli, ["models", "promote", version, "--reason", "rescaled", "--data", str(small_dir),
                                     "--registry", str(work)])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    out = flat(result.output)
    assert f"against the champion {previous}" in out and "score scaling changed" in out
    assert "cut-offs that keep the champion's approval rate" in out
    with session_factory(make_engine(url))() as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == "model.promoted")).one()
    assert event.subject == version
    assert event.payload["comparison"]["against"] == previous
    assert event.payload["comparison"]["warnings"] and event.payload["comparison"]["swap_set"]


def test_promotion_through_the_api_records_the_kept_comparison(rescaled: tuple[Path, str], small_dir: Path,
                                                                tmp_path: Path, policy: Policy) -> None:
    from tests.api_fixtures import make_api

    root, version = rescaled
    work = tmp_path / "registry"
    shutil.copytree(root, work)
    previous = Registry(work).champion()
    assert compare_with_champion(Registry(work), version, small_dir, policy) is not None
    api = make_api(f"sqlite:///{tmp_path}/db.sqlite", work)
    with api.client:
        r = api.client.post(f"/v1/models/{version}/promote", json={"reason": "rescaled"},
                            headers=api.headers("platform"))
        assert r.status_code == 200, r.text
        with api.client.app.state.read_sessions() as session:
            event = session.scalars(select(AuditEvent).where(AuditEvent.action == "model.promoted")).one()
    assert event.payload["comparison"]["against"] == previous
    assert any("score scaling changed" in w for w in event.payload["comparison"]["warnings"])


def test_promoting_without_a_comparison_says_so(rescaled: tuple[Path, str], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from service.config import get_settings

    root, version = rescaled
    work = tmp_path / "registry"
    shutil.copytree(root, work, ignore=shutil.ignore_patterns("comparisons"))
    monkeypatch.setenv("SMECREDIT_DATABASE_URL", f"sqlite:///{tmp_path}/db.sqlite")
    get_settings.cache_clear()
    try:
        result = runner.invoke(cli, ["models", "promote", version, "--reason", "r", "--registry", str(work)])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "was not compared with the champion" in flat(result.output)


def test_training_compares_the_new_model_with_the_champion(champion_registry: Path, small_dir: Path,
                                                           tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    shutil.copytree(champion_registry, registry)
    champion = Registry(registry).champion()
    cfg = tmp_path / "seed11.yaml"
    cfg.write_text("seed: 11\n")
    result = runner.invoke(cli, ["train", "--data", str(small_dir), "--config", str(cfg), "--registry", str(registry)])
    assert result.exit_code == 0, result.output
    version = result.output.strip().splitlines()[-1]
    assert f"{version} against the champion {champion}" in flat(result.output)
    stored = json.loads((registry / "comparisons" / f"{version}.json").read_text())
    assert stored["against"] == champion and stored["candidate"]["version"] == version
    table = runner.invoke(cli, ["train", "--table", str(tmp_path / "t.csv"), "--target", "y", "--policy", "p.yaml"])
    assert table.exit_code == 2 and "--policy goes with --data" in flat(table.output)


class TestOptimiser:
    def test_the_widest_refer_band_that_keeps_the_straight_through_target(self, champion_oot: tuple,
                                                                         policy: Policy) -> None:
        engine, raw, y = champion_oot
        d = decide_all(engine, raw, policy)
        result = optimise(d, y, policy, Targets(straight_through=0.95))
        p = result["proposed"]
        assert p["approve_min_score"] == policy.spec.cut_offs.approve_min_score  # no risk target: kept
        assert p["straight_through"] >= 0.95
        wider = decisions_at(d, p["approve_min_score"], p["refer_min_score"] - 1)
        assert 1 - (wider == REFER).mean() < 0.95 or p["refer_min_score"] - 1 < d.score.min()
        assert result["current"]["straight_through"] == pytest.approx(1 - (d.decision == REFER).mean())

    def test_the_lowest_approve_cut_off_within_the_bad_rate(self, champion_oot: tuple, policy: Policy) -> None:
        engine, raw, y = champion_oot
        d = decide_all(engine, raw, policy)
        target = float(d.pd[d.decision == APPROVE].mean())  # what the policy's own approve cut-off gives
        p = optimise(d, y, policy, Targets(max_bad_rate=target))["proposed"]
        assert p["approved_expected_bad_rate"] <= target
        assert p["approve_min_score"] <= policy.spec.cut_offs.approve_min_score
        for lower in np.arange(np.floor(d.score.min()), p["approve_min_score"]):
            approved = decisions_at(d, lower, lower) == APPROVE
            assert d.pd[approved].mean() > target, lower

    def test_an_unreachable_bad_rate_is_refused(self, champion_oot: tuple, policy: Policy) -> None:
        engine, raw, y = champion_oot
        with pytest.raises(ValueError, match="no approve cut-off keeps the expected bad rate"):
            optimise(decide_all(engine, raw, policy), y, policy, Targets(max_bad_rate=1e-9))

    def test_the_command_writes_a_policy_for_review_and_the_chart(self, champion_registry: Path,
                                                                  small_dir: Path, tmp_path: Path) -> None:
        out, report = tmp_path / "proposed.yaml", tmp_path / "cutoffs.html"
        args = ["policy", "optimise", "--data", str(small_dir), "--registry", str(champion_registry),
                "--out", str(out), "--report", str(report), "--version", "1.1.0"]
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
        text = out.read_text()
        proposed = Policy.from_yaml(text)
        assert proposed.spec.version == "1.1.0"
        assert "# Knock-outs: a rule on a missing feature never fires." in text  # the lender's comments kept
        original = load_policy(DEFAULT_POLICY)
        assert proposed.spec.knock_outs == original.spec.knock_outs and proposed.spec.limit == original.spec.limit
        assert proposed.spec.cut_offs.refer_min_score > original.spec.cut_offs.refer_min_score  # a narrower band
        html = report.read_text()
        assert "<svg" in html and "approve cut-off (score points)" in html and "proposed" in html
        again = runner.invoke(cli, args)
        assert again.exit_code == 2 and "exists; pass --force" in flat(again.output)

    @pytest.mark.parametrize(("extra", "message"), [
        (["--straight-through", "1.5"], "--straight-through: must be a share between 0 and 1"),
        (["--max-bad-rate", "0"], "--max-bad-rate: must be a share between 0 and 1"),
        (["--max-bad-rate", "0.02", "--approval-rate", "0.6"], "give one target for the approve cut-off"),
        (["--max-bad-rate", "0.000001"], "no approve cut-off keeps the expected bad rate"),
        (["--model", "m000000000000"], "m000000000000"),
    ])
    def test_bad_options_are_named(self, champion_registry: Path, small_dir: Path, tmp_path: Path,
                                   extra: list[str], message: str) -> None:
        out = tmp_path / "p.yaml"
        result = runner.invoke(cli, ["policy", "optimise", "--data", str(small_dir), "--registry",
                                     str(champion_registry), "--out", str(out), *extra])
        assert result.exit_code == 2, result.output
        assert message in flat(result.output)
        assert not out.exists()  # nothing half-written


def test_data_without_the_test_period_is_a_clear_error(champion_oot: tuple, tiny_dir: Path) -> None:
    engine, _, _ = champion_oot
    raw = load_folder(tiny_dir)
    metadata = {**engine.bundle.metadata, "training": {"split": {"test_from": "2999-01-01"}}}
    with pytest.raises(CompareError, match="no application with an outcome from 2999-01-01 on"):
        out_of_time(raw, engine.version, metadata)
