"""Training configuration: one YAML file, validated with clear messages, defaults that train a good model."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_CONFIG = Path(__file__).with_name("configs") / "default.yaml"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitConfig(Strict):
    """Out-of-time split by application date: train < valid_from <= valid < test_from <= test."""

    valid_from: dt.date | None = None
    test_from: dt.date | None = None
    # Used when dates are not given: the latest share of applications goes to test, the one before to valid.
    valid_share: float = Field(0.2, gt=0, lt=0.5)
    test_share: float = Field(0.2, gt=0, lt=0.5)

    @model_validator(mode="after")
    def _ordered(self) -> SplitConfig:
        if (self.valid_from is None) != (self.test_from is None):
            raise ValueError("give both valid_from and test_from, or neither")
        if self.valid_from and self.test_from and self.valid_from >= self.test_from:
            raise ValueError("valid_from must be before test_from")
        return self


class LightGBMConfig(Strict):
    learning_rate: float = Field(0.05, gt=0, le=1)
    num_leaves: int = Field(7, ge=2, le=1024)
    max_depth: int = Field(3, ge=-1, le=32)
    min_data_in_leaf: int = Field(80, ge=1)
    feature_fraction: float = Field(0.8, gt=0, le=1)
    bagging_fraction: float = Field(0.8, gt=0, le=1)
    bagging_freq: int = Field(1, ge=0)
    lambda_l2: float = Field(1.0, ge=0)
    num_boost_round: int = Field(400, ge=1, le=20000)
    early_stopping_rounds: int = Field(50, ge=1)
    num_threads: int = Field(2, ge=1)
    # Categorical splits (LightGBM's defaults; a table's candidate shapes scale them to its size).
    cat_smooth: float = Field(10.0, ge=0)
    cat_l2: float = Field(10.0, ge=0)
    min_data_per_group: int = Field(100, ge=1)
    max_cat_to_onehot: int = Field(8, ge=1)


class ScalingConfig(Strict):
    base_score: float = 600.0
    base_odds: float = Field(50.0, gt=0)
    pdo: float = Field(20.0, gt=0)


class GradeConfig(Strict):
    name: str
    max_pd: float = Field(gt=0, le=1)


class TrainConfig(Strict):
    seed: int = 7
    split: SplitConfig = SplitConfig()
    lightgbm: LightGBMConfig = LightGBMConfig()
    # Share of training rows added again with one whole source withheld, so that thin files and withdrawn
    # consent are seen in training (features recomputed without the source, not zeroed).
    source_masking_rate: float = Field(0.15, ge=0, le=1)
    scaling: ScalingConfig = ScalingConfig()
    grades: list[GradeConfig] = Field(default_factory=lambda: [
        GradeConfig(name=n, max_pd=p) for n, p in
        (("A", 0.005), ("B", 0.01), ("C", 0.02), ("D", 0.04), ("E", 0.08), ("F", 0.15), ("G", 1.0))])
    approval_pd_cutoff: float = Field(0.05, gt=0, lt=1)  # the default cut-off for approval-rate comparisons
    fairness_min_ratio: float = Field(0.8, gt=0, le=1)  # the four-fifths rule
    challenger_bins: int = Field(6, ge=2, le=20)


def load_config(path: Path | None) -> TrainConfig:
    """Read a YAML config; unknown keys and bad values fail with the key path and the rule."""
    path = path or DEFAULT_CONFIG
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot be read as YAML ({exc})") from exc
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ValueError(f"{path}: {where}: {first['msg']}") from exc
