"""pandas in and out of a bundle: a DataFrame of features to the model's matrix, scores back to a DataFrame.

The one pandas adapter, shared by the notebook API (service/notebook.py) and the MLflow export's pyfunc
(service/export/pyfunc_model.py); ``service.scoring`` stays free of pandas. A frame holds one column per
feature, named as the bundle names it (catalogue names, or a table's columns as written); other columns (ids,
labels) are ignored. Categorical cells hold the category label, as in ``POST /v1/scores/features``; missing
values are NaN or None; a table model's unseen level takes the code of its rare levels ("(other)"), as in
training. Scores are computed as the engine computes them: exact TreeSHAP contributions, their row sum as the
margin, then the bundle's calibration, points and grade.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from service.scoring.bundle import Bundle
from service.scoring.tabular import OTHER, level

CONTRIBUTION_PREFIX = "contribution:"  # output columns: contribution:<feature>, in log-odds (TreeSHAP)


class FrameError(ValueError):
    """A DataFrame does not fit the model; the message names the column."""


@dataclass(frozen=True)
class Scores:
    """What the engine computes for each row, before the lender's policy."""

    margin: np.ndarray  # (n,) raw LightGBM margin = contributions.sum(1) + base_value
    pd: np.ndarray  # (n,) calibrated probability of default
    score: np.ndarray  # (n,) points, rounded and clipped
    grade: np.ndarray  # (n,) grade names
    contributions: np.ndarray  # (n, F) exact TreeSHAP, log-odds
    base_value: np.ndarray  # (n,) TreeSHAP's expected value (the same for every row)


def feature_matrix(bundle: Bundle, frame: pd.DataFrame) -> np.ndarray:
    """The (n, F) float64 matrix the model reads, in the bundle's feature order; categories as their index."""
    if not isinstance(frame, pd.DataFrame):
        raise FrameError(f"expected a pandas DataFrame of features, got {type(frame).__name__}")
    specs = bundle.metadata["features"]
    missing = [f["name"] for f in specs if f["name"] not in frame.columns]
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise FrameError(f"missing feature columns: {shown} (model {bundle.version} needs every feature as a "
                         "column; NaN where the value is missing)")
    X = np.empty((len(frame), len(specs)), dtype=np.float64)
    for j, spec in enumerate(specs):
        X[:, j] = _column(spec, frame[spec["name"]])
    return X


def _column(spec: dict, col: pd.Series) -> np.ndarray:
    name, categories = spec["name"], spec["categories"]
    if categories:
        codes, uniques = pd.factorize(col.to_numpy(dtype=object), use_na_sentinel=True)  # -1: missing
        index = {c: float(i) for i, c in enumerate(categories)}
        mapped = np.empty(len(uniques) + 1)
        mapped[-1] = np.nan
        for k, value in enumerate(uniques):
            text = level(value)  # 11, 11.0 and "11" are one level, as at training (service/scoring/tabular.py)
            if text is None:
                mapped[k] = np.nan
            elif text in index:
                mapped[k] = index[text]
            elif OTHER in index:  # a table model: an unseen level scores as its rare levels do, as in the API
                mapped[k] = index[OTHER]
            else:
                raise FrameError(f"column {name}: {text!r} is not a category of this feature; one of "
                                 f"{', '.join(categories[:20])}")
        return mapped[codes]
    if not (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col) or col.isna().all()):
        raise FrameError(f"column {name}: must be numeric (NaN where missing), got dtype {col.dtype}")
    return col.to_numpy(dtype=np.float64, na_value=np.nan)


def decode(bundle: Bundle, X: np.ndarray, index: Sequence | None = None) -> pd.DataFrame:
    """The inverse of ``feature_matrix``: one column per feature, categories as their label (None if missing)."""
    columns: dict[str, object] = {}
    for j, spec in enumerate(bundle.metadata["features"]):
        if spec["categories"]:
            labels = np.array(spec["categories"], dtype=object)
            codes = X[:, j]
            known = ~np.isnan(codes)
            col = np.full(len(codes), None, dtype=object)
            col[known] = labels[codes[known].astype(np.int64)]
            columns[spec["name"]] = col  # plain labels (object), which MLflow's string columns accept
        else:
            columns[spec["name"]] = X[:, j]
    return pd.DataFrame(columns, index=index)


def score_matrix(bundle: Bundle, X: np.ndarray) -> Scores:
    """The engine's arithmetic (``Engine.decide_many`` and ``POST /v1/scores/features``) on a matrix."""
    contrib = bundle.contributions(X)
    margin = contrib.sum(axis=1)
    pd_, score, grade = bundle.scorer.apply(margin)
    return Scores(margin=margin, pd=pd_, score=score, grade=grade.astype(str), contributions=contrib[:, :-1],
                  base_value=contrib[:, -1])


def scores_frame(bundle: Bundle, scores: Scores, index: Sequence | None = None) -> pd.DataFrame:
    """pd, score, grade, margin, base_value and one ``contribution:<feature>`` column per feature."""
    out = pd.DataFrame({"pd": scores.pd, "score": scores.score, "grade": scores.grade, "margin": scores.margin,
                        "base_value": scores.base_value}, index=index)
    contributions = pd.DataFrame(scores.contributions, index=out.index,
                                 columns=[CONTRIBUTION_PREFIX + n for n in bundle.feature_names])
    return pd.concat([out, contributions], axis=1)


def score_frame(bundle: Bundle, frame: pd.DataFrame) -> pd.DataFrame:
    """Score a DataFrame of features; the result keeps the frame's index."""
    return scores_frame(bundle, score_matrix(bundle, feature_matrix(bundle, frame)), index=frame.index)
