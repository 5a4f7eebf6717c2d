"""Model bundles: a LightGBM text model, JSON metadata and a manifest of SHA-256 digests. Never pickle.

A bundle is a folder ``<registry>/<version>/``. ``load_bundle`` refuses it, naming the file, when a digest
does not match, a file is missing or unexpected, the version is not the one its content implies, or the
feature code it was trained with is not the code running now.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np

from service.scoring.catalog import FEATURE_CODE_VERSION
from service.scoring.score import Scorer

MODEL_FILE = "model.txt"
METADATA_FILE = "metadata.json"
MANIFEST_FILE = "manifest.json"
CARD_FILES = ("model_card.html", "model_card.json")
BUNDLE_FILES = (MODEL_FILE, METADATA_FILE, *CARD_FILES)


class BundleError(ValueError):
    """A bundle failed verification; the message names the version and the file."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def version_of(model_digest: str, metadata_digest: str) -> str:
    """The version is derived from the content: the model and its metadata."""
    return "m" + hashlib.sha256(f"{model_digest}:{metadata_digest}".encode()).hexdigest()[:12]


def canonical_json(obj: object) -> bytes:
    """Stable bytes for JSON: sorted keys, fixed separators, UTF-8; the same object gives the same digest."""
    return (json.dumps(obj, sort_keys=True, ensure_ascii=False, indent=1, allow_nan=False) + "\n").encode("utf-8")


def verify(folder: Path) -> dict[str, str]:
    """Check every digest of the bundle in ``folder``; return the manifest's digests or raise BundleError."""
    name = folder.name
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        raise BundleError(f"bundle {name}: {MANIFEST_FILE} is missing")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        digests: dict[str, str] = manifest["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"bundle {name}: {MANIFEST_FILE} is unreadable ({exc})") from exc
    if sorted(digests) != sorted(BUNDLE_FILES):
        raise BundleError(f"bundle {name}: manifest lists {sorted(digests)}, expected {sorted(BUNDLE_FILES)}")
    present = {p.name for p in folder.iterdir()} - {MANIFEST_FILE}
    if present != set(BUNDLE_FILES):
        extra, missing = present - set(BUNDLE_FILES), set(BUNDLE_FILES) - present
        raise BundleError(f"bundle {name}: unexpected files {sorted(extra)}, missing files {sorted(missing)}")
    for file, expected in digests.items():
        actual = sha256_file(folder / file)
        if actual != expected:
            raise BundleError(f"bundle {name}: {file} has SHA-256 {actual[:16]}..., manifest says {expected[:16]}...")
    expected_version = version_of(digests[MODEL_FILE], digests[METADATA_FILE])
    if manifest.get("version") != expected_version or name != expected_version:
        raise BundleError(f"bundle {name}: content implies version {expected_version}, "
                          f"manifest says {manifest.get('version')}")
    return digests


@dataclass(frozen=True)
class Bundle:
    version: str
    booster: lgb.Booster
    metadata: dict
    scorer: Scorer
    feature_names: tuple[str, ...]

    @property
    def kind(self) -> str:
        """"catalog": features built by service.scoring.features; "table": a bring-your-own feature table."""
        return self.metadata["kind"]

    def margin(self, X: np.ndarray) -> np.ndarray:
        return self.booster.predict(X, raw_score=True, num_threads=1)

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Exact TreeSHAP: one column per feature plus the base value last; each row sums to the margin."""
        return self.booster.predict(X, pred_contrib=True, num_threads=1)


def load_bundle(folder: Path | str) -> Bundle:
    folder = Path(folder)
    verify(folder)
    metadata = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
    if metadata["kind"] == "catalog" and metadata["feature_code_version"] != FEATURE_CODE_VERSION:
        raise BundleError(f"bundle {folder.name}: trained with feature code {metadata['feature_code_version']}, "
                          f"this service computes {FEATURE_CODE_VERSION}; retrain or run the matching release")
    booster = lgb.Booster(model_str=(folder / MODEL_FILE).read_text(encoding="utf-8"))
    names = tuple(f["name"] for f in metadata["features"])
    if tuple(booster.feature_name()) != names:
        raise BundleError(f"bundle {folder.name}: model features do not match metadata features")
    return Bundle(version=folder.name, booster=booster, metadata=metadata,
                  scorer=Scorer.from_json(metadata["scorer"]), feature_names=names)
