"""Score scaling, grades and calibration: the numbers a lender reads must follow the stated conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.scoring.score import DEFAULT_GRADES, Calibration, Grade, Grades, Scaling, Scorer


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_base_odds_score_the_base_score() -> None:
    s = Scaling()
    assert s.score_from_logit(np.array([logit(1 / 51)]))[0] == pytest.approx(600.0)  # good:bad 50:1


def test_twenty_points_double_the_odds() -> None:
    s = Scaling()
    a = s.score_from_logit(np.array([logit(1 / 51)]))[0]
    b = s.score_from_logit(np.array([logit(1 / 101)]))[0]  # odds 100:1
    assert b - a == pytest.approx(20.0)


def test_scores_are_rounded_and_clipped() -> None:
    s = Scaling()
    assert s.score(np.array([logit(1e-12), logit(0.999999)])).tolist() == [900.0, 300.0]


def test_grades_follow_pd_bands() -> None:
    pd = np.array([0.001, 0.005, 0.0099, 0.03, 0.2, 0.99])
    assert DEFAULT_GRADES.of(pd).tolist() == ["A", "B", "B", "D", "G", "G"]


def test_grades_must_be_ordered_and_cover_everything() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        Grades((Grade("A", 0.02), Grade("B", 0.01), Grade("C", 1.0)))
    with pytest.raises(ValueError, match="the last one >= 1.0"):
        Grades((Grade("A", 0.02), Grade("B", 0.5)))


def test_points_per_margin_converts_contributions_exactly() -> None:
    scorer = Scorer(Calibration(slope=0.9, intercept=-0.4), Scaling(), DEFAULT_GRADES)
    m1, m2 = np.array([-3.2]), np.array([-2.7])
    s1 = scorer.scaling.score_from_logit(scorer.calibration.logit(m1))[0]
    s2 = scorer.scaling.score_from_logit(scorer.calibration.logit(m2))[0]
    assert s2 - s1 == pytest.approx(scorer.points_per_margin * (m2 - m1)[0])
    assert scorer.points_per_margin < 0  # more margin (more risk) means fewer points


def test_scorer_round_trips_through_json() -> None:
    scorer = Scorer(Calibration(slope=1.1, intercept=0.2), Scaling(pdo=40), DEFAULT_GRADES)
    again = Scorer.from_json(scorer.to_json())
    assert again == scorer
