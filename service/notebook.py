"""A bundle in a notebook: load it from the registry, score a DataFrame, explain it with shap's plots.

    from service.notebook import load_model

    model = load_model()                          # the champion; load_model("m1a2b3...") for a version
    X = model.features("data/synth")             # raw contract data -> one row per application
    scores = model.score(X)                       # pd, score, grade, margin, contribution:<feature>
    explanation = model.explain(X)                # a shap.Explanation (log-odds, exact TreeSHAP)
    shap.plots.waterfall(explanation[0]); shap.plots.beeswarm(explanation)

This sits beside ``service.scoring`` rather than in it: the scoring core is numpy and pyarrow only, and this
API speaks pandas and shap. The bundle is verified and checked servable exactly as the service loads it, and
the numbers are the engine's (service/frames.py): contributions from LightGBM's exact TreeSHAP, equal to
``shap.TreeExplainer``'s, whose sum plus the base value is the margin the PD is calibrated from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import shap

from service.batch.chunks import build_all
from service.batch.features import feature_table
from service.frames import Scores, decode, feature_matrix, score_matrix, scores_frame
from service.scoring.bundle import Bundle, load_bundle
from service.scoring.raw import RawData, load_folder
from service.scoring.registry import Registry, RegistryError, default_registry

ID_COLUMNS = ("application_id", "enterprise_id", "application_date")


@dataclass(frozen=True)
class NotebookModel:
    """A verified bundle with pandas-facing methods; ``bundle`` is the object the service itself scores with."""

    bundle: Bundle

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.bundle.feature_names

    def features(self, data: RawData | Path | str, *, allowed_sources: list[str] | None = None) -> pd.DataFrame:
        """Features of every application in a data folder (or loaded RawData), built by the batch feature code
        (``smecredit features``): indexed by application_id, with enterprise_id, application_date, the
        ``used_<source>`` flags and the label when the folder has it. Catalog models only."""
        if self.bundle.kind != "catalog":
            raise ValueError(f"model {self.version} is a '{self.bundle.kind}' model: its features come from your "
                             "own table, not from raw contract data; pass that table to score()")
        raw = data if isinstance(data, RawData) else load_folder(Path(data))
        fm = build_all(raw, allowed_sources=allowed_sources)
        table = feature_table(raw, fm).to_pandas()
        features = decode(self.bundle, fm.values, index=table.index)
        rest = table.drop(columns=list(fm.names))
        return pd.concat([rest, features], axis=1).set_index("application_id")

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """The float64 matrix the model reads (categories as codes), in the bundle's feature order."""
        return feature_matrix(self.bundle, frame)

    def scores(self, frame: pd.DataFrame) -> Scores:
        """The engine's numbers as arrays."""
        return score_matrix(self.bundle, self.matrix(frame))

    def score(self, frame: pd.DataFrame) -> pd.DataFrame:
        """pd, score, grade, margin, base_value and ``contribution:<feature>`` per row, with the frame's index."""
        return scores_frame(self.bundle, self.scores(frame), index=frame.index)

    def explain(self, frame: pd.DataFrame) -> shap.Explanation:
        """TreeSHAP contributions as a ``shap.Explanation`` in log-odds (what shap.TreeExplainer gives for this
        model), ready for ``shap.plots.waterfall(e[i])``, ``beeswarm(e)`` and ``bar(e)``. ``data`` holds the
        model's inputs (category codes), ``display_data`` the values as written (category labels)."""
        X = self.matrix(frame)
        s = score_matrix(self.bundle, X)
        display = decode(self.bundle, X).astype(object).to_numpy()
        return shap.Explanation(values=s.contributions, base_values=s.base_value, data=X, display_data=display,
                                feature_names=list(self.feature_names))


def load_model(version: str | None = None, *, registry: Path | str | None = None) -> NotebookModel:
    """A registered bundle (default: the champion) from ``registry`` (default: $SMECREDIT_REGISTRY or models),
    verified (digests, feature-code version) and checked servable in a child process, as the service does."""
    reg = Registry(registry or default_registry())
    version = version or reg.champion()
    if version is None:
        raise RegistryError(f"no champion in {reg.root}; pass a version (smecredit models list shows them)")
    return NotebookModel(load_bundle(reg.path(version)))
