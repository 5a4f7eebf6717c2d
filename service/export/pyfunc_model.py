"""The MLflow pyfunc of a smecredit bundle, saved as "models from code": MLflow stores this file, not a pickle.

MLflow runs this file when the model is loaded; ``load_context`` then loads the bundle's own files (copied into
the model directory as the ``bundle`` artifact) with ``service.scoring.bundle.load_bundle``: every SHA-256
digest, the feature-code version and servability (parsed and test-scored in a child process) are checked, as
the service checks them, before any row is scored. ``predict`` takes a DataFrame of features (one column per
feature, categories by label, NaN where missing) and returns the engine's pd, score, grade, margin, base_value
and ``contribution:<feature>`` (exact TreeSHAP, log-odds) per row (service/frames.py).
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from service.frames import score_frame
from service.scoring.bundle import load_bundle

BUNDLE_ARTIFACT = "bundle"


class SmeCreditModel(PythonModel):
    def load_context(self, context) -> None:  # noqa: ANN001 - mlflow.pyfunc.PythonModelContext
        self.bundle = load_bundle(Path(context.artifacts[BUNDLE_ARTIFACT]))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:  # noqa: ANN001
        return score_frame(self.bundle, model_input)


mlflow.models.set_model(SmeCreditModel())
