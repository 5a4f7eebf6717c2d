"""The fraud model: LightGBM on the catalogue features (the related-party graph ones above all), labelled by the
generator's planted fraud rings, evaluated out of time, saved as a content-versioned artifact
(service/scoring/fraud.py reads it).

Steps, each a plain function: ``fraud_set`` (features of every application of a data folder, read a piece of
whole enterprises at a time as the credit model's training does, and the ring label from
``ground_truth_rings.parquet``) -> ``time_split`` (train / validation / test by application date) -> ``fit``
(deterministic, positives weighted) -> ``choose_threshold`` (on the validation part: the lowest threshold whose
share of honest applications flagged is within the target) -> ``evaluate`` (the test part: per application and
per ring) -> ``build_artifact``. ``train_fraud`` runs them in order.

The label is ring membership of the applying enterprise, whatever its credit outcome, so every application
counts, also those too recent to have one.
"""

from __future__ import annotations

import logging
import platform
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pyarrow.parquet as pq
from sklearn.metrics import roc_auc_score

from service.batch.chunks import piece_features
from service.scoring.bundle import sha256_bytes
from service.scoring.catalog import CATALOG, FEATURE_NAMES
from service.scoring.fraud import FraudMetadata, FraudModel, publish_fraud_model, write_artifact
from service.scoring.raw import CONTRACT, find_file
from training.dataset import fingerprint_files, mapper_for
from training.pipeline import Split
from training.stream import StreamedFolder

log = logging.getLogger(__name__)
GROUND_TRUTH_FILE = "ground_truth_rings.parquet"
MIN_PART, MIN_RINGS = 200, 5  # applications in each part, and ring applications in each
CANARY_ROWS = 4  # real test rows (rings and honest) stored with their probabilities, plus an all-missing row
# The features an applicant without "links" consent has missing (every other one is unchanged)
LINK_COLUMNS = np.array([j for j, f in enumerate(CATALOG) if "links" in f.source.split("+")])


@dataclass(frozen=True)
class FraudConfig:
    seed: int = 7
    valid_share: float = 0.2  # the latest test_share of applications test, the valid_share before validate
    test_share: float = 0.2
    target_false_rejection: float = 0.02  # honest applications flagged, at most, on the validation part
    learning_rate: float = 0.05
    num_leaves: int = 15
    min_data_in_leaf: int = 20
    num_boost_round: int = 300
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    bagging_freq: int = 1
    lambda_l2: float = 1.0
    num_threads: int = 1
    # A share of the training rows trains again with the related-party features missing, as they are for an
    # applicant who did not consent to "links": without it the model learns nothing for them (AUC 0.5).
    without_links_share: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.valid_share < 0.5 or not 0 < self.test_share < 0.5:
            raise ValueError("valid_share and test_share must be in (0, 0.5)")
        if not 0 < self.target_false_rejection < 0.5:
            raise ValueError("target_false_rejection must be in (0, 0.5)")
        if not 0 <= self.without_links_share <= 1:
            raise ValueError("without_links_share must be in [0, 1]")


@dataclass(frozen=True)
class FraudSet:
    X: np.ndarray  # catalogue features, one row per application
    y: np.ndarray  # 1: the applying enterprise is in a planted ring
    dates: np.ndarray  # datetime64[D]
    ring: np.ndarray  # ring id of each application ("" for honest ones)
    fingerprint: dict


def fraud_set(folder: Path | str, *, client: object | None = None) -> FraudSet:
    """Features of every application of ``folder`` (on the workers of a Dask ``client`` when given) and their
    ring label."""
    folder = Path(folder)
    truth_path = folder / GROUND_TRUTH_FILE
    if not truth_path.is_file():
        raise ValueError(f"{folder}: no {GROUND_TRUTH_FILE}; the fraud model trains on the generator's planted "
                         "rings (smecredit synth writes them)")
    files = [p for name in CONTRACT if (p := find_file(folder, name)) is not None]
    fingerprint = fingerprint_files([*files, truth_path])
    streamed = StreamedFolder(folder)
    if streamed.graph is None:
        raise ValueError(f"{folder}: no link files, so no graph features; the fraud model needs them")
    apps = streamed.applications
    n = len(apps["application_id"])
    X = np.empty((n, len(FEATURE_NAMES)))
    for rows, (values, _used) in mapper_for(client)(streamed.pieces(), piece_features):
        X[rows] = values
    truth = pq.read_table(truth_path, columns=["enterprise_id", "ring_id"]).to_pydict()
    ring_of = dict(zip(truth["enterprise_id"], truth["ring_id"], strict=True))
    enterprise = streamed.profile["enterprise_id"][apps["enterprise_row"]]
    ring = np.array([ring_of.get(e, "") for e in enterprise], dtype=object)
    y = (ring != "").astype(np.int64)
    log.info("fraud set: %d applications, %d from %d rings", n, int(y.sum()), len(set(ring[y == 1])))
    return FraudSet(X=X, y=y, dates=apps["application_date"].astype("datetime64[D]"), ring=ring,
                    fingerprint=fingerprint)


def time_split(fs: FraudSet, cfg: FraudConfig) -> Split:
    """As the credit pipeline's ``out_of_time_split`` by shares: the latest applications test, those before
    validate, the rest train; every part needs enough applications and ring applications."""
    order = np.sort(fs.dates)
    n = len(order)
    valid_from = order[int(n * (1 - cfg.test_share - cfg.valid_share))]
    test_from = order[int(n * (1 - cfg.test_share))]
    parts = {"train": fs.dates < valid_from, "valid": (fs.dates >= valid_from) & (fs.dates < test_from),
             "test": fs.dates >= test_from}
    for name, mask in parts.items():
        rows, rings = int(mask.sum()), int(fs.y[mask].sum())
        if rows < MIN_PART or rings < MIN_RINGS:
            raise ValueError(f"fraud split: the {name} part (from {valid_from} / {test_from}) has {rows} applications "
                             f"and {rings} from rings; need at least {MIN_PART} and {MIN_RINGS}")
    desc = {"method": "out_of_time", "valid_from": str(valid_from), "test_from": str(test_from),
            "first_date": str(order[0]), "last_date": str(order[-1])}
    desc |= {f"{k}_rows": int(v.sum()) for k, v in parts.items()}
    desc |= {f"{k}_ring_rows": int(fs.y[v].sum()) for k, v in parts.items()}
    return Split(*(np.flatnonzero(parts[k]) for k in ("train", "valid", "test")), description=desc)


def lgb_params(cfg: FraudConfig, scale_pos_weight: float) -> dict:
    """Deterministic (``deterministic``, ``force_row_wise``, a seed): the same data give the same model text."""
    return {"objective": "binary", "learning_rate": cfg.learning_rate, "num_leaves": cfg.num_leaves,
            "min_data_in_leaf": cfg.min_data_in_leaf, "feature_fraction": cfg.feature_fraction,
            "bagging_fraction": cfg.bagging_fraction, "bagging_freq": cfg.bagging_freq, "lambda_l2": cfg.lambda_l2,
            "scale_pos_weight": scale_pos_weight, "num_threads": cfg.num_threads, "seed": cfg.seed,
            "deterministic": True, "force_row_wise": True, "verbose": -1}


def without_links(X: np.ndarray) -> np.ndarray:
    """``X`` as an applicant who did not consent to "links" has it: the related-party features missing."""
    X = X.copy()
    X[:, LINK_COLUMNS] = np.nan
    return X


def fit(fs: FraudSet, cfg: FraudConfig, rows: np.ndarray) -> tuple[lgb.Booster, dict]:
    """A fixed number of rounds, no early stopping: a validation part with a few dozen ring applications would
    pick the round count by noise. The rare positives weigh as much as the honest applications together."""
    again = np.sort(np.random.default_rng(cfg.seed).choice(rows, int(cfg.without_links_share * len(rows)),
                                                           replace=False))
    X, y = np.vstack([fs.X[rows], without_links(fs.X[again])]), np.concatenate([fs.y[rows], fs.y[again]])
    positives = int(y.sum())
    params = lgb_params(cfg, scale_pos_weight=(len(y) - positives) / max(positives, 1))
    categorical = [j for j, f in enumerate(CATALOG) if f.categories]
    train = lgb.Dataset(X, y, feature_name=list(FEATURE_NAMES), categorical_feature=categorical,
                        free_raw_data=False, params={"verbose": -1})
    return lgb.train(params, train, num_boost_round=cfg.num_boost_round), params


def choose_threshold(p_honest: np.ndarray, p_ring: np.ndarray, target: float) -> float:
    """Flag when p >= the threshold. The lowest threshold that flags at most ``target`` of the honest
    applications catches the most ring applications within the target; every threshold up to the lowest ring
    score above it catches the same ones, so take the middle of that range in log-odds: the fewest honest
    applications flagged for that detection, with room on both sides for the next period's scores."""
    allowed = int(np.floor(target * len(p_honest)))
    if allowed >= len(p_honest):
        return 0.0
    lowest = float(np.nextafter(np.sort(p_honest)[::-1][allowed], np.inf))  # above the first it may not flag
    caught = p_ring[p_ring >= lowest]
    if not caught.size:
        return lowest
    low, high = _logit(lowest), _logit(float(caught.min()))
    return float(min(max(_expit((low + high) / 2), lowest), caught.min()))


def _logit(p: float) -> float:
    p = min(max(p, 1e-300), 1 - 1e-16)
    return float(np.log(p) - np.log1p(-p))


def _expit(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


def evaluate(y: np.ndarray, p: np.ndarray, threshold: float, ring: np.ndarray,
             seen_rings: set[str] | None = None) -> dict:
    """Per application: detection rate (ring applications flagged), false-rejection rate (honest ones flagged),
    precision, AUC; per ring: a ring with applications here is caught when any of them is flagged; with
    ``seen_rings`` (those with training applications), also the rings the model never saw."""
    flagged = p >= threshold
    ring_rows, honest = y == 1, y == 0
    rings = sorted(set(ring[ring_rows]))
    caught = {r for r in rings if flagged[ring == r].any()}
    out = {"applications": len(y), "ring_applications": int(ring_rows.sum()), "flagged": int(flagged.sum()),
           "detection_rate": _share(flagged[ring_rows]), "false_rejection_rate": _share(flagged[honest]),
           "precision": float(flagged[ring_rows].sum() / flagged.sum()) if flagged.any() else 0.0,
           "auc": float(roc_auc_score(y, p)) if 0 < ring_rows.sum() < len(y) else None,
           "rings": len(rings), "rings_caught": len(caught), "ring_detection_rate": len(caught) / len(rings)
           if rings else 0.0}
    if seen_rings is not None:
        unseen = [r for r in rings if r not in seen_rings]
        unseen_rows = np.isin(ring, unseen)
        out |= {"unseen_rings": len(unseen), "unseen_rings_caught": sum(r in caught for r in unseen),
                "unseen_ring_applications": int(unseen_rows.sum()),
                "unseen_detection_rate": _share(flagged[unseen_rows])}
    return out


def _share(mask: np.ndarray) -> float:
    return float(mask.mean()) if mask.size else 0.0


@dataclass(frozen=True)
class FraudTrained:
    model_text: str
    metadata: FraudMetadata

    @property
    def metrics(self) -> dict:
        return self.metadata.metrics


def train_fraud(fs: FraudSet, cfg: FraudConfig) -> FraudTrained:
    split = time_split(fs, cfg)
    booster, params = fit(fs, cfg, split.train)
    text = booster.model_to_string()
    model = FraudModel(lgb.Booster(model_str=text), _draft(text, params), version="draft")  # as the service parses it
    p_valid, p_test = model.score(fs.X[split.valid]), model.score(fs.X[split.test])
    p_alone = model.score(without_links(fs.X[split.valid]))
    honest, ring = fs.y[split.valid] == 0, fs.y[split.valid] == 1
    # One threshold within the target both for applicants with the related-party features and for those without
    threshold = max(choose_threshold(p[honest], p[ring], cfg.target_false_rejection) for p in (p_valid, p_alone))
    seen = set(fs.ring[split.train][fs.y[split.train] == 1])
    metrics = {"valid": evaluate(fs.y[split.valid], p_valid, threshold, fs.ring[split.valid]),
               "valid_without_links": evaluate(fs.y[split.valid], p_alone, threshold, fs.ring[split.valid]),
               "test": evaluate(fs.y[split.test], p_test, threshold, fs.ring[split.test], seen),
               "test_without_links": evaluate(fs.y[split.test], model.score(without_links(fs.X[split.test])),
                                              threshold, fs.ring[split.test]),
               "importance_gain": _importance(booster)}
    canary = _canary_rows(fs, split.test)
    meta = replace(_draft(text, params), threshold=threshold, target_false_rejection=cfg.target_false_rejection,
                   metrics=metrics, split=split.description, data_fingerprint=fs.fingerprint,
                   params=params | {"num_boost_round": cfg.num_boost_round, "config": asdict(cfg)},
                   canary_rows=[[None if np.isnan(v) else float(v) for v in row] for row in canary],
                   canary_probability=[float(v) for v in model.score(canary)])
    log.info("fraud model: threshold %.4f; test detection %.3f, false rejections %.4f, AUC %s", threshold,
             metrics["test"]["detection_rate"], metrics["test"]["false_rejection_rate"], metrics["test"]["auc"])
    return FraudTrained(text, meta)


def _draft(text: str, params: dict) -> FraudMetadata:
    return FraudMetadata(model_sha256=sha256_bytes(text.encode("utf-8")), features=list(FEATURE_NAMES),
                         threshold=1.0, target_false_rejection=0.0, metrics={}, split={}, params=params,
                         data_fingerprint={}, canary_rows=[], canary_probability=[],
                         library_versions={"lightgbm": lgb.__version__, "numpy": np.__version__,
                                           "python": platform.python_version()})


def _importance(booster: lgb.Booster, top: int = 12) -> dict[str, float]:
    gain = booster.feature_importance(importance_type="gain")
    order = np.argsort(-gain, kind="stable")[:top]
    total = float(gain.sum()) or 1.0
    return {FEATURE_NAMES[j]: float(gain[j] / total) for j in order if gain[j] > 0}


def _canary_rows(fs: FraudSet, test: np.ndarray) -> np.ndarray:
    rings, honest = test[fs.y[test] == 1], test[fs.y[test] == 0]
    half = CANARY_ROWS // 2
    picked = np.concatenate([rings[:half], honest[:CANARY_ROWS - min(half, len(rings))]])
    return np.vstack([fs.X[np.sort(picked)], np.full((1, len(FEATURE_NAMES)), np.nan)])


def save(trained: FraudTrained, folder: Path | str) -> str:
    """Write the artifact into ``folder`` (fraud_model.txt, fraud.json); returns its version."""
    return write_artifact(folder, trained.model_text, trained.metadata)


def publish(trained: FraudTrained, registry: Path | str) -> str:
    """Publish into ``<registry>/fraud/<version>/`` and point CURRENT at it; returns the version."""
    return publish_fraud_model(registry, trained.model_text, trained.metadata)


def train_from_folder(data: Path | str, cfg: FraudConfig | None = None, *, registry: Path | str | None = None,
                      out: Path | str | None = None, client: object | None = None) -> tuple[FraudTrained, str]:
    """Train on a synthetic data folder and write the artifact to ``out`` and / or publish it to ``registry``;
    returns the trained model and its version."""
    if out is None and registry is None:
        raise ValueError("give out or registry: where the fraud model goes")
    trained = train_fraud(fraud_set(data, client=client), cfg or FraudConfig())
    version = save(trained, out) if out is not None else ""
    if registry is not None:
        version = publish(trained, registry)
    return trained, version
