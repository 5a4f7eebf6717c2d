"""From the model's raw score to a calibrated PD, score points and a grade.

Calibration is Platt scaling on the raw margin: ``logit(PD) = slope * margin + intercept``. Being linear in
the margin, it keeps every TreeSHAP contribution convertible into score points by one constant
(``points_per_margin``), so reasons and scores always add up.

Score points follow the usual scorecard scaling: ``score = offset + factor * ln(good:bad odds)`` with
``factor = pdo / ln 2`` and ``offset`` chosen so that ``base_odds`` scores ``base_score``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Calibration:
    slope: float
    intercept: float
    method: str = "platt"

    def logit(self, margin: np.ndarray) -> np.ndarray:
        return self.slope * np.asarray(margin, dtype=np.float64) + self.intercept

    def pd(self, margin: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logit(margin)))

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Scaling:
    base_score: float = 600.0
    base_odds: float = 50.0  # good:bad odds that score base_score
    pdo: float = 20.0  # points to double the odds
    min_score: float = 300.0
    max_score: float = 900.0

    @property
    def factor(self) -> float:
        return self.pdo / math.log(2.0)

    @property
    def offset(self) -> float:
        return self.base_score - self.factor * math.log(self.base_odds)

    def score_from_logit(self, logit_pd: np.ndarray) -> np.ndarray:
        """Unclipped score: ln(odds good:bad) = -logit(PD)."""
        return self.offset - self.factor * np.asarray(logit_pd, dtype=np.float64)

    def score(self, logit_pd: np.ndarray) -> np.ndarray:
        return np.clip(np.round(self.score_from_logit(logit_pd)), self.min_score, self.max_score)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Grade:
    name: str
    max_pd: float  # upper bound (exclusive) of the band; the last grade takes the rest


@dataclass(frozen=True)
class Grades:
    bands: tuple[Grade, ...]

    def __post_init__(self) -> None:
        bounds = [g.max_pd for g in self.bands]
        if not bounds or bounds != sorted(bounds) or len(set(bounds)) != len(bounds) or bounds[-1] < 1.0:
            raise ValueError("grades must have strictly increasing max_pd, the last one >= 1.0")
        # Built once: of() runs on every score request.
        object.__setattr__(self, "_edges", np.array(bounds[:-1]))
        object.__setattr__(self, "_names", np.array([g.name for g in self.bands], dtype=object))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.bands)

    def of(self, pd: np.ndarray) -> np.ndarray:
        return self._names[np.searchsorted(self._edges, np.asarray(pd), side="right")]

    def to_json(self) -> list[dict]:
        return [asdict(g) for g in self.bands]

    @classmethod
    def from_json(cls, bands: list[dict]) -> Grades:
        return cls(tuple(Grade(b["name"], float(b["max_pd"])) for b in bands))


DEFAULT_GRADES = Grades((Grade("A", 0.005), Grade("B", 0.01), Grade("C", 0.02), Grade("D", 0.04),
                         Grade("E", 0.08), Grade("F", 0.15), Grade("G", 1.0)))


@dataclass(frozen=True)
class Scorer:
    """Everything needed to turn raw margins into PD, score and grade."""

    calibration: Calibration
    scaling: Scaling
    grades: Grades

    @property
    def points_per_margin(self) -> float:
        """Score points per unit of raw margin: a contribution c moves the score by c * this."""
        return -self.scaling.factor * self.calibration.slope

    def apply(self, margin: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        logit_pd = self.calibration.logit(margin)
        pd = 1.0 / (1.0 + np.exp(-logit_pd))
        return pd, self.scaling.score(logit_pd), self.grades.of(pd)

    def to_json(self) -> dict:
        return {"calibration": self.calibration.to_json(), "scaling": self.scaling.to_json(),
                "grades": self.grades.to_json()}

    @classmethod
    def from_json(cls, d: dict) -> Scorer:
        return cls(Calibration(**d["calibration"]), Scaling(**d["scaling"]), Grades.from_json(d["grades"]))
