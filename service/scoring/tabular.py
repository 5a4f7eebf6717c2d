"""A table model's categorical values as the codes its LightGBM model splits on: one function for training and
for scoring, so a level means the same code in both.

A categorical feature of a table model lists its levels in ``categories``; the last one is ``OTHER``, which
stands for the levels too rare to learn from at training and for every level first seen at scoring time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

OTHER = "(other)"  # rare levels at training and unseen levels at scoring share this code


def level(value: object) -> str | None:
    """The text of a categorical value, or None when it is missing. A whole float is written as an integer, so
    that ``11``, ``11.0`` and ``"11"`` are one level whether the value came from a CSV or from JSON."""
    if value is None:
        return None
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return None
        if float(value).is_integer():
            return str(int(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def levels(values: Iterable[object]) -> list[str | None]:
    return [level(v) for v in values]


def encode(values: Iterable[object], categories: Sequence[str]) -> np.ndarray:
    """Codes (float, NaN for missing) of ``values`` for a feature with these ``categories``; a level not among
    them gets the code of ``OTHER`` when the feature has it (every table model trained since it existed), and
    NaN otherwise."""
    index = {c: float(i) for i, c in enumerate(categories)}
    unseen = index.get(OTHER, math.nan)
    return np.array([math.nan if (t := level(v)) is None else index.get(t, unseen) for v in values],
                    dtype=np.float64)
