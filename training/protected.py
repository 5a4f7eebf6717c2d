"""Protected attributes: found by column name (English and Chinese) or declared, and turned into the groups the
fairness checks compare.

Detection is by words in the name, not substrings: ``age_in_years`` and ``年龄`` are protected, ``percentage``
and ``biz_age_months`` (the age of a business, not of a person) are not.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from service.scoring import tabular
from training.evaluate import age_band

# English words that name a protected attribute of a person (lower case, whole words of the column name).
_WORDS = {
    "age": "age", "ages": "age", "dob": "age", "birth": "age", "birthday": "age", "birthdate": "age",
    "sex": "sex or gender", "gender": "sex or gender",
    "marital": "marital status", "married": "marital status", "marriage": "marital status",
    "race": "race or ethnicity", "racial": "race or ethnicity", "ethnic": "race or ethnicity",
    "ethnicity": "race or ethnicity", "afam": "race or ethnicity", "black": "race or ethnicity",
    "white": "race or ethnicity", "hispanic": "race or ethnicity", "hispan": "race or ethnicity",
    "religion": "religion", "religious": "religion", "faith": "religion",
    "nationality": "nationality", "citizenship": "nationality", "citizen": "nationality",
    "disability": "disability", "disabled": "disability", "pregnancy": "pregnancy", "pregnant": "pregnancy",
}
# Word pairs (consecutive words of the name).
_PAIRS = {
    ("personal", "status"): "marital status (personal status)", ("foreign", "worker"): "nationality",
    ("national", "origin"): "nationality", ("sexual", "orientation"): "sexual orientation",
}
# Chinese terms, matched anywhere in the name (Chinese names have no word breaks).
_CHINESE = {
    "年龄": "age", "出生": "age", "性别": "sex or gender", "婚姻": "marital status", "婚否": "marital status",
    "民族": "race or ethnicity", "种族": "race or ethnicity", "宗教": "religion", "信仰": "religion",
    "国籍": "nationality", "残疾": "disability", "怀孕": "pregnancy",
}
# "age" preceded by one of these is the age of a thing, not of a person (firm_age, account_age, ...).
_THINGS = {"firm", "company", "business", "biz", "enterprise", "account", "loan", "credit", "vehicle", "car",
           "asset", "building", "property", "house", "home", "debt", "invoice", "record", "file", "line",
           "card", "contract", "relationship", "shop", "store"}


def _words(name: str) -> list[str]:
    """Lower-case words of a column name: split at anything not a letter or digit and at camelCase."""
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name)
    return [w for w in re.split(r"[^0-9a-zA-Z]+", spaced.lower()) if w]


def protected_reason(name: str) -> str | None:
    """Which protected attribute the column's name says it holds, or None."""
    for term, what in _CHINESE.items():
        if term in name:
            return what
    words = _words(name)
    for pair in zip(words, words[1:], strict=False):
        if pair in _PAIRS:
            return _PAIRS[pair]
    for k, w in enumerate(words):
        if w in _WORDS and not (_WORDS[w] == "age" and k and words[k - 1] in _THINGS):
            return _WORDS[w]
    return None


MIN_GROUP_ROWS = 30  # a level with fewer rows joins the OTHER group: an approval rate of 5 rows means nothing


def fairness_groups(column: pd.Series, reason: str) -> np.ndarray:
    """One group label per row: age bands for a numeric age, quartile bands for another number, the level for
    text (rare levels together), "unknown" where the value is missing."""
    numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
    if numeric and column.nunique(dropna=True) > 10:
        values = column.astype(np.float64).to_numpy()
        if reason == "age":
            return age_band(values)
        edges = np.unique(np.nanquantile(values, [0.25, 0.5, 0.75]))
        labels = np.array([f"q{k + 1}" for k in range(len(edges) + 1)], dtype=object)
        out = labels[np.searchsorted(edges, np.nan_to_num(values, nan=-np.inf), side="right")]
        out[np.isnan(values)] = "unknown"
        return out
    text = pd.Series(tabular.levels(column), dtype=object)
    counts = text.value_counts()
    rare = set(counts[counts < MIN_GROUP_ROWS].index)
    return np.array(["unknown" if t is None else tabular.OTHER if t in rare else t for t in text], dtype=object)
