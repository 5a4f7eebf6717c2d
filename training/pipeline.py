"""The training pipeline, wired in one place: split -> fit -> calibrate -> evaluate -> card -> bundle.

Each step is a plain function; ``train`` runs them in order on a ``TrainingSet`` (from a data folder or a
user's table) and registers the bundle. With dates the evaluation is out of time (train, validation, test);
without, it is stratified 5-fold cross-validation and the "oot" metrics are out-of-fold.
"""

from __future__ import annotations

import logging
import platform
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import sklearn
from sklearn.metrics import roc_auc_score

from service.monitoring import drift
from service.scoring.bundle import (
    CARD_FILES,
    METADATA_FILE,
    MODEL_FILE,
    Canary,
    canonical_json,
    sha256_bytes,
    stable_numbers,
    version_of,
)
from service.scoring.catalog import FEATURE_CODE_VERSION
from service.scoring.explain import group_points_matrix
from service.scoring.raw import MONTHLY_SOURCES
from service.scoring.registry import Registry
from service.scoring.score import Calibration, Grades, Scaling, Scorer
from training import evaluate as ev
from training.card import render_card
from training.config import TrainConfig
from training.dataset import TrainingSet, industry_medians
from training.fit import Fitter, fit_lightgbm, fit_platt, lgb_params, model_text, tune
from training.scorecard import FittedScorecard, fit_scorecard
from training.shapes import (
    INNER_FOLDS,
    Candidate,
    Choice,
    choose_by_cross_validation,
    configured,
    describe,
    leaves_of,
    table_candidates,
)

log = logging.getLogger(__name__)
MIN_PART = 200  # rows in each of train / validation / test
MIN_DEFAULTS = 10  # defaults in each part
CV_FOLDS = 5
CANARY_ROWS = 4  # real rows stored with their expected outputs, plus one row with every feature missing

Step = Callable[[str], None]


@dataclass(frozen=True)
class Split:
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    description: dict


def out_of_time_split(ts: TrainingSet, cfg: TrainConfig) -> Split:
    """Train before valid_from, validate up to test_from, test after; dates from the config or by share."""
    assert ts.dates is not None
    d = ts.dates.astype("datetime64[D]")
    if cfg.split.valid_from is not None and cfg.split.test_from is not None:
        valid_from, test_from = np.datetime64(cfg.split.valid_from), np.datetime64(cfg.split.test_from)
    else:
        order = np.sort(d)
        valid_from = order[int(len(d) * (1 - cfg.split.test_share - cfg.split.valid_share))]
        test_from = order[int(len(d) * (1 - cfg.split.test_share))]
    parts = {"train": d < valid_from, "valid": (d >= valid_from) & (d < test_from), "test": d >= test_from}
    for name, mask in parts.items():
        n, bad = int(mask.sum()), int(ts.y[mask].sum())
        if n < MIN_PART or bad < MIN_DEFAULTS or n - bad < MIN_DEFAULTS:
            raise ValueError(f"split: the {name} part ({name} dates from {valid_from} / {test_from}) has {n} rows "
                             f"and {bad} defaults; need at least {MIN_PART} rows and {MIN_DEFAULTS} of each class. "
                             "Adjust split.valid_from / split.test_from in the config.")
    desc = {"method": "out_of_time", "valid_from": str(valid_from), "test_from": str(test_from),
            "first_date": str(d.min()), "last_date": str(d.max())}
    desc |= {f"{k}_rows": int(v.sum()) for k, v in parts.items()}
    desc |= {f"{k}_default_rate": float(ts.y[v].mean()) for k, v in parts.items()}
    return Split(*(np.flatnonzero(parts[k]) for k in ("train", "valid", "test")), description=desc)


def masked_rows(ts: TrainingSet, train: np.ndarray, rate: float, seed: int) -> dict[str, np.ndarray]:
    """Per source, the training rows that also train with it withheld: a seeded share of those that had it."""
    rng = np.random.default_rng(seed)
    picks = {}
    for source in ts.withheld.sources if ts.withheld is not None and rate else ():
        had = train[ts.sources_used[train, MONTHLY_SOURCES.index(source)]]
        picks[source] = np.sort(rng.choice(had, size=int(rate * len(had)), replace=False))
    return picks


def robustness_rows(ts: TrainingSet, test: np.ndarray) -> dict[str, np.ndarray]:
    """Per source, the test rows that had it: the robustness check scores them again without it."""
    sources = ts.withheld.sources if ts.withheld is not None else ()
    return {source: test[ts.sources_used[test, MONTHLY_SOURCES.index(source)]] for source in sources}


def augment_with_withheld_sources(ts: TrainingSet, train: np.ndarray, rate: float,
                                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training rows plus, per source, a share of the rows that had it, recomputed with it withheld."""
    picks = masked_rows(ts, train, rate, seed)
    if not picks:
        return ts.X[train], ts.y[train]
    blocks, labels = [ts.X[train]], [ts.y[train]]
    for source, pick in picks.items():
        blocks.append(ts.withheld.take(source, pick))
        labels.append(ts.y[pick])
    X, y = np.vstack(blocks), np.concatenate(labels)
    log.info("source masking: %d training rows + %d with one source withheld", len(train), len(X) - len(train))
    return X, y


def prepare_withheld(ts: TrainingSet, cfg: TrainConfig, split: Split) -> None:
    """Build, in one read of the data, every withheld-source row the fit and the evaluation will ask for."""
    if ts.withheld is None:
        return
    wanted = robustness_rows(ts, split.test)
    for source, pick in masked_rows(ts, split.train, cfg.source_masking_rate, cfg.seed).items():
        wanted[source] = np.union1d(wanted[source], pick)
    ts.withheld.prepare(wanted)
    log.info("withheld sources: %d rows recomputed (of %d x %d)", sum(len(r) for r in wanted.values()),
             len(ts.y), len(wanted))


def _fit(ts: TrainingSet, cfg: TrainConfig, lgb_cfg, train: np.ndarray, valid: np.ndarray,
         fit: Fitter = fit_lightgbm) -> lgb.Booster:
    X, y = augment_with_withheld_sources(ts, train, cfg.source_masking_rate, cfg.seed)
    return fit(lgb_cfg, X, y, ts.X[valid], ts.y[valid], names=ts.internal_names, categorical=ts.categorical,
               monotone=ts.monotone, seed=cfg.seed)


def _margin(booster: lgb.Booster, X: np.ndarray) -> np.ndarray:
    return booster.predict(X, raw_score=True, num_iteration=booster.best_iteration or None)


@dataclass
class Fitted:
    booster: lgb.Booster
    calibration: Calibration
    test_rows: np.ndarray  # rows evaluated (test part, or every row out-of-fold)
    test_margin: np.ndarray
    valid_rows: np.ndarray
    valid_margin: np.ndarray
    train_rows: np.ndarray
    challenger_test_pd: np.ndarray
    challenger: FittedScorecard  # the optbinning scorecard, on the same rows; registered with --model scorecard
    challenger_calibration: Calibration  # Platt on its validation margin, as the LightGBM model's
    split: dict
    lgb_cfg: object
    shape: dict  # the candidate shapes, their validation AUC and explanation cost, and the one chosen


def candidates_for(ts: TrainingSet, cfg: TrainConfig, tune_trials: int, train: np.ndarray, valid: np.ndarray,
                   fit: Fitter = fit_lightgbm) -> list[Candidate]:
    """The shapes to choose from: Optuna's best after ``tune_trials`` (on ``train`` / ``valid``), else the grid
    for a table, else the configured shape (the catalogue model, whose shape was measured: docs/training.md)."""
    if tune_trials:
        X, y = augment_with_withheld_sources(ts, train, cfg.source_masking_rate, cfg.seed)
        return [Candidate("tuned", tune(cfg.lightgbm, tune_trials, X, y, ts.X[valid], ts.y[valid],
                                        names=ts.internal_names, categorical=ts.categorical, monotone=ts.monotone,
                                        seed=cfg.seed, fit=fit))]
    if ts.kind == "table":
        return table_candidates(cfg.lightgbm, len(train))
    return configured(cfg.lightgbm)


def _shape_report(method: str, chosen: str, candidates: list[dict], selected_on: str, **more: object) -> dict:
    return {"method": method, "chosen": chosen, "selected_on": selected_on, "candidates": candidates} | more


def _method(tune_trials: int, candidates: list) -> str:
    return f"optuna ({tune_trials} trials)" if tune_trials else "grid" if len(candidates) > 1 else "configured"


def fit_out_of_time(ts: TrainingSet, cfg: TrainConfig, tune_trials: int, fit: Fitter = fit_lightgbm) -> Fitted:
    split = out_of_time_split(ts, cfg)
    prepare_withheld(ts, cfg, split)
    candidates = candidates_for(ts, cfg, tune_trials, split.train, split.valid, fit)
    fitted = [_fit(ts, cfg, c.cfg, split.train, split.valid, fit) for c in candidates]
    valid_auc = [float(roc_auc_score(ts.y[split.valid], _margin(b, ts.X[split.valid]))) for b in fitted]
    best = int(np.argmax(valid_auc))  # ties: the first, the simplest shape
    booster = fitted[best]
    described = [describe(c, auc, b, b.best_iteration or b.current_iteration())
                 for c, auc, b in zip(candidates, valid_auc, fitted, strict=True)]
    shape = _shape_report(_method(tune_trials, candidates), candidates[best].name, described,
                          "the validation period (early stopping on it too)")
    valid_margin = _margin(booster, ts.X[split.valid])
    calibration = fit_platt(valid_margin, ts.y[split.valid])
    challenger = _fit_challenger(ts, cfg, split.train)
    challenger_calibration = fit_platt(challenger.model.margin(ts.X[split.valid]), ts.y[split.valid])
    return Fitted(booster, calibration, split.test, _margin(booster, ts.X[split.test]), split.valid, valid_margin,
                  split.train, challenger_calibration.pd(challenger.model.margin(ts.X[split.test])), challenger,
                  challenger_calibration, split.description, candidates[best].cfg, shape)


def _fit_challenger(ts: TrainingSet, cfg: TrainConfig, rows: np.ndarray) -> FittedScorecard:
    """The scorecard on exactly the rows the LightGBM model fits on (withheld-source copies included)."""
    X, y = augment_with_withheld_sources(ts, rows, cfg.source_masking_rate, cfg.seed)
    return fit_scorecard(X, y, ts.features, max_bins=cfg.challenger_bins, seed=cfg.seed)


def cv_folds(y: np.ndarray, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The outer folds of a table without dates: (training rows, out-of-fold rows). Public so that a benchmark
    can score another model on exactly the same folds."""
    from sklearn.model_selection import StratifiedKFold

    folds = StratifiedKFold(n_splits=CV_FOLDS, shuffle=True, random_state=seed)
    return list(folds.split(np.zeros(len(y)), y))


def _choose_in(ts: TrainingSet, cfg: TrainConfig, tune_trials: int, rows: np.ndarray, seed: int) -> Choice:
    """The shape and number of trees for a model trained on ``rows``, chosen using those rows only."""
    from sklearn.model_selection import train_test_split

    if tune_trials:
        tr, va = train_test_split(rows, test_size=0.25, stratify=ts.y[rows], random_state=seed)
        candidates = candidates_for(ts, cfg, tune_trials, np.sort(tr), np.sort(va))
    else:
        candidates = candidates_for(ts, cfg, 0, rows, rows)
    return choose_by_cross_validation(candidates, ts.X[rows], ts.y[rows], names=ts.internal_names,
                                      categorical=ts.categorical, monotone=ts.monotone, seed=seed)


def _train_rounds(ts: TrainingSet, cfg: TrainConfig, lgb_cfg, rows: np.ndarray) -> lgb.Booster:
    X, y = augment_with_withheld_sources(ts, rows, cfg.source_masking_rate, cfg.seed)
    return lgb.train(lgb_params(lgb_cfg, seed=cfg.seed, monotone=ts.monotone),
                     lgb.Dataset(X, y, feature_name=list(ts.internal_names), categorical_feature=ts.categorical,
                                 params={"verbose": -1}), num_boost_round=lgb_cfg.num_boost_round)


def fit_cross_validated(ts: TrainingSet, cfg: TrainConfig, tune_trials: int,
                        fit: Fitter = fit_lightgbm) -> Fitted:  # noqa: ARG001 - one signature for both paths
    """No dates: nested cross-validation. Each outer fold chooses its shape and number of trees by inner
    cross-validation on its own training rows, so the out-of-fold predictions, which evaluate and calibrate,
    never saw their rows; the final model is the same procedure run on every row."""
    n = len(ts.y)
    if n < 5 * MIN_DEFAULTS or ts.y.sum() < CV_FOLDS * 2:
        raise ValueError(f"cross-validation needs more data: {n} rows, {int(ts.y.sum())} positives")
    oof = np.empty(n)
    oof_challenger = np.empty(n)
    rounds, shapes = [], []
    for k, (rest, test) in enumerate(cv_folds(ts.y, cfg.seed)):
        choice = _choose_in(ts, cfg, tune_trials, rest, cfg.seed + k)
        rounds.append(choice.cfg.num_boost_round)
        shapes.append(choice.name)
        oof[test] = _margin(_train_rounds(ts, cfg, choice.cfg, rest), ts.X[test])
        oof_challenger[test] = _fit_challenger(ts, cfg, rest).model.margin(ts.X[test])
    everything = np.arange(n)
    final = _choose_in(ts, cfg, tune_trials, everything, cfg.seed)
    booster = _train_rounds(ts, cfg, final.cfg, everything)
    log.info("cross-validation: %d folds, shapes %s, trees %s; final model %s, %d trees on all %d rows", CV_FOLDS,
             shapes, rounds, final.name, final.cfg.num_boost_round, n)
    calibration = fit_platt(oof, ts.y)
    challenger = _fit_challenger(ts, cfg, everything)
    challenger_calibration = fit_platt(oof_challenger, ts.y)  # out-of-fold margins, as the LightGBM model's
    desc = {"method": "stratified_cross_validation", "folds": CV_FOLDS, "rows": n,
            "default_rate": float(ts.y.mean()), "fold_rounds": rounds, "fold_shapes": shapes}
    shape = _shape_report(_method(tune_trials, final.candidates), final.name, final.candidates,
                          f"{INNER_FOLDS}-fold cross-validation inside each of the {CV_FOLDS} outer folds, and on "
                          "every row for the final model", fold_choices=shapes)
    return Fitted(booster, calibration, everything, oof, everything, oof, everything,
                  challenger_calibration.pd(oof_challenger), challenger, challenger_calibration, desc, final.cfg, shape)


def evaluate(ts: TrainingSet, cfg: TrainConfig, f: Fitted, scorer: Scorer) -> dict:
    """Every number of the report: the model and challenger on the test part, stability, segments, fairness."""
    y_test = ts.y[f.test_rows]
    pd_test = scorer.calibration.pd(f.test_margin)
    report: dict = {
        "oot": ev.binary_metrics(y_test, pd_test),
        "valid": ev.binary_metrics(ts.y[f.valid_rows], scorer.calibration.pd(f.valid_margin)),
        "challenger_oot": ev.binary_metrics(y_test, f.challenger_test_pd),
    }
    report["champion_beats_challenger"] = report["oot"]["auc"] > report["challenger_oot"]["auc"]
    reference = _reference(ts, f, scorer)
    test_score = scorer.scaling.score(scorer.calibration.logit(f.test_margin))
    report["psi"] = {
        "score": ev.psi_between(reference, drift.subject_key("score", "score"), test_score),
        "features": {name: ev.psi_between(reference, drift.subject_key("feature", name), ts.X[f.test_rows][:, j])
                     for j, name in enumerate(ts.names)},
    } if ts.dates is not None else {"note": "no dates: cross-validation has no time shift to measure"}
    report["monotone"] = ev.monotone_check(lambda X: _margin(f.booster, X), ts.X[f.test_rows], ts.names,
                                           ts.monotone, seed=cfg.seed)
    report["monotone_all_held"] = all(m["held"] for m in report["monotone"])
    cutoff = approval_cutoff(ts, cfg, pd_test)
    report["approval_cutoff"] = cutoff
    approved = pd_test < cutoff["pd"]
    report["segments"] = {name: ev.by_group(groups[f.test_rows], y_test, pd_test, approved)
                          for name, groups in ts.segments.items()}
    report["fairness"] = {name: ev.fairness(groups[f.test_rows], y_test, pd_test, cutoff["pd"],
                                            cfg.fairness_min_ratio) for name, groups in ts.fairness_groups.items()}
    report["robustness"] = _robustness(ts, f, scorer)
    report["curves"] = _curves(y_test, pd_test, f.challenger_test_pd, test_score)
    report["reference"] = reference.to_json()
    return report


def approval_cutoff(ts: TrainingSet, cfg: TrainConfig, pd: np.ndarray) -> dict:
    """The PD under which approval rates are compared: the configured one for the catalogue model (SME default
    rates of a few percent); for a table, whose default rate may be 30%, the PD that approves as many applicants
    as repaid, since a 5% cut-off would approve almost nobody there and make every ratio noise."""
    if ts.kind == "catalog":
        return {"pd": cfg.approval_pd_cutoff, "rule": "the configured approval_pd_cutoff"}
    share = 1 - float(ts.y.mean())
    return {"pd": float(np.quantile(pd, share)), "rule": f"the PD that approves {share:.0%} of applicants, the "
                                                         "share that repaid"}


def _reference(ts: TrainingSet, f: Fitted, scorer: Scorer,
               contributions: Callable[[np.ndarray], np.ndarray] | None = None) -> drift.ReferenceSet:
    """Drift references on the training rows, from the contributions the engine computes (exact TreeSHAP, or
    ``contributions``: the scorecard's): score, PD, features and (catalogue models) reason-group points, per
    region and industry and per season."""
    X = ts.X[f.train_rows]
    contrib = contributions(X) if contributions is not None else \
        f.booster.predict(X, pred_contrib=True, num_iteration=f.booster.best_iteration or None)
    margin = contrib.sum(axis=1)
    groups = group_points_matrix(ts.names, X, contrib[:, :-1] * scorer.points_per_margin) \
        if ts.kind == "catalog" else None
    segments = {d: ts.segments[d][f.train_rows] for d in drift.SEGMENT_DIMENSIONS if d in ts.segments}
    return ev.drift_reference(X, ts.features, pd=scorer.calibration.pd(margin),
                              score=scorer.scaling.score(scorer.calibration.logit(margin)), groups=groups,
                              dates=None if ts.dates is None else ts.dates[f.train_rows], segments=segments)


def _curves(y: np.ndarray, pd: np.ndarray, challenger_pd: np.ndarray, score: np.ndarray) -> dict:
    """What the card draws, reduced to a few hundred numbers so the card is data, not arrays."""
    from sklearn.metrics import roc_curve

    def roc(p: np.ndarray) -> dict:
        fpr, tpr, _ = roc_curve(y, p)
        keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), 200)).astype(int))
        return {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist()}

    edges = np.linspace(np.floor(score.min() / 10) * 10, np.ceil(score.max() / 10) * 10 + 10, 31)
    return {"roc": roc(pd), "challenger_roc": roc(challenger_pd),
            "score_hist": {"edges": edges.tolist(), "good": np.histogram(score[y == 0], edges)[0].tolist(),
                           "bad": np.histogram(score[y == 1], edges)[0].tolist()}}


def _robustness(ts: TrainingSet, f: Fitted, scorer: Scorer) -> list[dict]:
    """PD on the test part with each source withheld, among applicants who had it: does it stay sensible?"""
    out = []
    for source, rows in robustness_rows(ts, f.test_rows).items():
        y = ts.y[rows]
        with_pd = scorer.calibration.pd(_margin(f.booster, ts.X[rows]))
        without_pd = scorer.calibration.pd(_margin(f.booster, ts.withheld.take(source, rows)))
        out.append({"source": source, "rows": int(len(rows)), "observed_default_rate": float(y.mean()),
                    "mean_pd_with": float(with_pd.mean()), "mean_pd_without": float(without_pd.mean()),
                    "auc_with": ev.auc_or_none(y, with_pd), "auc_without": ev.auc_or_none(y, without_pd)})
    return out


def shap_importance(ts: TrainingSet, f: Fitted, rows: int = 1000) -> dict:
    """Global importance from exact TreeSHAP (LightGBM pred_contrib), cross-checked with the shap package."""
    sample = ts.X[f.test_rows[: min(rows, len(f.test_rows))]]
    contrib = f.booster.predict(sample, pred_contrib=True, num_iteration=f.booster.best_iteration or None)
    importance = np.abs(contrib[:, :-1]).mean(axis=0)
    check: dict = {"rows": int(len(sample))}
    try:
        import shap

        with warnings.catch_warnings():  # shap warns that its LightGBM output format changed; we handle both
            warnings.simplefilter("ignore", UserWarning)
            values = shap.TreeExplainer(f.booster).shap_values(sample)
        values = values[1] if isinstance(values, list) else values
        check["max_abs_difference"] = float(np.abs(values - contrib[:, :-1]).max())
    except Exception as exc:  # noqa: BLE001 - the cross-check is advisory; its failure is reported, not fatal
        check["error"] = f"{type(exc).__name__}: {exc}"
    order = np.argsort(-importance)
    return {"mean_abs_contribution": {ts.names[j]: float(importance[j]) for j in order},
            "base_value": float(contrib[0, -1]), "shap_cross_check": check}


@dataclass(frozen=True)
class TrainResult:
    version: str
    created: bool
    metadata: dict
    card: dict


MODELS = ("lightgbm", "scorecard")  # what a training run registers (--model)


def train(ts: TrainingSet, cfg: TrainConfig, registry: Registry, *, tune_trials: int = 0,
          step: Step = log.info, fit: Fitter = fit_lightgbm, model: str = "lightgbm") -> TrainResult:
    """``fit`` trains the LightGBM model: ``fit_lightgbm`` in this process, or ``fit_lightgbm_dask`` (bound
    to a client) data-parallel on a Dask cluster; the rest of the pipeline is the same either way. Both models
    are fitted and compared; ``model`` says which one is registered: the LightGBM bundle, or the scorecard's
    (training/scorecard_bundle.py)."""
    if model not in MODELS:
        raise ValueError(f"--model: unknown model {model!r}; one of {', '.join(MODELS)}")
    step("fitting LightGBM and the challenger")
    fitted = fit_out_of_time(ts, cfg, tune_trials, fit) if ts.dates is not None else fit_cross_validated(
        ts, cfg, tune_trials, fit)
    scaling = Scaling(base_score=cfg.scaling.base_score, base_odds=cfg.scaling.base_odds, pdo=cfg.scaling.pdo)
    scorer = Scorer(fitted.calibration, scaling, Grades.from_json([g.model_dump() for g in cfg.grades]))
    step("evaluating")
    report = evaluate(ts, cfg, fitted, scorer)
    report["importance"] = shap_importance(ts, fitted)
    if model == "scorecard":
        return _register_scorecard(ts, cfg, fitted, scorer, report, registry, step)
    text = model_text(fitted.booster)
    metadata = build_metadata(ts, cfg, fitted, scorer, report, canary_rows(ts, text))
    step("writing the model card")
    version = version_of(sha256_bytes(text.encode("utf-8")), sha256_bytes(canonical_json(metadata)))
    card_json, card_html = render_card(version, metadata, report)
    files = {MODEL_FILE: text.encode("utf-8"), METADATA_FILE: canonical_json(metadata),
             CARD_FILES[0]: card_html.encode("utf-8"), CARD_FILES[1]: canonical_json(card_json)}
    version, created = registry.register(files)
    log.info("bundle %s %s in %s", version, "registered" if created else "already registered (same content)",
             registry.root)
    return TrainResult(version, created, metadata, card_json)


def _register_scorecard(ts: TrainingSet, cfg: TrainConfig, f: Fitted, lightgbm_scorer: Scorer, report: dict,
                        registry: Registry, step: Step) -> TrainResult:
    from training.scorecard_bundle import scorecard_files

    step("writing the scorecard bundle")
    scorer = Scorer(f.challenger_calibration, lightgbm_scorer.scaling, lightgbm_scorer.grades)
    reference = _reference(ts, f, scorer, f.challenger.model.contributions).to_json()
    common = common_metadata(ts, cfg)
    common["libraries"] |= {"optbinning": _version_of("optbinning")}
    files, metadata, card = scorecard_files(ts, cfg, f, scorer, report, reference, common)
    version, created = registry.register(files)
    log.info("scorecard %s %s in %s", version, "registered" if created else "already registered", registry.root)
    return TrainResult(version, created, metadata, card)


def _version_of(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def canary_rows(ts: TrainingSet, text: str) -> Canary:
    """Evenly spaced training rows and an all-missing row, with what the model text computes for them: the
    service refuses a bundle that does not reproduce them (checked in a child process, see bundle.py)."""
    idx = np.unique(np.linspace(0, len(ts.y) - 1, CANARY_ROWS).astype(int))
    rows = np.vstack([ts.X[idx], np.full((1, ts.X.shape[1]), np.nan)])
    return Canary.compute(text, rows)


def build_metadata(ts: TrainingSet, cfg: TrainConfig, f: Fitted, scorer: Scorer, report: dict,
                   canary: Canary) -> dict:
    drop = {"calibration_by_decile"}
    metrics = {k: {m: v for m, v in report[k].items() if m not in drop} for k in ("oot", "valid", "challenger_oot")}
    return {"canary": canary.to_json()} | stable_numbers(common_metadata(ts, cfg) | {
        "scorer": scorer.to_json(),
        "metrics": metrics,
        "reference": report["reference"],
        "training": {"trees": f.booster.best_iteration or f.booster.current_iteration(),
                     "leaves": leaves_of(model_text(f.booster)), "shape": f.shape,
                     "lightgbm": f.lgb_cfg.model_dump(), "source_masking_rate": cfg.source_masking_rate,
                     "split": f.split},
    })


def common_metadata(ts: TrainingSet, cfg: TrainConfig) -> dict:
    """The metadata a LightGBM bundle and a scorecard bundle of the same run share."""
    return {
        "kind": ts.kind,
        "target": ts.target,
        "feature_code_version": FEATURE_CODE_VERSION,
        "features": ts.features,
        "industry_medians": industry_medians(ts),
        "inputs": {"features": list(ts.names), "columns": ts.columns_read or len(ts.names),
                   "protected": [p.to_json() for p in ts.protected], "allow_protected": ts.allow_protected,
                   "excluded": list(ts.excluded)},
        "libraries": {"python": platform.python_version(), "lightgbm": lgb.__version__, "numpy": np.__version__,
                      "scikit-learn": sklearn.__version__},
        "data": ts.fingerprint,
        "config": cfg.model_dump(mode="json"),
        "seed": cfg.seed,
    }
