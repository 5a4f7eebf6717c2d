"""Models that travel: a registered bundle written in a standard format (``smecredit models export``).

    onnx     model.onnx (ONNX-ML trees, then the bundle's calibration, points and grade as ONNX operators:
             outputs margin, pd, score, grade) and export.json (feature order, categories, calibration,
             scaling, grades, the bundle's digests, the precision measured on the bundle's canary rows)
    scorecard  points.csv (UTF-8 with BOM) and scorecard.xlsx: the bins, WoE, IV and points of a scorecard
             bundle (service/export/scorecard_export.py; no extra needed)
    mlflow   an MLflow model directory: a pyfunc saved as "models from code" (no pickle) that loads the
             bundle's own files as artifacts, verifies their digests and returns pd, score, grade and the
             TreeSHAP contributions for a DataFrame of features

ONNX and MLflow need the optional ``export`` extra (``pip install 'smecredit[export]'``). The bundle is verified and
checked servable before anything is written; the output appears only when complete (written beside it, then
renamed), and an existing output is replaced only with ``force``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from service.scoring.bundle import Bundle, BundleError, load_bundle
from service.scoring.registry import Registry, RegistryError

EXTRA = "export"
# format -> (module that writes it, the optional packages it needs)
FORMATS: dict[str, tuple[str, tuple[str, ...]]] = {
    "onnx": ("service.export.onnx_export", ("onnx", "onnxruntime")),
    "mlflow": ("service.export.mlflow_export", ("mlflow",)),
    "scorecard": ("service.export.scorecard_export", ("openpyxl",)),  # a main dependency: never missing
}
SCORECARD_FORMATS = ("scorecard",)  # formats of a scorecard bundle; the others export LightGBM's trees


class ExportError(ValueError):
    """An export cannot be done; ``option`` names the command-line option at fault and the message the rule."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option


@dataclass(frozen=True)
class Exported:
    format: str
    version: str
    out: Path
    summary: str  # one line: what was written and what it was checked against


Writer = Callable[[Bundle, Path, Path], str]  # (bundle, bundle folder, empty output folder) -> summary


def export_model(registry: Registry, version: str, fmt: str, out: Path | str, *, force: bool = False) -> Exported:
    """Write ``version`` of ``registry`` in ``fmt`` to the folder ``out``."""
    out = Path(out)
    if fmt not in FORMATS:
        raise ExportError("--format", f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    module, needs = FORMATS[fmt]
    missing = [name for name in needs if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError("--format", f"{fmt} needs the optional '{EXTRA}' extra, which is not installed (missing: "
                          f"{', '.join(missing)}): pip install 'smecredit[{EXTRA}]'")
    if out.exists() and not force:
        raise ExportError("--out", f"{out} exists; pass --force to replace it (an export never overwrites silently)")
    root = registry.root.resolve()
    if out.resolve() == root or root in out.resolve().parents:
        raise ExportError("--out", f"{out} is inside the registry {registry.root}; write exports elsewhere")
    try:
        folder = registry.path(version)
        bundle = load_bundle(folder)  # digests, feature-code version, servable (child process): as the service
    except (RegistryError, BundleError) as exc:
        raise ExportError("VERSION", str(exc)) from exc
    if (fmt in SCORECARD_FORMATS) != (bundle.model_type == "scorecard"):
        rule = (f"{fmt} exports a scorecard bundle (smecredit train --data DIR --model scorecard); {version} is a "
                "LightGBM model: export it as onnx or mlflow") if fmt in SCORECARD_FORMATS else \
            (f"{fmt} exports a LightGBM model's trees; {version} is a scorecard: export it with --format scorecard")
        raise ExportError("--format", rule)
    # MLflow 3 reports usage to its maintainers by default; exporting a lender's model should not call out.
    # Set MLFLOW_DISABLE_TELEMETRY=false to opt in.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    write: Writer = importlib.import_module(module).write
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        summary = write(bundle, folder, tmp)
        _replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Exported(fmt, version, out, summary)


def _replace(new: Path, out: Path) -> None:
    """Move the finished export to ``out``; an old one (with --force) is moved aside first, removed last."""
    old = None
    if out.exists() or out.is_symlink():
        old = out.parent / f".{out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        out.rename(old)
    new.rename(out)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()
