"""A bundle as an MLflow model directory: an ``mlflow.pyfunc`` saved as "models from code" (no pickle).

The directory holds MLmodel, the pyfunc's code file (service/export/pyfunc_model.py, which MLflow stores and
runs on load), the bundle's files unchanged as the ``bundle`` artifact (their digests are checked on every
load), and under ``code/`` the pure scoring core (service/scoring) and the pandas adapter (service/frames.py)
the pyfunc imports, so the model loads where smecredit is not installed. The signature names every feature
column (double; categorical features: string labels) and the outputs. Before the export is kept it is loaded
back with ``mlflow.pyfunc.load_model`` and must give the bundle's numbers on its canary rows exactly.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from importlib.metadata import version as package_version
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import ColSpec, Schema

import service
from service.export import ExportError, pyfunc_model
from service.frames import CONTRIBUTION_PREFIX, decode, score_frame
from service.scoring.bundle import MANIFEST_FILE, Bundle, Canary, sha256_file

# what service/scoring and service/frames.py import, pinned to the versions that trained and checked the export
REQUIREMENTS = ("numpy", "pandas", "pyarrow", "lightgbm", "scipy", "pydantic", "pyyaml")



def signature(bundle: Bundle) -> ModelSignature:
    inputs = Schema([ColSpec("string" if f["categories"] else "double", f["name"])
                     for f in bundle.metadata["features"]])
    outputs = Schema([ColSpec("double", "pd"), ColSpec("double", "score"), ColSpec("string", "grade"),
                      ColSpec("double", "margin"), ColSpec("double", "base_value"),
                      *[ColSpec("double", CONTRIBUTION_PREFIX + n) for n in bundle.feature_names]])
    return ModelSignature(inputs=inputs, outputs=outputs)


def _stage_code(into: Path) -> Path:
    """service/__init__.py, service/frames.py and service/scoring/*.py: what the pyfunc needs, nothing else."""
    src = Path(service.__file__).parent
    dst = into / "service"
    (dst / "scoring").mkdir(parents=True)
    for rel in ("__init__.py", "frames.py", *(f"scoring/{p.name}" for p in sorted((src / "scoring").glob("*.py")))):
        shutil.copyfile(src / rel, dst / rel)
    return dst


def write(bundle: Bundle, bundle_folder: Path, out: Path) -> str:
    manifest_sha256 = sha256_file(bundle_folder / MANIFEST_FILE)
    with tempfile.TemporaryDirectory(prefix="smecredit-mlflow-") as tmp:
        code = _stage_code(Path(tmp))
        mlflow.pyfunc.save_model(
            path=str(out), python_model=pyfunc_model.__file__, artifacts={pyfunc_model.BUNDLE_ARTIFACT:
                                                                          str(bundle_folder)},
            code_paths=[str(code)], signature=signature(bundle),
            pip_requirements=[f"{name}=={package_version(name)}" for name in REQUIREMENTS],
            metadata={"smecredit_bundle_version": bundle.version, "smecredit_bundle_kind": bundle.kind,
                      "smecredit_bundle_manifest_sha256": manifest_sha256})
    if (out / "python_model.pkl").exists():
        raise ExportError("--format", "MLflow pickled the model; this export must be a model from code")
    rows = _check(bundle, out)
    files = json.loads((bundle_folder / MANIFEST_FILE).read_text(encoding="utf-8"))["files"]
    return (f"MLflow pyfunc (model from code, no pickle) with the bundle's {len(files)} files as an artifact; "
            f"loaded back, it gives the bundle's pd, score, grade and contributions on {rows} canary rows")


def _check(bundle: Bundle, out: Path) -> int:
    """Load the saved model as a consumer would and compare with the bundle on its canary rows."""
    stored = bundle.metadata.get("canary")
    rows = Canary.from_json(stored).rows if stored is not None else np.full((1, len(bundle.feature_names)), np.nan)
    frame = decode(bundle, rows)
    got = mlflow.pyfunc.load_model(str(out)).predict(frame)
    want = score_frame(bundle, frame)
    if not isinstance(got, pd.DataFrame) or not got.equals(want):
        raise ExportError("--format", "the saved MLflow model does not reproduce the bundle's scores on its "
                                      "canary rows")
    return len(rows)
