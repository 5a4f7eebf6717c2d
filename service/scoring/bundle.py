"""Model bundles: a LightGBM text model, JSON metadata and a manifest of SHA-256 digests. Never pickle.

A bundle is a folder ``<registry>/<version>/``. ``load_bundle`` refuses it, naming the file, when a digest
does not match, a file is missing or unexpected, the version is not the one its content implies, the
feature code it was trained with is not the code running now, or it is not servable.

Servable means: LightGBM parses the model and scores the bundle's canary rows to the margin and TreeSHAP
contributions stored at training time. LightGBM can abort the whole process on a malformed model
(``[LightGBM] [Fatal] ... terminate called``), so that check runs in a child process
(``python -m service.scoring.canary <folder>``) before any parse in this one; its verdict is memoised per
manifest digest, which names the content.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
from lightgbm.basic import _LIB, _safe_call

from service.scoring.catalog import FEATURE_CODE_VERSION
from service.scoring.score import Scorer
from service.scoring.scorecard import ScorecardFormatError, ScorecardModel

MODEL_FILE = "model.txt"
METADATA_FILE = "metadata.json"
MANIFEST_FILE = "manifest.json"
CARD_FILES = ("model_card.html", "model_card.json")
BUNDLE_FILES = (MODEL_FILE, METADATA_FILE, *CARD_FILES)
# A scorecard bundle: the scorecard as JSON (what the service scores), its points table and IV report as CSV
# (what a risk team reads; written from the same fit), metadata and card. Its own bundle, not a file inside a
# LightGBM bundle: a version is one servable model, promoted, rolled back and compared on its own.
SCORECARD_FILE = "scorecard.json"
POINTS_FILE = "points.csv"
IV_FILE = "iv.csv"
SCORECARD_BUNDLE_FILES = (SCORECARD_FILE, POINTS_FILE, IV_FILE, METADATA_FILE, *CARD_FILES)
LAYOUTS = (BUNDLE_FILES, SCORECARD_BUNDLE_FILES)
CHECK_TIMEOUT = 120.0  # seconds for the child to parse and score; a large model parses in a few seconds
VERDICT_PREFIX = "smecredit-canary-verdict "
CANARY_RTOL, CANARY_ATOL = 1e-9, 1e-12  # the same LightGBM on the same text gives the same doubles
log = logging.getLogger("smecredit.bundle")


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


def model_file_of(files: object) -> str:
    """The file holding the model itself in a bundle listing ``files``: the scorecard's JSON or LightGBM's text."""
    return SCORECARD_FILE if SCORECARD_FILE in files else MODEL_FILE


def version_of(model_digest: str, metadata_digest: str) -> str:
    """The version is derived from the content: the model and its metadata."""
    return "m" + hashlib.sha256(f"{model_digest}:{metadata_digest}".encode()).hexdigest()[:12]


def canonical_json(obj: object) -> bytes:
    """Stable bytes for JSON: sorted keys, fixed separators, UTF-8; the same object gives the same digest."""
    return (json.dumps(obj, sort_keys=True, ensure_ascii=False, indent=1, allow_nan=False) + "\n").encode("utf-8")


def stable_numbers(obj: object) -> object:
    """Round floats to 10 significant digits: metadata must be the same bytes on every identical run."""
    if isinstance(obj, float):
        return float(f"{obj:.10g}")
    if isinstance(obj, dict):
        return {k: stable_numbers(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [stable_numbers(v) for v in obj]
    return obj


def verify(folder: Path) -> dict[str, str]:
    """Check every digest of the bundle in ``folder``; return the manifest's digests or raise BundleError."""
    return verify_with_digest(folder)[0]


def verify_with_digest(folder: Path) -> tuple[dict[str, str], str]:
    """The manifest's digests, checked, and the SHA-256 of the manifest bytes that were checked."""
    name = folder.name
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        raise BundleError(f"bundle {name}: {MANIFEST_FILE} is missing")
    try:
        raw = manifest_path.read_bytes()
        manifest = json.loads(raw.decode("utf-8"))
        digests: dict[str, str] = manifest["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"bundle {name}: {MANIFEST_FILE} is unreadable ({exc})") from exc
    layout = next((files for files in LAYOUTS if sorted(digests) == sorted(files)), None)
    if layout is None:
        expected = " or ".join(str(sorted(files)) for files in LAYOUTS)
        raise BundleError(f"bundle {name}: manifest lists {sorted(digests)}, expected {expected}")
    present = {p.name for p in folder.iterdir()} - {MANIFEST_FILE}
    if present != set(layout):
        extra, missing = present - set(layout), set(layout) - present
        raise BundleError(f"bundle {name}: unexpected files {sorted(extra)}, missing files {sorted(missing)}")
    for file, expected in digests.items():
        actual = sha256_file(folder / file)
        if actual != expected:
            raise BundleError(f"bundle {name}: {file} has SHA-256 {actual[:16]}..., manifest says {expected[:16]}...")
    expected_version = version_of(digests[model_file_of(digests)], digests[METADATA_FILE])
    if manifest.get("version") != expected_version or name != expected_version:
        raise BundleError(f"bundle {name}: content implies version {expected_version}, "
                          f"manifest says {manifest.get('version')}")
    return digests, sha256_bytes(raw)


@dataclass(frozen=True)
class Bundle:
    version: str
    booster: lgb.Booster
    metadata: dict
    scorer: Scorer
    feature_names: tuple[str, ...]  # as the user named them: API keys, contributions, card

    model_type = "lightgbm"

    @property
    def kind(self) -> str:
        """"catalog": features built by service.scoring.features; "table": a bring-your-own feature table."""
        return self.metadata["kind"]

    def margin(self, X: np.ndarray) -> np.ndarray:
        if X.shape == (1, len(self.feature_names)):
            return self._one_row[PREDICT_RAW_SCORE].predict(X)
        return predict_rows(self.booster, X, PREDICT_RAW_SCORE, 1)

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Exact TreeSHAP: one column per feature plus the base value last; each row sums to the margin."""
        if X.shape == (1, len(self.feature_names)):
            return self._one_row[_PREDICT_CONTRIB].predict(X)[None, :]
        return predict_rows(self.booster, X, _PREDICT_CONTRIB, X.shape[1] + 1).reshape(len(X), X.shape[1] + 1)

    @functools.cached_property
    def _one_row(self) -> dict[int, OneRow]:
        return {t: OneRow(self.booster, t, len(self.feature_names)) for t in (PREDICT_RAW_SCORE, _PREDICT_CONTRIB)}


PREDICT_RAW_SCORE, _PREDICT_CONTRIB = 1, 3  # LightGBM's C_API_PREDICT_RAW_SCORE, C_API_PREDICT_CONTRIB
_DTYPE_FLOAT64, _ROW_MAJOR = 1, 1  # C_API_DTYPE_FLOAT64, C_API_IS_ROW_MAJOR
_ONE_THREAD = ctypes.c_char_p(b"num_threads=1")


class OneRow:
    """LightGBM's single-row path (LGBM_BoosterPredictForMatSingleRowFast): the parameters are parsed and the
    predictor built once, here, rather than on every call; LightGBM serialises calls on one booster itself.
    The same trees and the same arithmetic as ``_predict``, about half the cost for one row."""

    def __init__(self, booster: lgb.Booster, predict_type: int, n_features: int) -> None:
        self.booster = booster  # the configuration refers to it: keep it alive as long
        self.width = n_features + 1 if predict_type == _PREDICT_CONTRIB else 1
        self.handle = ctypes.c_void_p()
        _safe_call(_LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
            booster._handle, ctypes.c_int(predict_type), ctypes.c_int(0), ctypes.c_int(booster.best_iteration),
            ctypes.c_int(_DTYPE_FLOAT64), ctypes.c_int32(n_features), _ONE_THREAD, ctypes.byref(self.handle)))
        weakref.finalize(self, _LIB.LGBM_FastConfigFree, self.handle)

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float64)
        out = np.empty(self.width)
        written = ctypes.c_int64(0)
        _safe_call(_LIB.LGBM_BoosterPredictForMatSingleRowFast(
            self.handle, X.ctypes.data_as(ctypes.c_void_p), ctypes.byref(written),
            out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))))
        if written.value != self.width:
            raise ValueError(f"LightGBM wrote {written.value} predictions, expected {self.width}")
        return out


def predict_rows(booster: lgb.Booster, X: np.ndarray, predict_type: int, width: int) -> np.ndarray:
    """``booster.predict(X, raw_score=True / pred_contrib=True, num_threads=1)``, calling the same C function
    (LGBM_BoosterPredictForMat) directly: ``Booster.predict`` builds a predictor and its parameter string on
    every call, about 0.1 ms, which is most of the cost of one row (an engine call makes up to three)."""
    X = np.ascontiguousarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-dimensional, got shape {X.shape}")
    out = np.empty(len(X) * width)
    if not len(X):
        return out
    written = ctypes.c_int64(0)
    _safe_call(_LIB.LGBM_BoosterPredictForMat(
        booster._handle, X.ctypes.data_as(ctypes.c_void_p), ctypes.c_int(_DTYPE_FLOAT64),
        ctypes.c_int32(X.shape[0]), ctypes.c_int32(X.shape[1]), ctypes.c_int(_ROW_MAJOR), ctypes.c_int(predict_type),
        ctypes.c_int(0), ctypes.c_int(booster.best_iteration), _ONE_THREAD, ctypes.byref(written),
        out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))))
    if written.value != out.size:
        raise ValueError(f"LightGBM wrote {written.value} predictions, expected {out.size}")
    return out


@dataclass(frozen=True)
class ScorecardBundle:
    """A scorecard bundle, with the interface the engine uses: ``contributions`` (per characteristic, against
    its best bin, base value last; see service/scoring/scorecard.py) and ``margin`` (their row sum)."""

    version: str
    scorecard: ScorecardModel
    metadata: dict
    scorer: Scorer
    feature_names: tuple[str, ...]
    model_type = "scorecard"

    @property
    def kind(self) -> str:
        return self.metadata["kind"]

    def margin(self, X: np.ndarray) -> np.ndarray:
        return self.scorecard.margin(X)

    def contributions(self, X: np.ndarray) -> np.ndarray:
        return self.scorecard.contributions(X)


AnyBundle = Bundle | ScorecardBundle


def internal_names(metadata: dict) -> tuple[str, ...]:
    """The names LightGBM knows the features by (``f000``... for a table model; bundles before them: the name)."""
    return tuple(f.get("internal", f["name"]) for f in metadata["features"])


def load_bundle(folder: Path | str, *, check: bool = True) -> AnyBundle:
    """Verify, check servable (in a child process, memoised) and load a bundle. ``check=False`` is for the
    child itself: nothing else may parse a model that has not passed the check."""
    folder = Path(folder)
    digests, manifest_digest = verify_with_digest(folder)
    if check and check_servable(folder) != manifest_digest:
        raise BundleError(f"bundle {folder.name}: changed while it was being checked")
    model_file = model_file_of(digests)
    model_bytes, metadata_bytes = (folder / model_file).read_bytes(), (folder / METADATA_FILE).read_bytes()
    if sha256_bytes(model_bytes) != digests[model_file] or sha256_bytes(metadata_bytes) != digests[METADATA_FILE]:
        raise BundleError(f"bundle {folder.name}: changed while it was being loaded")  # parse only checked bytes
    metadata = json.loads(metadata_bytes.decode("utf-8"))
    if metadata["kind"] == "catalog" and metadata["feature_code_version"] != FEATURE_CODE_VERSION:
        raise BundleError(f"bundle {folder.name}: trained with feature code {metadata['feature_code_version']}, "
                          f"this service computes {FEATURE_CODE_VERSION}; retrain or run the matching release")
    if model_file == SCORECARD_FILE:
        return _scorecard_bundle(folder.name, model_bytes, metadata)
    try:
        booster = lgb.Booster(model_str=model_bytes.decode("utf-8"))
    except lgb.basic.LightGBMError as exc:
        raise BundleError(f"bundle {folder.name}: LightGBM cannot parse {MODEL_FILE} ({_first_line(exc)})") from exc
    if tuple(booster.feature_name()) != internal_names(metadata):
        raise BundleError(f"bundle {folder.name}: model features do not match metadata features")
    names = tuple(f["name"] for f in metadata["features"])
    return Bundle(version=folder.name, booster=booster, metadata=metadata,
                  scorer=Scorer.from_json(metadata["scorer"]), feature_names=names)


def _scorecard_bundle(version: str, model_bytes: bytes, metadata: dict) -> ScorecardBundle:
    try:
        scorecard = ScorecardModel.from_json(json.loads(model_bytes.decode("utf-8")))
    except (ValueError, ScorecardFormatError) as exc:
        raise BundleError(f"bundle {version}: {SCORECARD_FILE} is not a valid scorecard ({exc})") from exc
    names = tuple(f["name"] for f in metadata["features"])
    if scorecard.feature_names != names:
        raise BundleError(f"bundle {version}: scorecard features do not match metadata features")
    return ScorecardBundle(version=version, scorecard=scorecard, metadata=metadata,
                           scorer=Scorer.from_json(metadata["scorer"]), feature_names=names)


# --- canary: expected outputs stored at training time, checked in a child process --------------------------


@dataclass(frozen=True)
class Canary:
    """A few real feature rows (NaN = missing, stored as JSON null) with the raw margin and TreeSHAP
    contributions LightGBM computed for them from the bundle's own model text."""

    rows: np.ndarray  # (n, F)
    margin: np.ndarray  # (n,)
    contributions: np.ndarray  # (n, F + 1), base value last

    @classmethod
    def compute(cls, model_text: str, rows: np.ndarray) -> Canary:
        booster = lgb.Booster(model_str=model_text)  # the bytes the bundle stores, as the service parses them
        X = np.asarray(rows, dtype=np.float64)
        return cls(X, booster.predict(X, raw_score=True, num_threads=1),
                   booster.predict(X, pred_contrib=True, num_threads=1))

    @classmethod
    def of(cls, model: ScorecardModel, rows: np.ndarray) -> Canary:
        """A scorecard's canary: what the model parsed back from the bundle's JSON computes for ``rows``."""
        X = np.asarray(rows, dtype=np.float64)
        return cls(X, model.margin(X), model.contributions(X))

    def to_json(self) -> dict:
        """Full-precision floats (JSON keeps every double exactly), so the comparison can be tight."""
        return {"rows": [[None if np.isnan(v) else float(v) for v in row] for row in self.rows],
                "margin": [float(v) for v in self.margin],
                "contributions": [[float(v) for v in row] for row in self.contributions]}

    @classmethod
    def from_json(cls, d: dict) -> Canary:
        rows = np.array([[np.nan if v is None else v for v in row] for row in d["rows"]], dtype=np.float64)
        return cls(rows, np.asarray(d["margin"], dtype=np.float64),
                   np.asarray(d["contributions"], dtype=np.float64))

    def mismatch(self, bundle: AnyBundle) -> str | None:
        """None when the loaded bundle reproduces the stored outputs; otherwise what differs."""
        n_features = len(bundle.feature_names)
        if self.rows.ndim != 2 or self.rows.shape[1] != n_features or not len(self.rows):
            return f"canary rows have shape {self.rows.shape}, the model has {n_features} features"
        if self.margin.shape != (len(self.rows),) or self.contributions.shape != (len(self.rows), n_features + 1):
            return "canary expectations do not match its rows"
        margin, contrib = bundle.margin(self.rows), bundle.contributions(self.rows)
        for label, got, want in (("raw margin", margin, self.margin), ("contributions", contrib, self.contributions)):
            if not np.allclose(got, want, rtol=CANARY_RTOL, atol=CANARY_ATOL):
                worst = float(np.max(np.abs(got - want)))
                return f"canary {label} differ from the stored values (largest difference {worst:.3g})"
        return None


def canary_mismatch(bundle: AnyBundle) -> str | None:
    """The child's test: the stored canary, or for bundles trained before canaries a parse-and-score smoke test
    (all-missing and all-zero rows give finite outputs whose contributions add up to the margin)."""
    stored = bundle.metadata.get("canary")
    if stored is not None:
        try:
            canary = Canary.from_json(stored)
        except (KeyError, TypeError, ValueError) as exc:
            return f"canary in {METADATA_FILE} is unreadable ({exc})"
        return canary.mismatch(bundle)
    X = np.vstack([np.full(len(bundle.feature_names), np.nan), np.zeros(len(bundle.feature_names))])
    margin, contrib = bundle.margin(X), bundle.contributions(X)
    if not (np.isfinite(margin).all() and np.isfinite(contrib).all()):
        return "the model gives non-finite outputs"
    if not np.allclose(contrib.sum(axis=1), margin, rtol=1e-9, atol=1e-9):
        return "the model's contributions do not add up to its margin"
    return None


@dataclass
class _Verdict:
    error: str | None
    retry_after: float = float("inf")  # monotonic time; a timeout or a kill may be the machine: retried later

    def settled(self) -> bool:
        return time.monotonic() <= self.retry_after


_VERDICTS: dict[str, _Verdict] = {}  # manifest SHA-256 -> verdict; content-addressed, so never stale
_CHECK_LOCK = threading.Lock()  # one child at a time per process: a flood of requests cannot fork a flood
_RETRY_SECONDS = 300.0  # after a timeout or a SIGKILL (the out-of-memory killer): the machine, not the bundle
_PROJECT_ROOT = Path(__file__).resolve().parents[2]


def check_servable(folder: Path | str, *, timeout: float = CHECK_TIMEOUT) -> str:
    """Parse and test-score the bundle in a child process; returns the manifest digest that passed, or raises
    BundleError naming the bundle and the reason. Memoised per manifest digest within this process: a caller
    whose content has a settled verdict never waits for another bundle's child."""
    folder = Path(folder)
    _, manifest_digest = verify_with_digest(folder)
    verdict = _VERDICTS.get(manifest_digest)
    if verdict is None or not verdict.settled():
        with _CHECK_LOCK:
            verdict = _VERDICTS.get(manifest_digest)  # settled by another thread while this one waited?
            if verdict is None or not verdict.settled():
                verdict, checked = _run_child(folder, timeout)
                if checked == manifest_digest or (checked is None and verdict.error is not None):
                    _VERDICTS[manifest_digest] = verdict  # a crash, a mismatch or a timeout is remembered too
                else:  # the folder changed under the child: decide nothing about this content
                    verdict = _Verdict(f"bundle {folder.name}: changed while it was being checked")
    if verdict.error is not None:
        raise BundleError(verdict.error)
    return manifest_digest


def _run_child(folder: Path, timeout: float) -> tuple[_Verdict, str | None]:
    name = folder.name
    # The child needs no secret: a minimal environment, so nothing it prints can echo one.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(_PROJECT_ROOT), "LC_ALL": "C.UTF-8",
           "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    started = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "service.scoring.canary", str(folder.resolve())],  # noqa: S603
                              env=env, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        return _Verdict(f"bundle {name}: not servable: the check did not finish within {timeout:.0f} s",
                        retry_after=time.monotonic() + _RETRY_SECONDS), None
    except OSError as exc:  # fork failed (memory, process limit): try again at the next load
        return _Verdict(f"bundle {name}: the check could not start ({type(exc).__name__})", retry_after=0.0), None
    stdout = proc.stdout.decode("utf-8", "replace")
    stderr = proc.stderr.decode("utf-8", "replace")
    verdict: dict = {}
    for line in stdout.splitlines():  # the child says which content it verified before it parses anything
        if line.startswith(VERDICT_PREFIX):
            try:
                verdict |= json.loads(line[len(VERDICT_PREFIX):])
            except ValueError:
                pass
    checked = verdict.get("manifest_sha256")
    if proc.returncode == 0 and verdict.get("ok") is True:
        log.info("bundle %s is servable (child check %.2f s)", name, time.perf_counter() - started)
        return _Verdict(None), checked
    if verdict.get("reason"):
        reason = _clean(str(verdict["reason"]), folder)
    else:
        died = f"the check process died ({_signal_name(proc.returncode)})" if proc.returncode < 0 \
            else f"the check process exited with {proc.returncode}"
        said = "\n".join(line for line in stdout.splitlines() if not line.startswith(VERDICT_PREFIX))
        tail = _tail(said + "\n" + stderr, folder)  # what the process said, not the digest it reported
        reason = f"{died}: {tail}" if tail else died
        if proc.returncode == -signal.SIGKILL:  # the out-of-memory killer or an operator, not the model's fault
            log.warning("bundle %s: the check process was killed (SIGKILL); retried in %.0f s", name, _RETRY_SECONDS)
            return _Verdict(f"bundle {name}: not servable: {reason}",
                            retry_after=time.monotonic() + _RETRY_SECONDS), checked
    # SIGABRT, SIGSEGV, a non-zero exit or a canary mismatch: a malformed model fails the same way every time
    return _Verdict(f"bundle {name}: not servable: {reason}"), checked


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


_LGB_LINE = re.compile(r"\[LightGBM\] \[(Fatal|Warning)\].*")


def _tail(output: str, folder: Path, limit: int = 400) -> str:
    """What LightGBM said (its Fatal line first), else the last line: the reason without a traceback."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    lgb_lines = [m.group(0) for line in lines if (m := _LGB_LINE.search(line))]
    fatal = [line for line in lgb_lines if "[Fatal]" in line]
    picked = fatal[-1] if fatal else (lgb_lines[-1] if lgb_lines else (lines[-1] if lines else ""))
    return _clean(picked, folder, limit)


def _clean(text: str, folder: Path, limit: int = 400) -> str:
    """No paths of this machine in a reason that an API answer may carry."""
    text = text.replace(str(folder.resolve()), folder.name).replace(str(_PROJECT_ROOT), ".")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
