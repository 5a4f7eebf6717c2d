"""The application fraud score: a LightGBM model trained on planted fraud rings (training/fraud.py), served
beside the credit bundle from the catalogue feature matrix the credit model reads.

An artifact folder holds ``fraud_model.txt`` (LightGBM text) and ``fraud.json`` (a ``FraudMetadata``: format,
feature names and feature code version, threshold, metrics, the model text's SHA-256, the training data's
fingerprint, canary rows with their expected probabilities). ``load_fraud_model`` refuses a folder whose model
text is not the bytes ``fraud.json`` names, whose format or feature code is not this service's, or whose
canary rows no longer score as they did at training time. Published copies live in ``<registry>/fraud/<version>/``
(the version is derived from ``fraud.json``'s bytes, which name the model's digest) with a ``CURRENT`` pointer
(artifacts.py, as the graph index).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np

from service.scoring.artifacts import current_version, publish_artifact, published
from service.scoring.bundle import (
    PREDICT_RAW_SCORE,
    OneRow,
    canonical_json,
    predict_rows,
    sha256_bytes,
    stable_numbers,
)
from service.scoring.catalog import FEATURE_CODE_VERSION, FEATURE_NAMES

FORMAT = "smecredit-fraud/1"
MODEL_FILE, METADATA_FILE = "fraud_model.txt", "fraud.json"
REGISTRY_FOLDER = "fraud"  # <registry>/fraud/<version>/, CURRENT names the one in use
VERSION_PREFIX = "f-"
CANARY_RTOL, CANARY_ATOL = 1e-9, 1e-12


class FraudModelError(ValueError):
    """A fraud model that cannot be used; the message names the folder and the file."""


# --- content-versioned artifact folders with a CURRENT pointer ---------------------------------------------


# --- the artifact --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FraudMetadata:
    """``fraud.json``: written by training, read here; one owner of the record's keys."""

    model_sha256: str
    features: list[str]
    threshold: float  # flag when the probability is >= threshold
    target_false_rejection: float
    metrics: dict  # {"valid": {...}, "test": {...}} at the threshold, see training/fraud.py
    split: dict
    params: dict
    data_fingerprint: dict
    canary_rows: list[list[float | None]]  # None: missing
    canary_probability: list[float]
    library_versions: dict
    feature_code_version: str = FEATURE_CODE_VERSION
    format: str = FORMAT
    label: str = "enterprise in a planted fraud ring (ground_truth_rings)"
    extra: dict = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """Canonical JSON; measurements rounded to 10 digits, while the threshold and the canary keep every
        bit (they are compared exactly; the same training gives the same doubles)."""
        record = asdict(self)
        for key in ("metrics", "split", "params", "extra"):
            record[key] = stable_numbers(record[key])
        return canonical_json(record)

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> FraudMetadata:
        try:
            raw = json.loads(data.decode("utf-8"))
            if raw.get("format") != FORMAT:
                raise FraudModelError(f"{where}: format {raw.get('format')!r}, this service reads {FORMAT!r}")
            return cls(**raw)
        except (ValueError, TypeError) as exc:
            if isinstance(exc, FraudModelError):
                raise
            raise FraudModelError(f"{where}: unreadable ({exc})") from None


def write_artifact(folder: Path | str, model_text: str, metadata: FraudMetadata) -> str:
    """Write the two files into ``folder``; returns the version their content implies."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model_bytes = model_text.encode("utf-8")
    if sha256_bytes(model_bytes) != metadata.model_sha256:
        raise ValueError("metadata.model_sha256 is not the digest of the model text")
    meta_bytes = metadata.to_bytes()
    (folder / MODEL_FILE).write_bytes(model_bytes)
    (folder / METADATA_FILE).write_bytes(meta_bytes)
    return version_of(meta_bytes)


def version_of(metadata_bytes: bytes) -> str:
    """The version is fraud.json's digest; fraud.json names the model's digest, so it covers both files."""
    return VERSION_PREFIX + sha256_bytes(metadata_bytes)[:16]


class FraudModel:
    """A verified fraud model. ``score`` takes the catalogue feature matrix (the credit model's X)."""

    def __init__(self, booster: lgb.Booster, metadata: FraudMetadata, version: str) -> None:
        self.booster = booster
        self.metadata = metadata
        self.version = version
        self.threshold = float(metadata.threshold)
        self.feature_names = tuple(metadata.features)
        self._one_row = OneRow(booster, PREDICT_RAW_SCORE, len(self.feature_names))

    def margin(self, X: np.ndarray) -> np.ndarray:
        if X.shape == (1, len(self.feature_names)):
            return self._one_row.predict(X)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names):
            raise ValueError(f"X has shape {X.shape}, the fraud model reads {len(self.feature_names)} features")
        return predict_rows(self.booster, X, PREDICT_RAW_SCORE, 1)

    def score(self, X: np.ndarray) -> np.ndarray:
        """The probability that each application (row of X) belongs to a fraud ring; one predict call."""
        return 1.0 / (1.0 + np.exp(-self.margin(X)))

    def flags(self, X: np.ndarray) -> np.ndarray:
        return self.score(X) >= self.threshold


def load_fraud_model(folder: Path | str) -> FraudModel:
    """Verify and load a fraud model folder, or raise FraudModelError naming the folder and what is wrong."""
    folder = Path(folder)
    try:
        model_bytes = (folder / MODEL_FILE).read_bytes()
        meta_bytes = (folder / METADATA_FILE).read_bytes()
    except OSError as exc:
        raise FraudModelError(f"fraud model {folder.name}: cannot read {exc.filename and Path(exc.filename).name} "
                              f"({exc.strerror})") from None
    meta = FraudMetadata.from_bytes(meta_bytes, f"fraud model {folder.name}: {METADATA_FILE}")
    actual = sha256_bytes(model_bytes)
    if actual != meta.model_sha256:
        raise FraudModelError(f"fraud model {folder.name}: {MODEL_FILE} has SHA-256 {actual[:16]}..., "
                              f"{METADATA_FILE} says {meta.model_sha256[:16]}...; refusing to load")
    if meta.feature_code_version != FEATURE_CODE_VERSION:
        raise FraudModelError(f"fraud model {folder.name}: trained with feature code {meta.feature_code_version}, "
                              f"this service computes {FEATURE_CODE_VERSION}; retrain it")
    if tuple(meta.features) != FEATURE_NAMES:
        raise FraudModelError(f"fraud model {folder.name}: its features are not the catalogue's")
    try:
        booster = lgb.Booster(model_str=model_bytes.decode("utf-8"))
    except lgb.basic.LightGBMError as exc:
        raise FraudModelError(f"fraud model {folder.name}: LightGBM cannot parse {MODEL_FILE} ({exc})") from None
    if tuple(booster.feature_name()) != FEATURE_NAMES:
        raise FraudModelError(f"fraud model {folder.name}: {MODEL_FILE} features do not match {METADATA_FILE}")
    model = FraudModel(booster, meta, version_of(meta_bytes))
    rows = np.array([[np.nan if v is None else v for v in row] for row in meta.canary_rows], dtype=np.float64)
    if not len(rows) or not np.allclose(model.score(rows), meta.canary_probability,
                                        rtol=CANARY_RTOL, atol=CANARY_ATOL):
        raise FraudModelError(f"fraud model {folder.name}: canary rows do not score as at training time "
                              f"(LightGBM {lgb.__version__}, trained with {meta.library_versions.get('lightgbm')})")
    return model


def publish_fraud_model(registry: Path | str, model_text: str, metadata: FraudMetadata) -> str:
    """Publish into ``<registry>/fraud/<version>/`` and make it the one the service uses."""
    return publish_artifact(Path(registry) / REGISTRY_FOLDER,
                            lambda folder: write_artifact(folder, model_text, metadata))


def registry_fraud_model(registry: Path | str, version: str | None = None) -> FraudModel | None:
    """The fraud model published as ``version`` (None: the current one), or None when none was published (no
    fraud score then). A version named but missing, or whose files are not its content, is an error."""
    root = Path(registry) / REGISTRY_FOLDER
    version = version or current_version(root)
    folder = published(root, version, VERSION_PREFIX, FraudModelError, "fraud model")
    if folder is None or version is None:
        return None
    model = load_fraud_model(folder)
    if model.version != version:
        raise FraudModelError(f"fraud model {version}: {METADATA_FILE} content implies version {model.version}; "
                              "refusing to load")
    return model
