"""Stress tests: what a macro scenario would do to the loan book.

A scenario (YAML, ``service/monitoring/scenarios/``) shocks the operating data of the book's live borrowers
over the last ``horizon_months`` months before the book date: revenue, electricity, bill-payment delays,
social-insurance contributions, per industry and region. Every live loan is then scored twice with the same
``Engine.score`` as a new application dated in the month after the book date (amount = the loan's limit, term
= its term): on the data as it is (baseline) and on the shocked data (stressed). From the two runs come PD,
expected loss (PD x LGD x EAD), the grade migration matrix, the approval rate under the lender's policy and the
concentration of exposure and loss, per segment, with the change explained by reason group and by reason.

Pure: numpy, pyarrow, pydantic and the scoring core; no web, no database, no pandas.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.batch.chunks import build_all
from service.scoring.catalog import FEATURE_NAMES, GROUPS, features_of_source
from service.scoring.engine import Engine, Scored
from service.scoring.features import FeatureMatrix
from service.scoring.policy import Policy, config_errors
from service.scoring.raw import (
    INDUSTRIES,
    MONTHLY_SOURCES,
    PURPOSES,
    REGIONS,
    ContractError,
    RawData,
    Table,
    consented_related,
    month_start,
    raw_for_applicant,
    sheet_row,
)

SCENARIOS_DIR = Path(__file__).with_name("scenarios")
CONFIG_FILE = Path(__file__).with_name("stress_config.yaml")
LIVE_STATUSES = ("current", "past_due")
PRODUCTS = ("term_loan", "revolving_line")
MIN_AMOUNT, MAX_AMOUNT, MAX_TERM = 1000.0, 1e8, 60  # the applications contract's bounds (raw.py)
MAX_DAYS_LATE = 366  # the utilities contract's bound on days_paid_late
PD_BINS = np.concatenate([[0.0], np.geomspace(0.001, 0.5, 19), [1.0]])  # log-spaced: PDs span three decades


class ScenarioError(ValueError):
    """A scenario that cannot be used; the message names the file, the key path and the rule broken."""


# ---------------------------------------------------------------------------------------------------------
# The scenario format.


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Industry = Literal[tuple(INDUSTRIES)]  # type: ignore[valid-type]
Region = Literal[REGIONS]  # type: ignore[valid-type]


class Filters(_Strict):
    """Which borrowers a shock hits: all filters must match; an empty filter matches everyone."""

    industry: Annotated[list[Industry], Field(min_length=1, max_length=20)] | None = None
    region: Annotated[list[Region], Field(min_length=1, max_length=4)] | None = None
    except_industry: Annotated[list[Industry], Field(min_length=1, max_length=20)] | None = None
    except_region: Annotated[list[Region], Field(min_length=1, max_length=4)] | None = None


class Shock(_Strict):
    name: Annotated[str, Field(max_length=80)] = ""
    filters: Filters = Filters()
    revenue: Annotated[float, Field(gt=-1.0, le=1.0)] = 0.0  # relative change: -0.25 = a quarter less
    electricity: Annotated[float, Field(gt=-1.0, le=1.0)] = 0.0
    payment_delay_days: Annotated[int, Field(ge=0, le=120)] = 0
    si_missed_share: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0


class Scenario(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    description: Annotated[str, Field(max_length=500)] = ""
    horizon_months: Annotated[int, Field(ge=1, le=24)]
    rates_bp: Annotated[int, Field(ge=-300, le=1000)] = 0
    seed: Annotated[int, Field(ge=0)] = 0
    shocks: Annotated[list[Shock], Field(max_length=50)] = []

    @model_validator(mode="after")
    def _named_shocks(self) -> Scenario:
        names = [s.name for s in self.shocks if s.name]
        if len(names) != len(set(names)):
            raise ValueError("shock names must be distinct")
        return self


def parse_scenario(data: object, *, source: str = "scenario") -> Scenario:
    """A scenario from parsed YAML or JSON; ScenarioError naming the source, the key path and the rule."""
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: a scenario must be a mapping with name, horizon_months and shocks, "
                            f"got {type(data).__name__}")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(config_errors(exc, source)) from None


def shipped_scenarios() -> list[str]:
    return sorted(p.stem for p in SCENARIOS_DIR.glob("*.yaml"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A shipped scenario by name (mild, severe, extreme) or a YAML file by path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        if str(name_or_path) not in shipped_scenarios():
            raise ScenarioError(f"unknown scenario {str(name_or_path)!r}: use one of {shipped_scenarios()} or "
                                "the path of a .yaml file")
        path = SCENARIOS_DIR / f"{name_or_path}.yaml"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read the scenario file ({exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: invalid YAML ({exc})") from exc
    return parse_scenario(data, source=path.name)


# ---------------------------------------------------------------------------------------------------------
# Configuration: LGD and CCF by product, the rate sensitivity of PD.


class ProductParams(_Strict):
    lgd: Annotated[float, Field(ge=0.0, le=1.0)]
    ccf: Annotated[float, Field(ge=0.0, le=1.0)]


class StressConfig(_Strict):
    products: dict[Literal[PRODUCTS], ProductParams]  # type: ignore[valid-type]
    pd_logit_per_100bp: Annotated[float, Field(ge=0.0, le=2.0)]
    segments: list[Literal["industry", "region", "product"]]

    @model_validator(mode="after")
    def _every_product(self) -> StressConfig:
        missing = [p for p in PRODUCTS if p not in self.products]
        if missing:
            raise ValueError(f"products: LGD and CCF are needed for {missing}")
        return self


def load_config(path: Path = CONFIG_FILE) -> StressConfig:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        return StressConfig.model_validate(data)
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioError(f"{path}: cannot read the stress configuration ({exc})") from exc
    except ValidationError as exc:
        raise ScenarioError(config_errors(exc, Path(path).name)) from None


# ---------------------------------------------------------------------------------------------------------
# The book.


@dataclass(frozen=True)
class BookLoans:
    """The live loans as new applications: the RawData to score, and what the book says about each loan."""

    raw: RawData  # applications: one per live loan, dated the month after its shock_end
    as_of_month: int  # month index of the book date
    shock_end: np.ndarray  # per enterprise row of ``raw``: the last month shocked and seen (the book date, or
    # the newest month of a stored request's data when that is earlier)
    loan_id: np.ndarray
    product: np.ndarray
    ead: np.ndarray
    lgd: np.ndarray
    apr: np.ndarray
    industry: np.ndarray
    region: np.ndarray
    not_live: dict[str, int]  # status -> loans left out (repaid, defaulted)
    # Per application row, the loans whose applicant did not consent to links (stored requests): no related-party
    # feature for them. None: a folder's book, whose own graph covers every firm.
    links_withheld: np.ndarray | None = None


def _as_of(book: Table, file: str) -> int:
    months = np.unique(book["as_of_month"])
    if months.size != 1:
        raise ContractError(file, f"as_of_month must be the same on every row, found {months.size} months",
                            column="as_of_month")
    return int(months[0])


def _live(book: Table, file: str) -> tuple[int, np.ndarray, dict[str, int]]:
    if len(book["loan_id"]) == 0:
        raise ContractError(file, "the loan book has no loans")
    as_of = _as_of(book, file)
    status = np.asarray(book["status"], dtype=object)
    live = np.isin(status, LIVE_STATUSES)
    not_live = {str(s): int(c) for s, c in zip(*np.unique(status[~live], return_counts=True), strict=True)}
    if not live.any():
        raise ContractError(file, "no live loan (status current or past_due) to stress", column="status")
    return as_of, np.flatnonzero(live), not_live


def _as_applications(book: Table, rows: np.ndarray, end: np.ndarray, ent: np.ndarray, enterprise_ids: np.ndarray,
                     purpose: np.ndarray) -> Table:
    return {
        "application_id": np.asarray(book["loan_id"][rows], dtype=object),
        "enterprise_id": enterprise_ids,
        "application_date": month_start(end + 1).astype("datetime64[D]"),
        # the applications contract's bounds; a loan beyond them is scored at the bound
        "requested_amount": np.clip(book["limit"][rows].astype(float), MIN_AMOUNT, MAX_AMOUNT),
        "term_months": np.clip(book["term_months"][rows].astype(float), 1, MAX_TERM),
        "purpose": purpose,
        "enterprise_row": ent,
    }


def _assemble(raw: RawData, book: Table, rows: np.ndarray, as_of: int, shock_end: np.ndarray,
              config: StressConfig, not_live: dict[str, int]) -> BookLoans:
    product = np.asarray(book["product"][rows], dtype=object)
    lgd = np.array([config.products[p].lgd for p in product])
    ccf = np.array([config.products[p].ccf for p in product])
    undrawn = np.maximum(book["limit"][rows] - book["drawn"][rows], 0.0)
    ent = raw.applications["enterprise_row"]
    return BookLoans(raw=raw, as_of_month=as_of, shock_end=shock_end, loan_id=raw.applications["application_id"],
                     product=product,
                     ead=book["outstanding"][rows] + ccf * undrawn, lgd=lgd, apr=book["apr"][rows].astype(float),
                     industry=np.asarray(raw.profile["industry"][ent], dtype=object),
                     region=np.asarray(raw.profile["region"][ent], dtype=object), not_live=not_live)


def book_loans(data: RawData, book: Table, config: StressConfig, *, file: str = "loans") -> BookLoans:
    """Live loans (current, past due) of ``book`` as applications dated the month after the book date, for
    enterprises of the data folder ``data``; an unknown enterprise is a ContractError naming the book's row."""
    as_of, rows, not_live = _live(book, file)
    ids = {e: i for i, e in enumerate(data.profile["enterprise_id"])}
    ent = np.empty(len(rows), dtype=np.int64)
    for k, r in enumerate(rows):
        e = ids.get(book["enterprise_id"][r])
        if e is None:
            raise ContractError(file, f"unknown enterprise '{book['enterprise_id'][r]}' (not in the data folder's "
                                "profile)", row=sheet_row(r), column="enterprise_id")
        ent[k] = e
    purpose = np.full(len(rows), "working_capital", dtype=object)
    if "application_id" in book:  # the purpose of the application the loan came from, when the folder has it
        apps = dict(zip(data.applications["application_id"], data.applications["purpose"], strict=True))
        for k, r in enumerate(rows):
            p = apps.get(book["application_id"][r])
            purpose[k] = p if p in PURPOSES else "working_capital"
    end = np.full(len(rows), as_of, dtype=np.int64)
    applications = _as_applications(book, rows, end, ent, data.profile["enterprise_id"][ent], purpose)
    # The folder's related-party graph stays with the book (it was dropped before: no loan had graph features).
    raw = RawData(profile=data.profile, applications=applications, monthly=data.monthly, links=data.links,
                  graph=data.graph).select(np.arange(len(rows)))
    return _assemble(raw, book, rows, as_of, np.full(raw.n_enterprises, as_of, dtype=np.int64), config, not_live)


def loans_from_requests(requests: list[dict | None], book: Table, config: StressConfig, *,
                        file: str = "loans") -> tuple[BookLoans, int]:
    """Live loans of ``book`` rescored from the stored score requests of their decisions (one per loan, None
    when its raw data is gone), each with only the sources its applicant consented to. Returns the loans and
    how many live loans had no raw data left (they are not scored)."""
    as_of, rows, not_live = _live(book, file)
    have = [r for r in rows if requests[r] is not None]
    missing = len(rows) - len(have)
    if not have:
        raise ContractError(file, f"none of the {len(rows)} live loans has raw operating data left to rescore "
                            "(consent withdrawn or retention expired)")
    rows = np.array(have, dtype=np.int64)
    pieces = []
    for r in rows:
        req = requests[r]
        consent = req.get("consent", {})
        monthly = {s: req.get("data", {}).get(s) or [] for s in MONTHLY_SOURCES if consent.get(s)}
        application = {**req["application"], "enterprise_id": req["profile"]["enterprise_id"]}
        pieces.append(raw_for_applicant(req["profile"], application, monthly, consented_related(req)))
    withheld = np.array([requests[r].get("consent", {}).get("links") is not True for r in rows])
    related = {e: rel for p in pieces for e, rel in (p.related or {}).items()}
    profile = {k: np.concatenate([p.profile[k] for p in pieces]) for k in pieces[0].profile}
    monthly_all: dict[str, Table] = {}
    for source in MONTHLY_SOURCES:
        parts = [(k, p.monthly[source]) for k, p in enumerate(pieces) if source in p.monthly]
        if parts:
            monthly_all[source] = {c: np.concatenate([t[c] if c != "enterprise_row" else t[c] + k
                                                      for k, t in parts]) for c in parts[0][1]}
    purpose = np.array([p.applications["purpose"][0] if p.applications["purpose"][0] in PURPOSES
                        else "working_capital" for p in pieces], dtype=object)
    # A stored request holds the data up to its application: score each loan on the newest months it has
    # (never past the book date), and shock those. The newest month of any source: a source that stopped
    # reporting earlier (no tax filing for months) is a signal, not the end of the data.
    newest = np.full(len(rows), np.iinfo(np.int64).min)
    for t in monthly_all.values():
        np.maximum.at(newest, t["enterprise_row"], t["month"])
    end = np.where(newest > np.iinfo(np.int64).min, np.minimum(newest, as_of), as_of)
    ent = np.arange(len(rows), dtype=np.int64)
    applications = _as_applications(book, rows, end, ent, profile["enterprise_id"], purpose)
    raw = RawData(profile=profile, applications=applications, monthly=monthly_all, related=related or None)
    return replace(_assemble(raw, book, rows, as_of, end, config, not_live), links_withheld=withheld), missing


# ---------------------------------------------------------------------------------------------------------
# Applying a scenario to the operating data.


def _matches(f: Filters, industry: np.ndarray, region: np.ndarray) -> np.ndarray:
    m = np.ones(len(industry), dtype=bool)
    if f.industry is not None:
        m &= np.isin(industry, f.industry)
    if f.region is not None:
        m &= np.isin(region, f.region)
    if f.except_industry is not None:
        m &= ~np.isin(industry, f.except_industry)
    if f.except_region is not None:
        m &= ~np.isin(region, f.except_region)
    return m


REVENUE_FIELDS = {"payments": ("inflow", "outflow"), "tax": ("declared_sales", "vat_paid", "invoice_amount")}
REVENUE_COUNTS = {"tax": ("invoices_issued",)}
ELECTRICITY_FIELDS = ("electricity_kwh", "electricity_bill")


def apply_scenario(raw: RawData, scenario: Scenario, end_month: int | np.ndarray) -> tuple[RawData, dict[str, int]]:
    """The operating data with the scenario applied to the ``horizon_months`` months ending with ``end_month``
    (the book date; or one month per enterprise row), and how many enterprises each shock hit. Shocks compose:
    a borrower matched by two gets both (revenue x (1 + r1)(1 + r2), delays d1 + d2). Only the fields a shock
    touches are copied."""
    industry = np.asarray(raw.profile["industry"], dtype=object)
    region = np.asarray(raw.profile["region"], dtype=object)
    n_ent = raw.n_enterprises
    revenue = np.ones(n_ent)
    electricity = np.ones(n_ent)
    delay = np.zeros(n_ent)
    stop_si = np.zeros(n_ent, dtype=bool)
    hit: dict[str, int] = {}
    for k, shock in enumerate(scenario.shocks):
        m = _matches(shock.filters, industry, region)
        hit[shock.name or f"shock {k + 1}"] = int(m.sum())
        revenue[m] *= 1.0 + shock.revenue
        electricity[m] *= 1.0 + shock.electricity
        delay[m] += shock.payment_delay_days
        if shock.si_missed_share > 0:
            # which firms stop paying is drawn once per shock, reproducibly from the scenario's seed
            draw = np.random.default_rng([scenario.seed, k]).random(n_ent)
            stop_si |= m & (draw < shock.si_missed_share)
    last = np.broadcast_to(np.asarray(end_month, dtype=np.int64), (n_ent,))
    first = last - scenario.horizon_months + 1
    monthly = dict(raw.monthly)

    def shocked(name: str, factor: np.ndarray) -> tuple[Table, np.ndarray] | None:
        t = raw.monthly.get(name)
        if t is None:
            return None
        e = t["enterprise_row"]
        in_window = (t["month"] >= first[e]) & (t["month"] <= last[e])
        return dict(t), in_window & (factor[t["enterprise_row"]] != 0)

    def scale(t: Table, field: str, rows: np.ndarray, factor: np.ndarray, *, count: bool = False) -> None:
        values = t[field].copy()
        new = values[rows] * factor[t["enterprise_row"][rows]]
        values[rows] = np.round(new) if count else new
        t[field] = values

    if (revenue != 1).any():
        for name in ("payments", "tax"):
            got = shocked(name, revenue != 1)
            if got is None:
                continue
            t, rows = got
            for field in REVENUE_FIELDS[name]:
                scale(t, field, rows, revenue)
            for field in REVENUE_COUNTS.get(name, ()):
                scale(t, field, rows, revenue, count=True)
            monthly[name] = t
    if (electricity != 1).any() or (delay != 0).any():
        got = shocked("utilities", (electricity != 1) | (delay != 0))
        if got is not None:
            t, rows = got
            for field in ELECTRICITY_FIELDS:
                scale(t, field, rows, electricity)
            late = t["days_paid_late"].copy()
            late[rows] = np.minimum(late[rows] + delay[t["enterprise_row"][rows]], MAX_DAYS_LATE)
            t["days_paid_late"] = late
            monthly["utilities"] = t
    if stop_si.any():
        got = shocked("social_insurance", stop_si)
        if got is not None:
            t, rows = got
            for field, value in (("missed_payment", 1.0), ("contributions_paid", 0.0)):
                column = t[field].copy()
                column[rows] = value
                t[field] = column
            monthly["social_insurance"] = t
    return replace(raw, monthly=monthly), hit  # the links, graph and related rows as they were


def stressed_policy(policy: Policy, rates_bp: int) -> Policy:
    """The lender's policy with funding costs up by ``rates_bp``: prices rise against the unchanged rate cap, so
    more offers cannot be priced lawfully and are declined. The cap itself (min(rate_cap, 4 x LPR)) is left
    where it is: a funding squeeze need not move the LPR."""
    if rates_bp == 0:
        return policy
    pricing = policy.spec.pricing.model_copy(update={"funding_cost": policy.spec.pricing.funding_cost
                                                     + rates_bp / 10_000})
    spec = policy.spec.model_copy(update={"pricing": pricing})
    return Policy(spec, f"{policy.version}+rates{rates_bp:+d}bp", policy.source_text)


# ---------------------------------------------------------------------------------------------------------
# The report.


class Totals(_Strict):
    loans: int
    ead: float
    pd_baseline: float  # EAD-weighted mean
    pd_stressed: float
    el_baseline: float
    el_stressed: float
    el_change: float
    el_change_pct: float | None
    el_rate_baseline: float  # EL / EAD
    el_rate_stressed: float
    approval_baseline: float  # share approved automatically under the policy
    approval_stressed: float
    decline_baseline: float  # share declined (the rest is referred to a credit officer)
    decline_stressed: float
    apr_baseline: float  # EAD-weighted
    apr_stressed: float


class Driver(_Strict):
    group: str
    label_en: str
    label_zh: str
    el_change: float  # expected loss attributed to the group's lost (or regained) score points
    share: float  # of the scenario's operating-data EL change
    points_change: float  # mean score points per loan


class ReasonCount(_Strict):
    code: str
    text_en: str
    loans: int  # stressed decisions naming it, among loans whose decision got worse


class Segment(_Strict):
    dimension: str
    value: str
    label: str
    totals: Totals
    share_of_increase: float | None  # of the book's EL change
    drivers: list[Driver]  # top 3


class ConcentrationRow(_Strict):
    value: str
    ead_share: float
    el_share_baseline: float
    el_share_stressed: float


class Concentration(_Strict):
    dimension: str
    hhi_ead: float
    hhi_el_baseline: float
    hhi_el_stressed: float
    rows: list[ConcentrationRow]


class Mover(_Strict):
    loan_id: str
    industry: str
    region: str
    product: str
    ead: float
    pd_baseline: float
    pd_stressed: float
    grade_baseline: str
    grade_stressed: str
    decision_baseline: str
    decision_stressed: str
    el_change: float
    reasons: list[str]  # stressed principal reasons (codes)


class StressReport(_Strict):
    scenario: Scenario
    model_version: str
    policy_version: str
    as_of_month: str  # YYYY-MM
    scored_as_of: str  # the applications' date: first day of the month after the book date (a range when the
    # stored data of some loans ends earlier)
    data_last_month: str | None  # the newest month of operating data seen
    horizon: list[str]  # first and last month shocked (over every loan)
    shock_hits: dict[str, int]  # enterprises matched per shock
    not_live: dict[str, int]  # loans left out, by status
    missing_raw: int  # loans whose raw operating data is gone (database path); they are not scored
    totals: Totals
    el_from_rates: float  # part of the EL change due to the rate overlay on PD
    grades: list[str]
    migration: list[list[int]]  # [baseline grade][stressed grade] counts; rows sum to the baseline counts
    pd_bins: list[float]
    pd_hist_baseline: list[int]
    pd_hist_stressed: list[int]
    segments: list[Segment]
    drivers: list[Driver]
    reasons: list[ReasonCount]
    concentration: list[Concentration]
    movers: list[Mover]  # the 20 largest EL increases
    explanation: list[str]


def _span(values: list[str]) -> str:
    return "" if not values else min(values) if min(values) == max(values) else f"{min(values)} .. {max(values)}"


def _month_text(m: int) -> str:
    return str(np.datetime64(int(m), "M"))


def _wmean(x: np.ndarray, w: np.ndarray) -> float:
    return float((x * w).sum() / w.sum()) if w.sum() > 0 else float(x.mean()) if len(x) else 0.0


def _r(x: float, digits: int = 6) -> float:
    return float(f"{x:.{digits}g}") if math.isfinite(x) else x


def _totals(m: np.ndarray, v: _LoanValues) -> Totals:
    ead = v.ead[m]
    el_b, el_s = float(v.el_b[m].sum()), float(v.el_s[m].sum())
    return Totals(
        loans=int(m.sum()), ead=_r(float(ead.sum()), 10), pd_baseline=_r(_wmean(v.pd_b[m], ead)),
        pd_stressed=_r(_wmean(v.pd_s[m], ead)), el_baseline=_r(el_b, 10), el_stressed=_r(el_s, 10),
        el_change=_r(el_s - el_b, 10), el_change_pct=_r((el_s - el_b) / el_b) if el_b > 0 else None,
        el_rate_baseline=_r(el_b / ead.sum()) if ead.sum() > 0 else 0.0,
        el_rate_stressed=_r(el_s / ead.sum()) if ead.sum() > 0 else 0.0,
        approval_baseline=_r(float(v.approve_b[m].mean())) if m.any() else 0.0,
        approval_stressed=_r(float(v.approve_s[m].mean())) if m.any() else 0.0,
        decline_baseline=_r(float(v.decline_b[m].mean())) if m.any() else 0.0,
        decline_stressed=_r(float(v.decline_s[m].mean())) if m.any() else 0.0,
        apr_baseline=_r(_wmean(v.apr_b[m], ead)), apr_stressed=_r(_wmean(v.apr_s[m], ead)))


@dataclass(frozen=True)
class _LoanValues:
    ead: np.ndarray
    pd_b: np.ndarray
    pd_s: np.ndarray
    pd_s_model: np.ndarray  # before the rate overlay
    el_b: np.ndarray
    el_s: np.ndarray
    approve_b: np.ndarray
    approve_s: np.ndarray
    decline_b: np.ndarray
    decline_s: np.ndarray
    apr_b: np.ndarray
    apr_s: np.ndarray
    group_el: np.ndarray  # (loans, groups) EL change attributed to each reason group
    group_points: np.ndarray  # (loans, groups) score points change


GROUP_NAMES = tuple(GROUPS)


def _attribute(el_op: np.ndarray, dpoints: np.ndarray) -> np.ndarray:
    """Split each loan's operating-data EL change over the reason groups that moved its score the same way:
    an increase over the groups that lost points, in proportion to the points lost (a decrease likewise)."""
    against = np.where(el_op[:, None] >= 0, np.maximum(-dpoints, 0.0), np.maximum(dpoints, 0.0))
    total = against.sum(axis=1, keepdims=True)
    share = np.divide(against, total, out=np.zeros_like(against), where=total > 0)
    return el_op[:, None] * share


def _drivers(m: np.ndarray, v: _LoanValues, top: int | None = None) -> list[Driver]:
    el = v.group_el[m].sum(axis=0)
    pts = v.group_points[m].mean(axis=0) if m.any() else np.zeros(len(GROUP_NAMES))
    total = float(el.sum())
    order = np.argsort(-el if total >= 0 else el, kind="stable")
    out = [Driver(group=GROUP_NAMES[j], label_en=GROUPS[GROUP_NAMES[j]].label_en,
                  label_zh=GROUPS[GROUP_NAMES[j]].label_zh, el_change=_r(float(el[j]), 10),
                  share=_r(float(el[j]) / total) if total else 0.0, points_change=_r(float(pts[j])))
           for j in order if abs(el[j]) > 0]
    return out[:top] if top else out


def _hhi(shares: np.ndarray) -> float:
    return _r(float((shares ** 2).sum()))


def _concentration(dimension: str, values: np.ndarray, v: _LoanValues) -> Concentration:
    keys = sorted(set(values.tolist()))
    ead = np.array([v.ead[values == k].sum() for k in keys])
    el_b = np.array([v.el_b[values == k].sum() for k in keys])
    el_s = np.array([v.el_s[values == k].sum() for k in keys])

    def share(x: np.ndarray) -> np.ndarray:
        return x / x.sum() if x.sum() > 0 else np.zeros_like(x)

    rows = [ConcentrationRow(value=k, ead_share=_r(a), el_share_baseline=_r(b), el_share_stressed=_r(c))
            for k, a, b, c in zip(keys, share(ead), share(el_b), share(el_s), strict=True)]
    rows.sort(key=lambda r: -r.ead_share)
    return Concentration(dimension=dimension, hhi_ead=_hhi(share(ead)), hhi_el_baseline=_hhi(share(el_b)),
                         hhi_el_stressed=_hhi(share(el_s)), rows=rows)


def _label(dimension: str, value: str) -> str:
    if dimension == "industry":
        return f"{value} {INDUSTRIES[value][1]}" if value in INDUSTRIES else value
    return value


def _overlay(pd: np.ndarray, shift: float) -> np.ndarray:
    if shift == 0:
        return pd
    p = np.clip(pd, 1e-12, 1 - 1e-12)
    return 1.0 / (1.0 + np.exp(-(np.log(p / (1 - p)) + shift)))


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.1%}"


def _explain(totals: Totals, segments: list[Segment], drivers: list[Driver], reasons: list[ReasonCount],
             el_rates: float, scenario: Scenario) -> list[str]:
    lines = [f"Expected loss moves from {totals.el_baseline:,.0f} to {totals.el_stressed:,.0f} CNY "
             f"({_pct(totals.el_change_pct)}; {totals.el_rate_baseline:.2%} -> {totals.el_rate_stressed:.2%} of "
             f"exposure); EAD-weighted PD {totals.pd_baseline:.2%} -> {totals.pd_stressed:.2%}; approval under "
             f"the policy {totals.approval_baseline:.1%} -> {totals.approval_stressed:.1%} (declined "
             f"{totals.decline_baseline:.1%} -> {totals.decline_stressed:.1%}, the rest referred to review)."]
    if totals.el_change > 0:
        for dimension in sorted({s.dimension for s in segments}):
            rows = sorted((s for s in segments if s.dimension == dimension and s.share_of_increase),
                          key=lambda s: -(s.share_of_increase or 0))[:3]
            if rows:
                lines.append(f"By {dimension}, most of the increase comes from " + "; ".join(
                    f"{s.label} ({s.share_of_increase:.0%} of it, EL {_pct(s.totals.el_change_pct)})" for s in rows)
                    + ".")
        if drivers:
            lines.append("Reason groups behind it: " + "; ".join(
                f"{d.label_en} ({d.share:.0%}, {d.points_change:+.1f} points per loan)"
                for d in drivers[:4] if d.share > 0) + ".")
    if scenario.rates_bp:
        lines.append(f"Rates {scenario.rates_bp:+d} bp add {el_rates:,.0f} CNY of expected loss through PD and "
                     f"raise funding costs, so prices meet the rate cap sooner.")
    if reasons:
        lines.append("Reasons most often given to the loans whose decision got worse: " + "; ".join(
            f"{r.text_en} ({r.loans})" for r in reasons[:3]) + ".")
    return lines


def _score(engine: Engine, raw: RawData, policy: Policy, links_withheld: np.ndarray | None = None) -> list[Scored]:
    return engine.score(raw, policy, fm=book_features(engine, raw, links_withheld))


LINK_FEATURES = [FEATURE_NAMES.index(name) for name in features_of_source("links")]  # the graph's columns


def book_features(engine: Engine, raw: RawData, links_withheld: np.ndarray | None = None) -> FeatureMatrix:
    """The book's features as its decisions read them: the related-party features from the folder's graph or,
    for stored requests, the lender's, except for the loans whose applicant did not consent to links."""
    if raw.graph is None and engine.graph is not None and links_withheld is not None:
        raw = replace(raw, graph=engine.graph)
    fm = build_all(raw)
    if links_withheld is not None and links_withheld.any():
        fm.values[np.ix_(links_withheld, LINK_FEATURES)] = np.nan
    return fm


def stress_book(engine: Engine, policy: Policy, loans: BookLoans, scenario: Scenario, config: StressConfig, *,
                missing_raw: int = 0) -> StressReport:
    """Score the live loans on the data as it is and under ``scenario``; compare."""
    raw = loans.raw
    stressed_raw, hits = apply_scenario(raw, scenario, loans.shock_end)
    base = _score(engine, raw, policy, loans.links_withheld)
    stressed = _score(engine, stressed_raw, stressed_policy(policy, scenario.rates_bp), loans.links_withheld)
    grades = engine.bundle.scorer.grades
    names = list(grades.names)
    pd_b = np.array([s.pd for s in base])
    pd_s_model = np.array([s.pd for s in stressed])
    pd_s = _overlay(pd_s_model, config.pd_logit_per_100bp * scenario.rates_bp / 100)
    g_b = np.array([s.grade for s in base], dtype=object)
    g_s = grades.of(pd_s) if scenario.rates_bp else np.array([s.grade for s in stressed], dtype=object)
    el_b = pd_b * loans.lgd * loans.ead
    el_s = pd_s * loans.lgd * loans.ead
    el_op = (pd_s_model - pd_b) * loans.lgd * loans.ead
    points_b = np.array([[s.groups[g] for g in GROUP_NAMES] for s in base])
    points_s = np.array([[s.groups[g] for g in GROUP_NAMES] for s in stressed])
    dpoints = points_s - points_b
    v = _LoanValues(ead=loans.ead, pd_b=pd_b, pd_s=pd_s, pd_s_model=pd_s_model, el_b=el_b, el_s=el_s,
                    approve_b=np.array([s.outcome.decision == "approve" for s in base]),
                    approve_s=np.array([s.outcome.decision == "approve" for s in stressed]),
                    decline_b=np.array([s.outcome.decision == "decline" for s in base]),
                    decline_s=np.array([s.outcome.decision == "decline" for s in stressed]),
                    apr_b=loans.apr, apr_s=loans.apr + scenario.rates_bp / 10_000,
                    group_el=_attribute(el_op, dpoints), group_points=dpoints)
    everyone = np.ones(len(pd_b), dtype=bool)
    totals = _totals(everyone, v)
    book_change = totals.el_change
    columns = {"industry": loans.industry, "region": loans.region, "product": loans.product}
    segments = []
    for dimension in config.segments:
        values = columns[dimension]
        for value in sorted(set(values.tolist())):
            m = values == value
            t = _totals(m, v)
            segments.append(Segment(dimension=dimension, value=value, label=_label(dimension, value), totals=t,
                                    share_of_increase=_r(t.el_change / book_change) if book_change else None,
                                    drivers=_drivers(m, v, top=3)))
    index = {g: i for i, g in enumerate(names)}
    migration = np.zeros((len(names), len(names)), dtype=int)
    np.add.at(migration, (np.array([index[g] for g in g_b]), np.array([index[g] for g in g_s])), 1)
    severity = {"approve": 0, "refer": 1, "decline": 2}
    worse = [i for i, (b, s) in enumerate(zip(base, stressed, strict=True))
             if severity[s.outcome.decision] > severity[b.outcome.decision]]
    counted = Counter(r.code for i in worse for r in stressed[i].reasons)
    texts = {r.code: r.text_en for i in worse for r in stressed[i].reasons}
    reasons = [ReasonCount(code=c, text_en=texts[c], loans=n) for c, n in counted.most_common(10)]
    drivers = _drivers(everyone, v)
    change = el_s - el_b
    movers = [Mover(loan_id=str(loans.loan_id[i]), industry=str(loans.industry[i]), region=str(loans.region[i]),
                    product=str(loans.product[i]), ead=_r(float(loans.ead[i]), 10), pd_baseline=_r(float(pd_b[i])),
                    pd_stressed=_r(float(pd_s[i])), grade_baseline=str(g_b[i]), grade_stressed=str(g_s[i]),
                    decision_baseline=base[i].outcome.decision, decision_stressed=stressed[i].outcome.decision,
                    el_change=_r(float(change[i]), 10), reasons=[r.code for r in stressed[i].reasons])
              for i in np.argsort(-change, kind="stable")[:20] if change[i] > 0]
    data_last = max((int(t["month"].max()) for t in raw.monthly.values() if len(t["month"])), default=None)
    el_rates = float(((pd_s - pd_s_model) * loans.lgd * loans.ead).sum())
    return StressReport(
        scenario=scenario, model_version=engine.version, policy_version=policy.version,
        as_of_month=_month_text(loans.as_of_month),
        scored_as_of=_span([str(d) for d in raw.applications["application_date"]]),
        data_last_month=None if data_last is None else _month_text(data_last),
        horizon=[_month_text(int(loans.shock_end.min()) - scenario.horizon_months + 1),
                 _month_text(int(loans.shock_end.max()))],
        shock_hits=hits, not_live=loans.not_live, missing_raw=missing_raw, totals=totals,
        el_from_rates=_r(el_rates, 10), grades=names, migration=migration.tolist(),
        pd_bins=[float(b) for b in PD_BINS], pd_hist_baseline=np.histogram(pd_b, PD_BINS)[0].tolist(),
        pd_hist_stressed=np.histogram(pd_s, PD_BINS)[0].tolist(), segments=segments, drivers=drivers,
        reasons=reasons,
        concentration=[_concentration(d, columns[d], v) for d in ("industry", "region")],
        movers=movers, explanation=_explain(totals, segments, drivers, reasons, el_rates, scenario))

