"""The options a risk team gives with its table (``--exclude``, ``--categorical``, ``--monotone``, ``--protected``,
``--allow-protected``, ``--date``), checked against the table before anything trains: each bad value is refused
with the option's name and the rule it breaks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd


class TableError(ValueError):
    """The user's table cannot be trained on; the message names the column (or option) and the problem."""


@dataclass(frozen=True)
class TableOptions:
    """How to read a table: which columns play which role, and what the risk team declared about them."""

    id_column: str | None = None
    date_column: str | None = None
    positive: str | None = None
    exclude: Sequence[str] = ()
    categorical: Sequence[str] = ()
    monotone: Sequence[str] = ()  # "COLUMN=+1" (more risk as it grows) or "COLUMN=-1"
    protected: Sequence[str] = ()
    allow_protected: str | None = None  # why protected columns may be model inputs (recorded in the card)
    directions: dict[str, int] = field(init=False, default_factory=dict)

    def check(self, columns: Sequence[str], target: str) -> TableOptions:
        """Refuse unknown columns, roles given twice and malformed values; returns self with ``directions``."""
        known = set(columns)
        shown = ", ".join(map(str, columns[:30])) + (" ..." if len(columns) > 30 else "")
        roles = {target: "the target", self.id_column: "--id", self.date_column: "--date"}

        def column(option: str, name: str) -> str:
            if name not in known:
                raise TableError(f"{option} '{name}': no such column in the table (columns: {shown})")
            if name in roles:
                raise TableError(f"{option} '{name}': that column is {roles[name]}, not a feature")
            return name

        for option, names in (("--exclude", self.exclude), ("--categorical", self.categorical),
                              ("--protected", self.protected)):
            for name in names:
                column(option, name)
        for name in self.categorical:
            if name in self.exclude:
                raise TableError(f"--categorical '{name}': the column is also given to --exclude")
        directions: dict[str, int] = {}
        for spec in self.monotone:
            name, sep, value = spec.rpartition("=")  # a column name may itself hold '='
            if not sep or not name:
                raise TableError(f"--monotone '{spec}': write COLUMN=+1 (risk rises with the value) or COLUMN=-1")
            if value.strip() not in ("+1", "1", "-1"):
                raise TableError(f"--monotone '{spec}': the direction must be +1 or -1, got '{value}'")
            column("--monotone", name)
            if name in directions:
                raise TableError(f"--monotone '{name}': given twice")
            if name in self.exclude:
                raise TableError(f"--monotone '{name}': the column is also given to --exclude")
            if name in self.categorical:
                raise TableError(f"--monotone '{name}': a categorical column has no order to constrain")
            directions[name] = -1 if value.strip() == "-1" else 1
        if self.allow_protected is not None and not self.allow_protected.strip():
            raise TableError("--allow-protected: give the reason protected columns may be model inputs "
                             "(it is recorded in the model card)")
        object.__setattr__(self, "directions", directions)
        return self


DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%Y%m%d", "%Y-%m", "ISO8601")
ACCEPTED_DATES = ("a date or timestamp column (Parquet), text YYYY-MM-DD, YYYY/MM/DD, YYYYMMDD or YYYY-MM "
                  "(a time after the date is allowed), or whole numbers YYYYMMDD")
DATE_RANGE = (np.datetime64("1900-01-01"), np.datetime64("2100-12-31"))


def parse_dates(column: pd.Series, name: str) -> np.ndarray:
    """The ``--date`` column as datetime64[D]; anything else is refused with a sample value and the formats
    accepted (a number such as an age is not read as nanoseconds after 1970)."""
    if column.isna().any():
        row = int(np.flatnonzero(column.isna().to_numpy())[0])
        raise TableError(f"--date column '{name}' has {int(column.isna().sum())} empty values (first at data row "
                         f"{row + 1}); every row needs a date")
    if pd.api.types.is_datetime64_any_dtype(column):
        parsed = column
    elif pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        whole = (column % 1 == 0) & column.between(19000101, 21001231)
        parsed = pd.to_datetime(column.where(whole).astype("Int64").astype(str), format="%Y%m%d", errors="coerce")
    else:
        text = column.astype(str).str.strip()
        parsed = None
        for fmt in DATE_FORMATS:
            attempt = pd.to_datetime(text, format=fmt, errors="coerce")
            if parsed is None or attempt.notna().sum() > parsed.notna().sum():
                parsed = attempt
            if parsed.notna().all():
                break
    dates = parsed.to_numpy().astype("datetime64[D]")
    bad = np.isnat(dates) | (dates < DATE_RANGE[0]) | (dates > DATE_RANGE[1])
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise TableError(f"--date column '{name}' is not a date: {int(bad.sum())} of {len(dates)} values are not, "
                         f"e.g. '{column.iloc[row]}' (data row {row + 1}); accepted: {ACCEPTED_DATES}")
    return dates
