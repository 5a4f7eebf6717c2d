"""Calendar months as integers: the one month arithmetic of the contract, the features and the graph."""

from __future__ import annotations

import numpy as np

NO_MONTH = np.iinfo(np.int64).min  # month index of an empty month cell (NaT), e.g. a loan's missing default_month


def month_index(dates: np.ndarray) -> np.ndarray:
    """Calendar months since 1970-01 for datetime64 values (month-start arithmetic in integers)."""
    return dates.astype("datetime64[M]").astype(np.int64)


def month_start(index: np.ndarray | int) -> np.ndarray:
    return np.asarray(index).astype("datetime64[M]").astype("datetime64[D]")
