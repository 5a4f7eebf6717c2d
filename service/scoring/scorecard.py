"""A scorecard as data: bins, weight of evidence and logistic coefficients, read from ``scorecard.json``.

A scorecard's log-odds are additive per characteristic: ``margin = intercept + sum_i coef_i * WoE_i(bin of x_i)``.
Its exact contributions are therefore per characteristic; they are stated against each characteristic's best
bin (the one with the lowest log-odds of default), so that in score points every contribution is the points
*lost* below that characteristic's maximum, the classic adverse-action method, and the base value is the
intercept plus every characteristic's best term (the score of an applicant at every maximum). Contributions
plus the base value equal the margin, as TreeSHAP's do, so the engine explains both models the same way.

Bins follow optbinning's rules, which fitted them: a numeric value ``v`` falls in bin ``i`` when
``splits[i-1] <= v < splits[i]`` (``np.digitize(v, splits, right=False)``); a missing value (NaN) has its own
bin; a category not seen in training gets ``unknown_woe`` (optbinning's: the WoE of the mean default rate).
Pure numpy: this runs on the scoring path.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass

import numpy as np

from service.scoring.score import Scorer

FORMAT = "smecredit-scorecard/1"


class ScorecardFormatError(ValueError):
    """``scorecard.json`` does not describe a scorecard this code can score; the message says what is wrong."""


@dataclass(frozen=True)
class Bin:
    label: str  # as a risk analyst reads it: "[0.25, 0.50)", "[制造业, 批发零售]", "Missing"
    woe: float
    count: int
    events: int  # defaults among the training rows in the bin

    def to_json(self) -> dict:
        return {"label": self.label, "woe": self.woe, "count": self.count, "events": self.events}

    @classmethod
    def from_json(cls, d: dict) -> Bin:
        return cls(str(d["label"]), float(d["woe"]), int(d["count"]), int(d["events"]))


@dataclass(frozen=True)
class Characteristic:
    """One feature of the scorecard: its bins (the missing bin last), their WoE and its coefficient."""

    feature: str
    index: int  # the feature's column in the model's input
    kind: str  # "numerical" or "categorical"
    splits: tuple[float, ...]  # numerical: the bin edges
    categories: tuple[tuple[float, ...], ...]  # categorical: the category codes of each bin
    bins: tuple[Bin, ...]  # the regular bins, then the missing bin
    unknown_woe: float  # categorical: a category not seen in training
    coefficient: float
    iv: float

    def __post_init__(self) -> None:
        regular = len(self.splits) + 1 if self.kind == "numerical" else len(self.categories)
        if self.kind not in ("numerical", "categorical"):
            raise ScorecardFormatError(f"{self.feature}: kind must be numerical or categorical, got {self.kind!r}")
        if len(self.bins) != regular + 1:
            raise ScorecardFormatError(f"{self.feature}: {len(self.bins)} bins, expected {regular} and a missing bin")
        if list(self.splits) != sorted(set(self.splits)) or not all(map(math.isfinite, self.splits)):
            raise ScorecardFormatError(f"{self.feature}: splits must be finite and strictly increasing")
        codes = [c for group in self.categories for c in group]
        if len(codes) != len(set(codes)):
            raise ScorecardFormatError(f"{self.feature}: a category is in two bins")
        values = [self.coefficient, self.unknown_woe, *(b.woe for b in self.bins)]
        if not all(map(math.isfinite, values)):
            raise ScorecardFormatError(f"{self.feature}: WoE and coefficient must be finite")
        order = np.argsort(codes, kind="stable")
        object.__setattr__(self, "_codes", np.asarray(codes, dtype=np.float64)[order])
        object.__setattr__(self, "_code_bin", np.repeat(np.arange(len(self.categories)),
                                                        [len(g) for g in self.categories])[order])
        object.__setattr__(self, "_splits", np.asarray(self.splits, dtype=np.float64))

    @property
    def missing_bin(self) -> int:
        return len(self.bins) - 1

    @property
    def unknown_bin(self) -> int:
        """Categorical: the index standing for a category not seen in training (after the missing bin)."""
        return len(self.bins)

    def terms(self) -> np.ndarray:
        """``coef * WoE`` of each bin (the missing bin, then the unknown category last): log-odds of default."""
        return self.coefficient * np.array([*(b.woe for b in self.bins), self.unknown_woe])

    def bin_of(self, x: np.ndarray) -> np.ndarray:
        """The bin index of each value (``missing_bin`` for NaN, ``unknown_bin`` for an unseen category)."""
        missing = np.isnan(x)
        if self.kind == "numerical":
            idx = np.digitize(x, self._splits, right=False)
        else:
            at = np.minimum(np.searchsorted(self._codes, x), max(len(self._codes) - 1, 0))
            known = (self._codes[at] == x) if len(self._codes) else np.zeros(len(x), dtype=bool)
            idx = np.where(known, self._code_bin[at] if len(self._codes) else 0, self.unknown_bin)
        return np.where(missing, self.missing_bin, idx)

    def to_json(self) -> dict:
        return {"feature": self.feature, "index": self.index, "kind": self.kind, "splits": list(self.splits),
                "categories": [list(g) for g in self.categories], "bins": [b.to_json() for b in self.bins],
                "unknown_woe": self.unknown_woe, "coefficient": self.coefficient, "iv": self.iv}

    @classmethod
    def from_json(cls, d: dict) -> Characteristic:
        return cls(str(d["feature"]), int(d["index"]), str(d["kind"]), tuple(float(s) for s in d["splits"]),
                   tuple(tuple(float(c) for c in g) for g in d["categories"]),
                   tuple(Bin.from_json(b) for b in d["bins"]), float(d["unknown_woe"]), float(d["coefficient"]),
                   float(d["iv"]))


@dataclass(frozen=True)
class ScorecardModel:
    """The fitted scorecard: an intercept and the characteristics the binning kept (the others score 0)."""

    feature_names: tuple[str, ...]  # every input column, in order; characteristics refer to them by index
    intercept: float
    characteristics: tuple[Characteristic, ...]

    def __post_init__(self) -> None:
        if not math.isfinite(self.intercept):
            raise ScorecardFormatError("the intercept must be finite")
        for c in self.characteristics:
            if not 0 <= c.index < len(self.feature_names) or self.feature_names[c.index] != c.feature:
                raise ScorecardFormatError(f"characteristic {c.feature!r} does not match input column {c.index}")
        if len({c.index for c in self.characteristics}) != len(self.characteristics):
            raise ScorecardFormatError("a feature has two characteristics")
        # Per characteristic, each bin's term less the best regular-or-missing bin's: the contribution table.
        best = [float(c.terms()[:-1].min()) for c in self.characteristics]
        object.__setattr__(self, "_lost", tuple(c.terms() - b for c, b in zip(self.characteristics, best,
                                                                             strict=True)))
        object.__setattr__(self, "_base", self.intercept + math.fsum(best))

    @property
    def base_value(self) -> float:
        """The margin of an applicant in every characteristic's best bin."""
        return self._base

    def bins(self, X: np.ndarray) -> np.ndarray:
        """(rows, characteristics) bin indices."""
        X = _matrix(X, len(self.feature_names))
        return np.column_stack([c.bin_of(X[:, c.index]) for c in self.characteristics]) if self.characteristics \
            else np.zeros((len(X), 0), dtype=np.int64)

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """One column per input feature (0 for a feature the scorecard does not use) plus the base value last;
        each row sums to the margin. Each is the log-odds above the characteristic's best bin, so >= 0 (an unseen
        category, scored at the mean, may be below it)."""
        X = _matrix(X, len(self.feature_names))
        out = np.zeros((len(X), len(self.feature_names) + 1))
        for c, lost in zip(self.characteristics, self._lost, strict=True):
            out[:, c.index] = lost[c.bin_of(X[:, c.index])]
        out[:, -1] = self._base
        return out

    def margin(self, X: np.ndarray) -> np.ndarray:
        """Log-odds of default: the row sums of ``contributions`` (so the two always agree)."""
        return self.contributions(X).sum(axis=1)

    def to_json(self) -> dict:
        return {"format": FORMAT, "feature_names": list(self.feature_names), "intercept": self.intercept,
                "characteristics": [c.to_json() for c in self.characteristics]}

    @classmethod
    def from_json(cls, d: dict) -> ScorecardModel:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ScorecardFormatError(f"not a scorecard of format {FORMAT}")
        try:
            return cls(tuple(str(n) for n in d["feature_names"]), float(d["intercept"]),
                       tuple(Characteristic.from_json(c) for c in d["characteristics"]))
        except (KeyError, TypeError) as exc:
            raise ScorecardFormatError(f"scorecard.json is incomplete ({type(exc).__name__}: {exc})") from exc


def _matrix(X: np.ndarray, width: int) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != width:
        raise ValueError(f"X must have shape (rows, {width}), got {X.shape}")
    return X


# --- the points table: what a risk team reads and what ``models export --format scorecard`` writes ------------

POINTS_COLUMNS = ("feature", "label_en", "label_zh", "bin_id", "bin", "lower", "upper", "codes", "count", "events",
                  "event_rate", "woe", "iv", "coefficient", "points", "points_lost")
UNSEEN = "(unseen category)"


def points_table(model: ScorecardModel, scorer: Scorer, labels: dict[str, tuple[str, str]]) -> list[dict]:
    """One row per bin (the missing bin, and for a categorical feature an unseen category, included). A row's
    ``points`` add up, one bin per characteristic, to the unclipped score: the scaling's offset and the
    calibrated intercept are shared equally between the characteristics, as optbinning's pdo/odds scaling
    does. ``points_lost`` is the same bin's points below the characteristic's best bin: the reasons' points.
    ``lower``/``upper`` (numeric: ``lower <= x < upper``) and ``codes`` (categories) locate the bin exactly."""
    if not model.characteristics:
        return []
    factor, slope = scorer.scaling.factor, scorer.calibration.slope
    share = (scorer.scaling.offset - factor * (slope * model.intercept + scorer.calibration.intercept)) \
        / len(model.characteristics)
    rows = []
    for c in model.characteristics:
        points = -factor * slope * c.terms() + share
        best = float(points[:-1].max())
        edges = (-math.inf, *c.splits, math.inf)
        label_en, label_zh = labels.get(c.feature, (c.feature, c.feature))
        shown = [*c.bins, Bin(UNSEEN, c.unknown_woe, 0, 0)] if c.kind == "categorical" else c.bins
        for b, (bin_, p) in enumerate(zip(shown, points.tolist(), strict=False)):
            regular = b < len(c.bins) - 1
            numeric = c.kind == "numerical" and regular
            rows.append({
                "feature": c.feature, "label_en": label_en, "label_zh": label_zh, "bin_id": b, "bin": bin_.label,
                "lower": edges[b] if numeric else None, "upper": edges[b + 1] if numeric else None,
                "codes": ";".join(f"{code:g}" for code in c.categories[b]) if c.kind == "categorical" and regular
                else None,
                "count": bin_.count, "events": bin_.events,
                "event_rate": bin_.events / bin_.count if bin_.count else None, "woe": bin_.woe, "iv": c.iv,
                "coefficient": c.coefficient, "points": p, "points_lost": p - best})
    return rows


def csv_text(columns: tuple[str, ...], rows: list[dict]) -> str:
    """RFC 4180 CSV; floats as Python writes them (the shortest text that reads back as the same double)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows([{k: "" if v is None else v for k, v in row.items()} for row in rows])
    return out.getvalue()
