"""Fitting: the LightGBM PD model (deterministic, monotone, early-stopped), Platt calibration, tuning."""

from __future__ import annotations

import logging
import warnings
from typing import Protocol

import lightgbm as lgb
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from service.scoring.score import Calibration
from training.config import LightGBMConfig

log = logging.getLogger(__name__)


def lgb_params(cfg: LightGBMConfig, *, seed: int, monotone: list[int]) -> dict:
    """LightGBM parameters; ``deterministic`` and ``force_row_wise`` make the model file reproducible."""
    return {
        "objective": "binary", "metric": "auc", "learning_rate": cfg.learning_rate, "num_leaves": cfg.num_leaves,
        "max_depth": cfg.max_depth, "min_data_in_leaf": cfg.min_data_in_leaf,
        "feature_fraction": cfg.feature_fraction, "bagging_fraction": cfg.bagging_fraction,
        "bagging_freq": cfg.bagging_freq, "lambda_l2": cfg.lambda_l2, "monotone_constraints": monotone,
        # "advanced" was measured to break constraints (175 violations on synthetic data, LightGBM 4.7);
        # "intermediate" holds them and loses nothing in AUC here.
        "monotone_constraints_method": "intermediate", "num_threads": cfg.num_threads, "seed": seed,
        "deterministic": True, "force_row_wise": True, "verbose": -1,
        "max_cat_to_onehot": cfg.max_cat_to_onehot, "cat_smooth": cfg.cat_smooth, "cat_l2": cfg.cat_l2,
        "min_data_per_group": cfg.min_data_per_group,
    }


def fit_lightgbm(cfg: LightGBMConfig, X: np.ndarray, y: np.ndarray, X_valid: np.ndarray, y_valid: np.ndarray, *,
                 names: tuple[str, ...], categorical: list[int], monotone: list[int], seed: int) -> lgb.Booster:
    def dataset(features: np.ndarray, labels: np.ndarray, reference: lgb.Dataset | None = None) -> lgb.Dataset:
        return lgb.Dataset(features, labels, feature_name=list(names), categorical_feature=categorical,
                           reference=reference, free_raw_data=False, params={"verbose": -1})

    train = dataset(X, y)
    valid = dataset(X_valid, y_valid, reference=train)
    booster = lgb.train(lgb_params(cfg, seed=seed, monotone=monotone), train, num_boost_round=cfg.num_boost_round,
                        valid_sets=[valid], valid_names=["valid"],
                        callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)])
    log.info("LightGBM: %d trees, validation AUC %.4f", booster.best_iteration or booster.current_iteration(),
             booster.best_score["valid"]["auc"])
    return booster


class Fitter(Protocol):
    """How the PD model is fitted: ``fit_lightgbm`` here, or ``fit_lightgbm_dask`` bound to a Dask client."""

    def __call__(self, cfg: LightGBMConfig, X: np.ndarray, y: np.ndarray, X_valid: np.ndarray,
                 y_valid: np.ndarray, *, names: tuple[str, ...], categorical: list[int], monotone: list[int],
                 seed: int) -> lgb.Booster: ...


def fit_lightgbm_dask(cfg: LightGBMConfig, X: np.ndarray, y: np.ndarray, X_valid: np.ndarray, y_valid: np.ndarray,
                      *, names: tuple[str, ...], categorical: list[int], monotone: list[int], seed: int,
                      client) -> lgb.Booster:  # noqa: ANN001 - a dask.distributed.Client
    """The same model fitted data-parallel on the workers of ``client`` (``lightgbm.dask``): the training rows
    are split into one partition per worker, each worker bins and histograms its own, and LightGBM's network
    sums the histograms. Distributed LightGBM has no early stopping over the whole validation part (each worker
    would see its own share), so every round is trained and the best iteration is then chosen here by the
    rule of ``lgb.early_stopping``: validation AUC, stop after ``early_stopping_rounds`` without a gain."""
    import dask.array as da
    from lightgbm.dask import DaskLGBMClassifier

    params = lgb_params(cfg, seed=seed, monotone=monotone)
    sklearn_names = {"num_leaves": "num_leaves", "max_depth": "max_depth", "learning_rate": "learning_rate",
                     "min_data_in_leaf": "min_child_samples", "feature_fraction": "colsample_bytree",
                     "bagging_fraction": "subsample", "bagging_freq": "subsample_freq", "lambda_l2": "reg_lambda",
                     "seed": "random_state"}
    kwargs = {sklearn_names.get(k, k): v for k, v in params.items() if k not in ("num_threads", "metric")}
    workers = len(client.scheduler_info()["workers"])
    edges = np.linspace(0, len(y), workers + 1).astype(int)
    X_parts = client.scatter([X[a:b] for a, b in zip(edges[:-1], edges[1:], strict=True)])
    y_parts = client.scatter([y[a:b] for a, b in zip(edges[:-1], edges[1:], strict=True)])
    X_dask = da.concatenate([da.from_delayed(f, shape=(b - a, X.shape[1]), dtype=X.dtype)
                             for f, a, b in zip(X_parts, edges[:-1], edges[1:], strict=True)])
    y_dask = da.concatenate([da.from_delayed(f, shape=(b - a,), dtype=y.dtype)
                             for f, a, b in zip(y_parts, edges[:-1], edges[1:], strict=True)])
    model = DaskLGBMClassifier(client=client, n_estimators=cfg.num_boost_round, **kwargs)
    with warnings.catch_warnings():  # each worker's threads are its Dask threads: LightGBM says so, rightly
        warnings.filterwarnings("ignore", "Parameter n_jobs will be ignored", UserWarning)
        model.fit(X_dask, y_dask, feature_name=list(names), categorical_feature=categorical)
    booster = model.booster_
    booster.best_iteration = _early_stopped(booster, X_valid, y_valid, cfg.early_stopping_rounds)
    log.info("LightGBM on %d Dask workers: %d rounds, best %d", workers, booster.current_iteration(),
             booster.best_iteration)
    return booster


def _early_stopped(booster: lgb.Booster, X_valid: np.ndarray, y_valid: np.ndarray, patience: int) -> int:
    """The iteration ``lgb.early_stopping`` would keep: the first best validation AUC, looking no further than
    ``patience`` rounds past it."""
    margin = np.zeros(len(y_valid))
    best_auc, best = -np.inf, 0
    for k in range(booster.current_iteration()):
        margin += booster.predict(X_valid, raw_score=True, start_iteration=k, num_iteration=1)
        auc = roc_auc_score(y_valid, margin)
        if auc > best_auc:
            best_auc, best = auc, k + 1
        elif k + 1 - best >= patience:
            break
    return best


def model_text(booster: lgb.Booster) -> str:
    """The model as LightGBM text, trimmed to the best iteration; the bytes are reproducible."""
    return booster.model_to_string(num_iteration=booster.best_iteration or None)


def fit_platt(margin: np.ndarray, y: np.ndarray) -> Calibration:
    """logit(PD) = slope * margin + intercept, fitted on held-out data (practically unpenalised)."""
    lr = LogisticRegression(C=1e6, max_iter=1000)
    lr.fit(margin.reshape(-1, 1), y)
    return Calibration(slope=float(lr.coef_[0, 0]), intercept=float(lr.intercept_[0]))


def tune(cfg: LightGBMConfig, trials: int, X: np.ndarray, y: np.ndarray, X_valid: np.ndarray, y_valid: np.ndarray,
         *, names: tuple[str, ...], categorical: list[int], monotone: list[int], seed: int,
         fit: Fitter = fit_lightgbm) -> LightGBMConfig:
    """Optuna TPE search (seeded) over the shape and regularisation; returns the best config."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: optuna.Trial) -> float:
        trial_cfg = cfg.model_copy(update={
            "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.15, log=True),
            "num_leaves": trial.suggest_int("num_leaves", 4, 31),
            "max_depth": trial.suggest_int("max_depth", 3, 7),
            "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 20, 300, log=True),
            "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
            "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 30, log=True),
        })
        booster = fit(trial_cfg, X, y, X_valid, y_valid, names=names, categorical=categorical, monotone=monotone,
                      seed=seed)
        return float(roc_auc_score(y_valid, booster.predict(X_valid, num_iteration=booster.best_iteration)))

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    log.info("tuning: best validation AUC %.4f after %d trials: %s", study.best_value, trials, study.best_params)
    return cfg.model_copy(update=study.best_params)
