"""Performance monitoring, once for the CLI and the API: back-test a labelled data folder (offline), and the
expected performance of recent decisions (the database). Computations are service/monitoring/backtest.py's."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy.orm import Session

from service.batch.score import score_folder
from service.db import performance as perf_db
from service.monitoring import backtest as bt
from service.scoring.policy import Policy
from service.scoring.raw import (
    CONTRACT,
    MONTHLY_SOURCES,
    ContractError,
    business_today,
    find_file,
    month_index,
    read_arrow,
    validate_table,
)

MAX_WINDOW_DAYS = 731  # two years of decisions per request: a full maturity cycle and then some


# ---------------------------------------------------------------------------------------------------------
# (a) Offline: a data folder with outcomes, scored by the champion (or any version) as `smecredit score` does.


@dataclass(frozen=True)
class LabelledScores:
    """Scored applications of a folder with their outcomes; ``mature`` where the 12 months have passed."""

    model_version: str
    application_id: np.ndarray
    pd: np.ndarray
    score: np.ndarray  # score points (higher = safer); the AUCs are the score's
    grade: np.ndarray
    month: np.ndarray  # application month index (months since 1970-01)
    defaulted: np.ndarray  # 0/1 as the file holds it; meaningful only where mature
    mature: np.ndarray
    last_month: int  # the data's last month: the newest month of any monthly source

    def grade_order(self) -> list[str]:
        """Grades from safest to riskiest (grades are PD bands, so their lowest PDs are in band order)."""
        names = sorted(set(self.grade.tolist()))
        return sorted(names, key=lambda g: float(self.pd[self.grade == g].min()))

    def scaled(self, factors: dict[str, float]) -> LabelledScores:
        """The same applications with the PDs of some grades multiplied (a what-if, and how the tests build a
        deliberately miscalibrated grade)."""
        pd = self.pd.copy()
        for g, f in factors.items():
            pd[self.grade == g] = np.clip(pd[self.grade == g] * f, 0.0, 1.0)
        return dataclasses.replace(self, pd=pd)


@dataclass(frozen=True)
class BacktestResult:
    model_version: str
    last_data_month: str  # YYYY-MM
    mature_until: str  # applications up to this month (included) have mature outcomes
    applications: int
    mature_applications: int
    backtest: bt.Backtest

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def month_label(m: int) -> str:
    return f"{1970 + m // 12:04d}-{m % 12 + 1:02d}"


def _last_data_month(folder: Path) -> int:
    """The newest month of any monthly source, read from the month columns alone."""
    newest = None
    for name in MONTHLY_SOURCES:
        path = find_file(folder, name)
        if path is None:
            continue
        table = pq.read_table(path, columns=["month"]) if path.suffix == ".parquet" else read_arrow(path)
        value = pc.max(table.column("month")).as_py()
        if value is None:
            continue
        m = int(month_index(np.array([np.datetime64(str(value)[:10], "D")]))[0])
        newest = m if newest is None else max(newest, m)
    if newest is None:
        raise ContractError(str(folder), "no monthly records: the data's last month, which dates maturity, is unknown")
    return newest


def labelled_scores(*, folder: Path, bundle_dir: Path, policy: Policy) -> LabelledScores:
    """Score ``folder`` with the bundle in ``bundle_dir`` (through ``score_folder``, as `smecredit score`) and join
    each application's ``defaulted_12m``; outcomes mature for applications at least 12 months before the data's
    last month."""
    path = find_file(folder, "applications") if folder.is_dir() else None
    if path is None:
        raise ContractError(str(folder), "data folder does not exist or has no applications file")
    apps = validate_table(path.name, CONTRACT["applications"], read_arrow(path), business_today())
    if "defaulted_12m" not in apps:
        raise ContractError(path.name, "back-testing needs outcomes: the defaulted_12m column is missing",
                            column="defaulted_12m")
    last = _last_data_month(folder)
    scored = score_folder(folder, bundle_dir, policy)
    ids = np.asarray(scored.column("application_id").to_pylist(), dtype=object)
    position = {a: i for i, a in enumerate(apps["application_id"].tolist())}
    rows = np.array([position[a] for a in ids], dtype=np.int64)
    months = month_index(apps["application_date"][rows])
    labels = apps["defaulted_12m"][rows]
    known = ~np.isnan(labels.astype(np.float64))
    return LabelledScores(
        model_version=str(scored.column("model_version")[0]) if scored.num_rows else "",
        application_id=ids, pd=np.asarray(scored.column("pd").to_pylist(), dtype=np.float64),
        score=np.asarray(scored.column("score").to_pylist(), dtype=np.float64),
        grade=np.asarray(scored.column("grade").to_pylist(), dtype=object), month=months,
        defaulted=np.where(known, labels, 0).astype(np.int64),
        mature=known & (months <= last - bt.MATURITY_MONTHS), last_month=last)


def run_backtest(scores: LabelledScores, *, by: str = "month", alpha: float = bt.DEFAULT_ALPHA,
                 two_sided: bool = False, samples: int = bt.DEFAULT_SAMPLES, seed: int = 0) -> BacktestResult:
    """Back-test already scored applications (see ``labelled_scores``)."""
    result = bt.backtest(pd=scores.pd, grade=scores.grade, month=scores.month, defaulted=scores.defaulted,
                         mature=scores.mature, grade_order=scores.grade_order(), risk=-scores.score, by=by,
                         alpha=alpha,
                         two_sided=two_sided, samples=samples, seed=seed)
    return BacktestResult(model_version=scores.model_version, last_data_month=month_label(scores.last_month),
                          mature_until=month_label(scores.last_month - bt.MATURITY_MONTHS),
                          applications=len(scores.pd), mature_applications=int(scores.mature.sum()),
                          backtest=result)


def backtest_folder(*, folder: Path, bundle_dir: Path, policy: Policy, by: str = "month",
                    alpha: float = bt.DEFAULT_ALPHA, two_sided: bool = False, samples: int = bt.DEFAULT_SAMPLES,
                    seed: int = 0) -> BacktestResult:
    """Score a labelled folder and back-test it by vintage and grade."""
    if by not in ("month", "quarter"):
        raise ValueError(f"by must be 'month' or 'quarter', got {by!r}")
    bt.check_alpha(alpha)  # before the minutes of scoring, not after
    return run_backtest(labelled_scores(folder=folder, bundle_dir=bundle_dir, policy=policy), by=by, alpha=alpha,
                        two_sided=two_sided, samples=samples, seed=seed)


# ---------------------------------------------------------------------------------------------------------
# (b) The database: expected performance of recent decisions, realised where the book knows the outcome.


class WindowError(ValueError):
    """A bad window, naming the parameter (``since`` or ``until``) and the rule."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field, self.rule = field, rule


@dataclass(frozen=True)
class GradeExpectation:
    grade: str
    n: int
    expected_default_rate: float  # the grade's mean PD


@dataclass(frozen=True)
class VintageExpectation:
    vintage: str  # application month, YYYY-MM
    estimate: bt.Estimate  # every decision of the vintage: expected only
    matured: bt.Estimate | None  # the decisions whose loan outcome is known: expected, band and realised


@dataclass(frozen=True)
class PerformanceResult:
    tenant_id: int | None
    since: dt.date
    until: dt.date  # inclusive
    decisions: int
    model_versions: list[str]
    overall: bt.Estimate | None  # None when the window holds no decision
    matured: bt.Estimate | None  # the decisions whose loan outcome is known, with the realised values
    vintages: list[VintageExpectation]
    grades: list[GradeExpectation]
    realised_source: str  # where realised outcomes would come from, and whether any were found

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def check_window(since: dt.date, until: dt.date | None, *, today: dt.date | None = None) -> tuple[dt.date, dt.date]:
    today = today or dt.datetime.now(dt.UTC).date()
    until = until or today
    if since > today:
        raise WindowError("since", f"must not be in the future (today is {today.isoformat()})")
    if until < since:
        raise WindowError("until", f"must be on or after since ({since.isoformat()})")
    if (until - since).days >= MAX_WINDOW_DAYS:
        raise WindowError("until", f"the window may span at most {MAX_WINDOW_DAYS} days; ask for a shorter one")
    return since, until


def expected_performance(session: Session, *, tenant_id: int | None, since: dt.date, until: dt.date | None = None,
                         samples: int = bt.DEFAULT_SAMPLES, seed: int = 0) -> PerformanceResult:
    """Expected default rate and AUC of the decisions recorded from ``since`` to ``until`` (inclusive, UTC days),
    overall, by application month and by grade; realised next to them where the book holds mature outcomes."""
    since, until = check_window(since, until)
    start = dt.datetime.combine(since, dt.time(), tzinfo=dt.UTC)
    end = dt.datetime.combine(until + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    rows = perf_db.decisions_between(session, tenant_id=tenant_id, since=start, until=end)
    outcomes = perf_db.realised_defaults(session, decision_ids=[r.decision_id for r in rows], as_of=until)
    source = (f"loan book: {len(outcomes)} decision(s) with a closed 12-month window" if outcomes
              else "none yet: no decision in the window became a loan whose 12-month window has closed")
    if not rows:
        return PerformanceResult(tenant_id=tenant_id, since=since, until=until, decisions=0, model_versions=[],
                                 overall=None, matured=None, vintages=[], grades=[], realised_source=source)
    pd = np.array([r.pd for r in rows])
    risk = -np.array([r.score for r in rows])  # the score's AUC: higher points, safer
    grade = np.array([r.grade for r in rows], dtype=object)
    months = np.array([r.application_date.year * 12 + r.application_date.month - 1 - 1970 * 12 for r in rows])
    known = np.array([r.decision_id in outcomes for r in rows])
    y = np.array([bool(outcomes.get(r.decision_id, False)) for r in rows])

    def matured(idx: np.ndarray, seed_: int) -> bt.Estimate | None:
        """Expected and realised on the decisions of ``idx`` whose outcome is known (the same ones for both)."""
        idx = idx[known[idx]]
        if not len(idx):
            return None
        return bt.with_realised(bt.estimate(pd[idx], risk=risk[idx], samples=samples, seed=seed_), risk=risk[idx],
                                defaulted=y[idx])

    everyone = np.arange(len(rows))
    labels = bt.vintage_labels(months)
    vintages = []
    for k, v in enumerate(sorted(set(labels.tolist()))):
        idx = np.flatnonzero(labels == v)
        vintages.append(VintageExpectation(v, bt.estimate(pd[idx], risk=risk[idx], samples=samples,
                                                          seed=seed + 1 + k),
                                           matured(idx, seed + 1 + k)))
    order = sorted(set(grade.tolist()), key=lambda g: float(pd[grade == g].min()))
    grades = [GradeExpectation(g, int((grade == g).sum()), float(pd[grade == g].mean())) for g in order]
    return PerformanceResult(tenant_id=tenant_id, since=since, until=until, decisions=len(rows),
                             model_versions=sorted({r.model_version for r in rows}),
                             overall=bt.estimate(pd, risk=risk, samples=samples, seed=seed),
                             matured=matured(everyone, seed),
                             vintages=vintages, grades=grades, realised_source=source)
