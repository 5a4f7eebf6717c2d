"""Post-loan monitoring of a book: rescore every live loan as of a month with the same engine, add the operating
signals, warn, and recommend each credit line's next step (service/monitoring/lines.py); and measure, month by
month over a past period, how early the warnings came.

The same code serves ``smecredit monitor portfolio`` (a data folder with its book) and the API. Rescoring reads
only what a lender would have had: as of month T, the complete months before T (point in time, as a decision).
The PD "then" is the loan's origination, scored as of its origination month by the same model, so that a
change of model does not read as a change of the borrower.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from service.monitoring.lines import LineRecommendation, recommend
from service.monitoring.warning import EarlyWarning, Rescored, WarningQuality, assess, signal_rules, warning_quality
from service.scoring.engine import Engine
from service.scoring.explain import Reason, group_points, principal_reasons
from service.scoring.features import build_features, gather_windows
from service.scoring.policy import Policy
from service.scoring.raw import NO_MONTH, RawData, month_start
from service.scoring.signals import Signals, operating_signals

LOSS_CONFIG = Path(__file__).resolve().parents[1] / "monitoring" / "stress_config.yaml"  # LGD and CCF by product


@dataclass(frozen=True)
class LossParameters:
    lgd: dict[str, float]
    ccf: dict[str, float]

    @classmethod
    def shipped(cls) -> LossParameters:
        products = yaml.safe_load(LOSS_CONFIG.read_text(encoding="utf-8"))["products"]
        return cls({p: float(v["lgd"]) for p, v in products.items()}, {p: float(v["ccf"]) for p, v in products.items()})


@dataclass(frozen=True)
class PortfolioRun:
    as_of_month: int  # month index: the data read ends with the month before
    watched: int  # live loans rescored
    warnings: list[EarlyWarning]
    model_version: str
    policy_version: str
    recommendations: list[LineRecommendation] = field(default_factory=list)  # one per live line

    @property
    def as_of(self) -> str:
        return str(month_start(self.as_of_month))[:7]


def live_loans(book: dict, as_of_month: int) -> np.ndarray:
    """Rows of loans running at the start of ``as_of_month``: originated before it, not yet due, not defaulted
    before it. At the book's own date the recorded status decides (a repaid loan is not live)."""
    started = book["origination_month"] < as_of_month
    running = book["origination_month"] + book["term_months"] >= as_of_month
    defaulted = (book["default_month"] != NO_MONTH) & (book["default_month"] < as_of_month)
    live = started & running & ~defaulted
    if as_of_month > int(np.max(book["as_of_month"])):
        live &= np.isin(book["status"], ("current", "past_due"))
    return np.flatnonzero(live)


def _default_months(book: dict) -> list[int | None]:
    return [None if d == NO_MONTH else int(d) for d in book["default_month"]]


@dataclass(frozen=True)
class BookScores:
    """Live loans of a book scored as of their origination and as of a month: arrays, one entry per loan,
    so that a million loans cost a few vectorised passes; reasons are phrased only for those warned."""

    data: RawData
    rows: np.ndarray  # rows of data.book
    features_now: np.ndarray  # (n, F)
    points_now: np.ndarray  # (n, F) score points, exact TreeSHAP
    pd_then: np.ndarray
    grade_then: np.ndarray
    pd_now: np.ndarray
    grade_now: np.ndarray
    exposure: np.ndarray
    lgd: np.ndarray
    signals: Signals

    def borrowers(self) -> list[Rescored]:
        book = self.data.book
        indicators = self.signals.indicators
        return [Rescored(
            loan_id=str(book["loan_id"][r]), enterprise_id=str(book["enterprise_id"][r]),
            exposure=float(self.exposure[k]), lgd=float(self.lgd[k]), pd_then=float(self.pd_then[k]),
            grade_then=str(self.grade_then[k]), pd_now=float(self.pd_now[k]), grade_now=str(self.grade_now[k]),
            signals=self.signals.names(k),
            indicators={name: float(v[k]) for name, v in indicators.items() if not np.isnan(v[k])})
            for k, r in enumerate(self.rows)]

    def explain(self, warnings: list[EarlyWarning], engine: Engine) -> list[EarlyWarning]:
        """The same reasons as a decision's (what pulls the score down now), for the warned loans only."""
        reasons = self.reasons_of({w.loan_id for w in warnings}, engine)
        return [dataclasses.replace(w, reasons=reasons[w.loan_id]) for w in warnings]

    def reasons_of(self, loan_ids: Collection[str], engine: Engine) -> dict[str, tuple[Reason, ...]]:
        """The decision's reason engine on each of these loans as of now."""
        book, profile = self.data.book, self.data.profile
        out = {}
        for k, r in enumerate(self.rows):
            loan = str(book["loan_id"][r])
            if loan not in loan_ids:
                continue
            x, points = self.features_now[k], self.points_now[k]
            industry = str(profile["industry"][book["enterprise_row"][r]])
            out[loan] = tuple(principal_reasons(engine.names, x, points, engine.medians.get(industry),
                                                group_points(engine.names, x, points)))
        return out


def score_book(*, data: RawData, engine: Engine, policy: Policy, rows: np.ndarray, as_of_month: int,
               loss: LossParameters) -> BookScores:
    """The loans at ``rows`` of the book: scored as of their origination and as of ``as_of_month``."""
    book = data.book
    n = len(rows)
    then = month_start(book["origination_month"][rows])
    now = np.repeat(month_start(np.int64(as_of_month)), n)
    apps = {
        "application_id": np.concatenate([book["loan_id"][rows], book["loan_id"][rows]]).astype(object),
        "enterprise_id": np.concatenate([book["enterprise_id"][rows]] * 2).astype(object),
        "enterprise_row": np.concatenate([book["enterprise_row"][rows]] * 2),
        "application_date": np.concatenate([then, now]).astype("datetime64[D]"),
        "requested_amount": np.concatenate([book["limit"][rows]] * 2).astype(np.float64),
        "term_months": np.concatenate([book["term_months"][rows]] * 2).astype(np.int64),
        "purpose": np.array(["working_capital"] * (2 * n), dtype=object),
    }
    # The folder's related-party graph, read as of each date: a neighbour's default after origination shows in
    # the PD now (contagion), as it would in a new decision.
    raw = RawData(profile=data.profile, applications=apps, monthly=data.monthly, graph=data.graph)
    windows = gather_windows(raw)
    fm = build_features(raw, windows=windows)
    contrib = engine.bundle.contributions(fm.values) if n else np.empty((0, len(engine.names) + 1))
    pd, _, grade = engine.bundle.scorer.apply(contrib.sum(axis=1))
    signals = operating_signals(windows, signal_rules(policy.spec.early_warning))
    now_signals = Signals(fired=signals.fired[n:], indicators={k: v[n:] for k, v in signals.indicators.items()})
    product = book["product"][rows]
    ccf = np.array([loss.ccf[str(p)] for p in product], dtype=np.float64)
    undrawn = np.maximum(book["limit"][rows] - book["drawn"][rows], 0.0)
    return BookScores(
        data=data, rows=rows, features_now=fm.values[n:], points_now=contrib[n:, :-1] * engine.points_per_margin,
        pd_then=pd[:n], grade_then=grade[:n], pd_now=pd[n:], grade_now=grade[n:],
        exposure=book["outstanding"][rows] + ccf * undrawn,
        lgd=np.array([loss.lgd[str(p)] for p in product], dtype=np.float64), signals=now_signals)


BookScorer = Callable[..., BookScores]  # score_book, or the same mapped on a cluster (service/batch/distributed.py)


def monitor_portfolio(*, data: RawData, engine: Engine, policy: Policy, as_of_month: int | None = None,
                      loss: LossParameters | None = None, score: BookScorer | None = None) -> PortfolioRun:
    """Warnings and line recommendations for the book as of ``as_of_month`` (default: the month after the book
    date, i.e. now); the engine's reasons are phrased once per loan warned, cut or frozen. ``score`` takes
    score_book's keyword arguments; the default is score_book itself."""
    if data.book is None:
        raise ValueError("the data folder has no loan book (loans.parquet); monitoring needs one")
    as_of = int(np.max(data.book["as_of_month"])) + 1 if as_of_month is None else as_of_month
    rows = live_loans(data.book, as_of)
    scores = (score or score_book)(data=data, engine=engine, policy=policy, rows=rows, as_of_month=as_of,
                                   loss=loss or LossParameters.shipped())
    warnings = assess(scores.borrowers(), policy.spec.early_warning, policy.grades)
    lines = recommend(scores, policy, as_of_month=as_of)
    acted = {r.loan_id for r in lines if r.action in ("cut", "freeze")}
    reasons = scores.reasons_of({w.loan_id for w in warnings} | acted, engine)
    return PortfolioRun(as_of, len(rows), [dataclasses.replace(w, reasons=reasons[w.loan_id]) for w in warnings],
                        engine.version, policy.version,
                        [dataclasses.replace(r, engine_reasons=reasons[r.loan_id]) if r.loan_id in acted else r
                         for r in lines])


@dataclass(frozen=True)
class WarningEvaluation:
    quality: WarningQuality
    months: list[str]  # the monitoring dates, YYYY-MM
    warnings_per_month: list[int]


def evaluate_warnings(*, data: RawData, engine: Engine, policy: Policy, months: int = 12,
                      loss: LossParameters | None = None) -> WarningEvaluation:
    """Run the monitor as of each of the last ``months`` months up to the book date, as a lender would have,
    and compare the first warning of each loan with its default month (the book's ground truth)."""
    if data.book is None:
        raise ValueError("the data folder has no loan book (loans.parquet); the evaluation needs one")
    if not 1 <= months <= 36:
        raise ValueError(f"months must be between 1 and 36, got {months}")
    loss = loss or LossParameters.shipped()
    last = int(np.max(data.book["as_of_month"]))
    dates = list(range(last - months + 1, last + 1))
    first_warning: dict[str, int] = {}
    watched: dict[str, tuple[int, int]] = {}
    per_month = []
    for t in dates:
        rows = live_loans(data.book, t)
        borrowers = score_book(data=data, engine=engine, policy=policy, rows=rows, as_of_month=t,
                               loss=loss).borrowers()
        for b in borrowers:
            first, _ = watched.get(b.loan_id, (t, t))
            watched[b.loan_id] = (first, t)
        warned = assess(borrowers, policy.spec.early_warning, policy.grades)
        per_month.append(len(warned))
        for w in warned:
            first_warning.setdefault(w.loan_id, t)
    defaults = dict(zip([str(x) for x in data.book["loan_id"]], _default_months(data.book), strict=True))
    return WarningEvaluation(warning_quality(first_warning, defaults, watched),
                             [str(month_start(t))[:7] for t in dates], per_month)
