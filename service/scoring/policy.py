"""The lender policy: from the model's PD, score and grade to a decision and an offer.

Each lender (tenant) keeps a versioned YAML policy; ``service/policies/default.yaml`` ships with the service and
docs/policy.md explains every section. Loading validates the whole file (an unknown key, a bad operator or
cut-offs out of order raise ``PolicyError`` naming the file and the key path). ``Policy.decide`` runs on every
score request, so it is pure arithmetic on a compiled policy: no I/O, no pandas, the same answer for the same input.

Its fraud checks run first: conditions on features (relative to the industry median the model bundle carries, if
asked) and on velocity counts the service reads from its decision records before scoring (service/db/velocity.py)
and hands over in ``PolicyInput.velocity``.

Prices are computed in whole basis points, so the rate cap is compared exactly and never crossed by rounding.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import operator
import re
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from service.scoring.catalog import BY_NAME
from service.scoring.raw import INDUSTRIES, MONTHLY_SOURCES, PURPOSES

BPS_PER_UNIT = 10_000
LPR_MULTIPLE_PROTECTED = 4  # courts protect interest up to 4x the one-year loan prime rate
_SEVERITY = {"approve": 0, "refer": 1, "decline": 2}
SCORE_REVIEW_BAND = "SCORE_REVIEW_BAND"  # a referral by the score alone: more data may settle it (record.py)
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
}
# Velocity counts a fraud check may read: velocity_<kind>_<days>d. firm: this firm's applications in the window,
# this one included; owner (owners and legal representatives), phone, account: applications by other firms that
# named one of this firm's; purposes: distinct purposes of this firm's applications, this one included.
VELOCITY_KINDS = ("firm", "owner", "phone", "account", "purposes")
_VELOCITY_NAME = re.compile(rf"^velocity_({'|'.join(VELOCITY_KINDS)})_([0-9]+)d$")
MAX_VELOCITY_DAYS = 365
# The fraud model's outputs a fraud check may read (service/scoring/fraud.py; missing when none is published):
# fraud_score, the probability that the application belongs to a fraud ring, and fraud_flag, 1 at or above the
# model's own threshold (chosen for at most 2% of honest applications flagged), else 0.
FRAUD_INPUTS = ("fraud_score", "fraud_flag")
INDUSTRY_MEDIAN = "industry_median"
BUILT_IN_CODES = frozenset(
    {"SCORE_BELOW_CUTOFF", "SCORE_REVIEW_BAND", "REVENUE_UNKNOWN", "CAPACITY_BELOW_MIN_LIMIT", "PRICE_ABOVE_CAP"})


class PolicyError(ValueError):
    """A policy that cannot be used; the message names the file, the key path and the rule broken."""


# ---------------------------------------------------------------------------------------------------------
# Decision inputs and outputs: the API builds a PolicyInput after scoring and returns the PolicyOutcome.


@dataclass(frozen=True)
class PolicyInput:
    pd: float  # calibrated 12-month probability of default
    score: float
    grade: str
    features: Mapping[str, float]  # catalogue features by name; NaN or absent means missing
    industry: str  # GB/T 4754 section letter
    region: str
    legal_form: str
    application_date: dt.date
    requested_amount: float  # CNY
    term_months: int  # requested
    purpose: str
    monthly_revenue: float | None  # average over the last 12 months (CNY); None if unknown
    # Read by the fraud checks only; the defaults keep older callers and recorded contexts valid.
    velocity: Mapping[str, float] = field(default_factory=dict)  # velocity_<kind>_<N>d, from the decision records
    fraud: Mapping[str, float] = field(default_factory=dict)  # FRAUD_INPUTS, from the fraud model
    sector: Mapping[str, float] = field(default_factory=dict)  # the bundle's medians for this industry

    def __post_init__(self) -> None:
        if not 0.0 <= self.pd <= 1.0:  # also refuses NaN
            raise ValueError(f"pd must be in [0, 1], got {self.pd}")


# The facts of a decision record's context the policy reads (the rest, such as the graph's and the fraud model's
# versions, is what the record names for the auditor).
POLICY_FACTS = frozenset(f.name for f in fields(PolicyInput)) - {"pd", "score", "grade", "features"}


@dataclass(frozen=True)
class RuleHit:
    code: str
    action: str  # decline, refer, limit_factor or apr_bps (a fraud check's request_data is a refer ...)
    text_en: str
    text_zh: str
    requests: tuple[str, ...] = ()  # ... that asks the applicant for these sources' original records

    def to_json(self) -> dict:
        """The hit as a decision record keeps it (``requests`` only when there are some, as before it existed)."""
        out = {"code": self.code, "action": self.action, "text_en": self.text_en, "text_zh": self.text_zh}
        return out | {"requests": list(self.requests)} if self.requests else out


@dataclass(frozen=True)
class Offer:
    limit: float  # CNY, rounded down to the policy's round_to
    term_months: int
    apr: float  # fraction, to 1 basis point
    green_discount_bps: int  # 0 when the green rule did not apply

    def to_json(self) -> dict:
        return {"limit": self.limit, "term_months": self.term_months, "apr": self.apr,
                "green_discount_bps": self.green_discount_bps}


@dataclass(frozen=True)
class PolicyOutcome:
    decision: str  # approve, refer or decline
    offer: Offer | None  # a refer keeps the offer a reviewer would confirm; a decline has none
    rule_hits: tuple[RuleHit, ...]
    policy_version: str


# ---------------------------------------------------------------------------------------------------------
# The YAML schema. Every section forbids unknown keys, so a typo fails loading instead of being ignored.


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


Code = Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]*$")]
Text = Annotated[str, Field(min_length=1)]
Rate = Annotated[float, Field(ge=0.0, le=1.0)]


def _known_feature(name: str) -> str:
    if name not in BY_NAME:
        raise ValueError(f"unknown feature {name!r}; the catalogue is in docs/features.md")
    return name


def _known_purposes(purposes: list[str]) -> list[str]:
    unknown = [p for p in purposes if p not in PURPOSES]
    if unknown:
        raise ValueError(f"unknown purpose(s) {unknown}; expected some of {list(PURPOSES)}")
    return purposes


def _distinct_months(months: list[int]) -> list[int]:
    if len(set(months)) != len(months) or not 1 <= len(months) <= 11:
        raise ValueError(f"must list 1 to 11 distinct months (a harvest needs an end), got {months}")
    return months


def _check_input(name: str) -> str:
    match = _VELOCITY_NAME.match(name)
    if match is not None:
        if not 1 <= int(match.group(2)) <= MAX_VELOCITY_DAYS:
            raise ValueError(f"a velocity window is 1 to {MAX_VELOCITY_DAYS} days, got {name!r}")
        return name
    if name not in BY_NAME and name not in FRAUD_INPUTS:
        raise ValueError(f"unknown feature {name!r}; a fraud check reads a feature of the catalogue "
                         f"(docs/features.md), a velocity count "
                         f"velocity_<{'|'.join(VELOCITY_KINDS)}>_<days>d or the fraud model's "
                         f"{' or '.join(FRAUD_INPUTS)}")
    return name


def velocity_days(name: str) -> int | None:
    """The window of a velocity count's name (velocity_firm_30d: 30), None for a feature."""
    match = _VELOCITY_NAME.match(name)
    return None if match is None else int(match.group(2))


FeatureName = Annotated[str, AfterValidator(_known_feature)]
CheckInput = Annotated[str, AfterValidator(_check_input)]
Op = Literal["<", "<=", ">", ">=", "==", "!="]
Purposes = Annotated[list[str], AfterValidator(_known_purposes)]
HarvestMonths = Annotated[list[Annotated[int, Field(ge=1, le=12)]], AfterValidator(_distinct_months)]


class _Rule(_Section):
    code: Code
    feature: FeatureName
    op: Literal["<", "<=", ">", ">=", "==", "!="]
    value: float
    text_en: Text
    text_zh: Text


def _relative_fits(feature: str | None, relative_to: str | None) -> None:
    if relative_to is None or feature is None:
        return
    if feature not in BY_NAME:
        kind = "the fraud model's output" if feature in FRAUD_INPUTS else "a velocity count"
        raise ValueError(f"relative_to compares a feature with its industry median; {feature!r} is {kind}")
    if BY_NAME[feature].categories:
        raise ValueError(f"relative_to needs a numeric feature; {feature!r} is categorical (no median)")


class Condition(_Section):
    """``feature op value``; with ``relative_to: industry_median``, ``feature op value x the median`` of the
    applicant's industry. A missing value or median never holds."""

    feature: CheckInput
    op: Op
    value: float
    relative_to: Literal["industry_median"] | None = None

    @model_validator(mode="after")
    def _relative(self) -> Condition:
        _relative_fits(self.feature, self.relative_to)
        return self


class FraudCheck(_Section):
    """One condition (``feature``, ``op``, ``value``, ``relative_to``) or ``all``: conditions that must all hold.
    ``request_data`` refers the application to wait for the original records of ``requests``."""

    code: Code
    feature: CheckInput | None = None
    op: Op | None = None
    value: float | None = None
    relative_to: Literal["industry_median"] | None = None
    all: Annotated[list[Condition], Field(min_length=1)] | None = None
    action: Literal["decline", "refer", "request_data"]
    requests: list[Literal[MONTHLY_SOURCES]] = []  # type: ignore[valid-type]
    text_en: Text  # shown to the applicant: say what is checked, never accuse
    text_zh: Text

    @model_validator(mode="after")
    def _one_form(self) -> FraudCheck:
        single = {"feature": self.feature, "op": self.op, "value": self.value}
        if self.all is None:
            missing = [k for k, v in single.items() if v is None]
            if missing:
                raise ValueError(f"give feature, op and value (missing {', '.join(missing)}), or all: a list of "
                                 "conditions")
            _relative_fits(self.feature, self.relative_to)
        elif self.relative_to is not None or any(v is not None for v in single.values()):
            raise ValueError("give either feature, op and value or all, not both")
        if self.action == "request_data" and not self.requests:
            raise ValueError(f"a request_data check names the sources to ask for in requests (some of "
                             f"{list(MONTHLY_SOURCES)})")
        if self.action != "request_data" and self.requests:
            raise ValueError(f"a {self.action} check takes no requests (only request_data asks for data)")
        if len(set(self.requests)) != len(self.requests):
            raise ValueError(f"requests must not repeat a source, got {self.requests}")
        return self

    def conditions(self) -> list[Condition]:
        if self.all is not None:
            return self.all
        return [Condition(feature=self.feature, op=self.op, value=self.value, relative_to=self.relative_to)]


class KnockOutRule(_Rule):
    action: Literal["decline", "refer"]


class LocalRule(_Rule):
    action: Literal["decline", "refer", "limit_factor", "apr_bps"]
    amount: float | None = Field(default=None, validate_default=True)

    @field_validator("amount")
    @classmethod
    def _amount_fits_action(cls, amount: float | None, info: ValidationInfo) -> float | None:
        action = info.data.get("action")
        if action == "limit_factor" and (amount is None or amount <= 0):
            raise ValueError("a limit_factor rule needs amount > 0 (a multiplier of the revenue capacity, e.g. 0.8)")
        if action == "apr_bps" and (amount is None or not float(amount).is_integer()):
            raise ValueError("an apr_bps rule needs amount in whole basis points (e.g. 25 or -10)")
        if action in ("decline", "refer") and amount is not None:
            raise ValueError(f"a {action} rule takes no amount")
        return amount


class CutOffs(_Section):
    approve_min_score: float
    refer_min_score: float

    @field_validator("refer_min_score")
    @classmethod
    def _not_above_approve(cls, refer: float, info: ValidationInfo) -> float:
        approve = info.data.get("approve_min_score")
        if approve is not None and refer > approve:
            raise ValueError(f"must be <= approve_min_score ({approve:g}), got {refer:g}")
        return refer


class LimitSpec(_Section):
    revenue_months_by_grade: dict[str, Annotated[float, Field(ge=0.0)]] = Field(min_length=1)
    min_limit: Annotated[float, Field(gt=0.0)]
    max_limit: float
    round_to: Annotated[float, Field(gt=0.0)]

    @field_validator("max_limit")
    @classmethod
    def _not_below_min(cls, max_limit: float, info: ValidationInfo) -> float:
        min_limit = info.data.get("min_limit")
        if min_limit is not None and max_limit < min_limit:
            raise ValueError(f"must be >= min_limit ({min_limit:g}), got {max_limit:g}")
        return max_limit


class OperatingCycle(_Section):
    harvest_months: dict[str, HarvestMonths]  # industry section -> months the harvest comes in
    seasonal_purposes: Purposes  # follow a harvest in any industry
    default_harvest_months: HarvestMonths | None = None  # for a seasonal purpose in an industry without its own
    exempt_purposes: Purposes = []  # long-lived assets keep the requested term even in a harvest industry
    min_months: Annotated[int, Field(ge=1)]
    max_months: int

    @field_validator("harvest_months")
    @classmethod
    def _known_industries(cls, by_industry: dict[str, list[int]]) -> dict[str, list[int]]:
        unknown = [i for i in by_industry if i not in INDUSTRIES]
        if unknown:
            raise ValueError(f"unknown industry section(s) {unknown}; expected GB/T 4754 letters A-T")
        return by_industry

    @field_validator("exempt_purposes")
    @classmethod
    def _not_seasonal(cls, exempt: list[str], info: ValidationInfo) -> list[str]:
        both = sorted(set(exempt) & set(info.data.get("seasonal_purposes", [])))
        if both:
            raise ValueError(f"{both} cannot be both seasonal and exempt")
        return exempt

    @field_validator("max_months")
    @classmethod
    def _not_below_min(cls, max_months: int, info: ValidationInfo) -> int:
        min_months = info.data.get("min_months")
        if min_months is not None and max_months < min_months:
            raise ValueError(f"must be >= min_months ({min_months}), got {max_months}")
        return max_months


class TermSpec(_Section):
    max_months_by_grade: dict[str, Annotated[int, Field(ge=1)]] = Field(min_length=1)
    operating_cycle: OperatingCycle


class PricingSpec(_Section):
    funding_cost: Rate
    lgd: Rate
    operating_cost: Rate
    margin: Rate
    rate_cap: Annotated[float, Field(gt=0.0, le=1.0)]
    lpr_1y: Annotated[float, Field(gt=0.0, le=1.0)]

    @model_validator(mode="after")
    def _room_under_cap(self) -> PricingSpec:
        floor = self.funding_cost + self.operating_cost + self.margin
        cap = min(self.rate_cap, LPR_MULTIPLE_PROTECTED * self.lpr_1y)
        if floor >= cap:
            raise ValueError(f"funding_cost + operating_cost + margin ({floor:.4f}) leaves no room under the cap "
                             f"({cap:.4f} = min(rate_cap, 4 x lpr_1y)): no loan could be priced")
        return self


class GreenSpec(_Section):
    enabled: bool
    feature: FeatureName
    threshold: Annotated[float, Field(le=0.0)]  # a fall in energy per unit of sales, so <= 0
    discount_bps: Annotated[int, Field(ge=0)]


class EarlyWarningSpec(_Section):
    """After the loan: when a rescored borrower gets a warning (service/monitoring/warning.py). The signal
    thresholds are those of service/scoring/signals.py ``SignalRules``."""

    pd_ratio: Annotated[float, Field(gt=1.0, le=100.0)] = 2.0  # PD now / PD at origination
    grade_notches: Annotated[int, Field(ge=1, le=6)] = 2  # grades down since origination
    # The model's triggers count only from this PD up: a PD that doubles from 0.5% is noise, not news.
    min_pd: Annotated[float, Field(ge=0.0, le=1.0)] = 0.03
    act_pd: Annotated[float, Field(gt=0.0, le=1.0)] = 0.10  # a warning at or above this PD asks for action
    receipts_ratio_below: Annotated[float, Field(gt=0.0, le=2.0)] = 0.6
    sales_hold_at_least: Annotated[float, Field(gt=0.0, le=2.0)] = 0.85
    electricity_ratio_below: Annotated[float, Field(gt=0.0, le=2.0)] = 0.75
    contributions_history_months: Annotated[int, Field(ge=1, le=12)] = 9
    contributions_stopped_months: Annotated[int, Field(ge=1, le=6)] = 2
    tax_missed_at_least: Annotated[int, Field(ge=1, le=3)] = 2


class CreditLinesSpec(_Section):
    """After the loan: when a live line is raised, held, cut or its undrawn part frozen
    (service/monitoring/lines.py). Amounts follow the ``limit`` section: the revenue rule of the grade now,
    ``max_limit`` and ``round_to``."""

    version: Annotated[str, Field(min_length=1)] = "1"  # quoted with every recommendation
    products: list[Literal["revolving_line", "term_loan"]] = Field(default=["revolving_line"], min_length=1)
    # Raise: declared sales up for growth_months consecutive months (each against the same month a year
    # earlier) or by sales_growth over the last three months year on year ...
    growth_months: Annotated[int, Field(ge=1, le=12)] = 3
    sales_growth: Annotated[float, Field(gt=0.0, le=3.0)] = 0.10
    orders_growth: Annotated[float, Field(ge=0.0, le=3.0)] = 0.05  # ... and orders (invoices, else transactions)
    electricity_stable_at_least: Annotated[float, Field(gt=0.0, le=1.0)] = 0.9  # utilities: kWh yoy at least
    max_days_late: Annotated[int, Field(ge=0, le=90)] = 10  # utility bills paid at most this late, last 3 months
    raise_max_pd: Annotated[float, Field(gt=0.0, le=1.0)] = 0.03  # PD now at most this ...
    raise_max_pd_ratio: Annotated[float, Field(gt=0.0, le=10.0)] = 1.0  # ... and at most this x PD at origination
    raise_step: Annotated[float, Field(gt=0.0, le=2.0)] = 0.15  # the raise, a share of the current limit
    # Cut: PD up by this factor (once at least cut_min_pd) or grade down by this many notches since origination
    cut_pd_ratio: Annotated[float, Field(gt=1.0, le=100.0)] = 2.0
    cut_min_pd: Annotated[float, Field(ge=0.0, le=1.0)] = 0.03
    cut_grade_notches: Annotated[int, Field(ge=1, le=6)] = 2
    # Freeze the undrawn part when any of these operating signals fires (service/scoring/signals.py)
    freeze_on: list[Literal["receipts_diverted", "contributions_stopped", "electricity_vs_sales",
                            "tax_filings_missed"]] = Field(
        default=["receipts_diverted", "contributions_stopped"], min_length=1)

    @field_validator("products", "freeze_on")
    @classmethod
    def _distinct(cls, items: list[str]) -> list[str]:
        if len(set(items)) != len(items):
            raise ValueError(f"must not repeat an item, got {items}")
        return items

    @model_validator(mode="after")
    def _raise_below_cut(self) -> CreditLinesSpec:
        if self.raise_max_pd_ratio >= self.cut_pd_ratio:
            raise ValueError(f"raise_max_pd_ratio ({self.raise_max_pd_ratio:g}) must be below cut_pd_ratio "
                             f"({self.cut_pd_ratio:g}): a line cannot qualify for a raise and a cut at once")
        return self


class PolicySpec(_Section):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
    version: Annotated[str, Field(min_length=1)]
    fraud_checks: list[FraudCheck] = []
    knock_outs: list[KnockOutRule] = []
    cut_offs: CutOffs
    limit: LimitSpec
    term: TermSpec
    pricing: PricingSpec
    green: GreenSpec | None = None
    local_rules: list[LocalRule] = []
    early_warning: EarlyWarningSpec = EarlyWarningSpec()
    credit_lines: CreditLinesSpec = CreditLinesSpec()


# ---------------------------------------------------------------------------------------------------------
# Loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys; a policy must not silently drop the first."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, Hashable):
            continue  # construct_mapping reports it
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _key_path(loc: tuple[int | str, ...]) -> str:
    """YAML key path of a validation error; pydantic's union-member tags (literal[...], function-...) dropped."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not str(part).startswith(("literal[", "list[", "function-")):
            path += f".{part}" if path else str(part)
    return path or "<top level>"


def _rule_broken(error: Mapping[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "missing":
        return "required key is missing"
    message = error["msg"].removeprefix("Value error, ")
    return message if error["type"] == "value_error" else f"{message}, got {error['input']!r}"


def config_errors(exc: ValidationError, source: str) -> str:
    """A YAML config's validation errors, one line each: "<source>: <key path>: <rule broken>" (the lender's
    policy and the stress scenarios read the same way)."""
    return "\n".join(f"{source}: {_key_path(e['loc'])}: {_rule_broken(e)}" for e in exc.errors())


def _cross_section_errors(spec: PolicySpec) -> list[str]:
    errors = []
    grades = set(spec.limit.revenue_months_by_grade)
    if set(spec.term.max_months_by_grade) != grades:
        errors.append(f"term.max_months_by_grade: must cover the same grades as limit.revenue_months_by_grade "
                      f"({sorted(grades)}), got {sorted(spec.term.max_months_by_grade)}")
    seen: set[str] = set()
    sections = (("fraud_checks", spec.fraud_checks), ("knock_outs", spec.knock_outs), ("local_rules", spec.local_rules))
    for section, rules in sections:
        for i, rule in enumerate(rules):
            if rule.code in BUILT_IN_CODES or rule.code in seen:
                errors.append(f"{section}[{i}].code: {rule.code!r} is already used "
                              f"{'by a built-in rule' if rule.code in BUILT_IN_CODES else 'by an earlier rule'}")
            seen.add(rule.code)
    return errors


def load_policy(path: Path) -> Policy:
    """Read and validate one policy file."""
    try:
        data = Path(path).read_bytes()  # bytes, not text: the version hashes exactly what is on disk
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the policy file ({exc.strerror})") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    return Policy.from_yaml(text, source=str(path))


# ---------------------------------------------------------------------------------------------------------
# The compiled policy


@dataclass(frozen=True)
class _Check:
    feature: str
    test: Callable[[float, float], bool]
    value: float
    hit: RuleHit
    amount: float = 0.0  # the multiplier of a limit_factor rule, the basis points of an apr_bps rule

    @classmethod
    def of(cls, rule: KnockOutRule | LocalRule) -> _Check:
        hit = RuleHit(rule.code, rule.action, rule.text_en, rule.text_zh)
        return cls(rule.feature, _OPS[rule.op], rule.value, hit, getattr(rule, "amount", None) or 0.0)

    def fires(self, features: Mapping[str, float]) -> bool:
        x = features.get(self.feature)
        return x is not None and not math.isnan(x) and self.test(x, self.value)  # missing data never fires


def _velocity(x: PolicyInput) -> Mapping[str, float]:
    return x.velocity


def _fraud(x: PolicyInput) -> Mapping[str, float]:
    return x.fraud


def _features(x: PolicyInput) -> Mapping[str, float]:
    return x.features


@dataclass(frozen=True)
class _Condition:
    name: str
    test: Callable[[float, float], bool]
    value: float
    read: Callable[[PolicyInput], Mapping[str, float]]  # the features, the velocity counts or the fraud model's
    relative: bool  # value x the industry median

    @classmethod
    def of(cls, c: Condition) -> _Condition:
        read = (_velocity if velocity_days(c.feature) is not None else _fraud if c.feature in FRAUD_INPUTS
                else _features)
        return cls(c.feature, _OPS[c.op], c.value, read, c.relative_to == INDUSTRY_MEDIAN)

    def holds(self, x: PolicyInput) -> bool:
        v = self.read(x).get(self.name)
        if v is None or math.isnan(v):
            return False  # missing data never fires
        if not self.relative:
            return self.test(v, self.value)
        median = x.sector.get(self.name)
        return median is not None and not math.isnan(median) and self.test(v, self.value * median)


@dataclass(frozen=True)
class _FraudCheck:
    conditions: tuple[_Condition, ...]
    hit: RuleHit

    @classmethod
    def of(cls, check: FraudCheck) -> _FraudCheck:
        action = "refer" if check.action == "request_data" else check.action
        return cls(tuple(_Condition.of(c) for c in check.conditions()),
                   RuleHit(check.code, action, check.text_en, check.text_zh,
                           tuple(s for s in MONTHLY_SOURCES if s in check.requests)))  # in the contract's order

    def fires(self, x: PolicyInput) -> bool:
        return all(c.holds(x) for c in self.conditions)


def _season_ends(months: list[int]) -> tuple[int, ...]:
    """Last month of each harvest season: a harvest month not followed by another ([9, 10] ends in 10)."""
    return tuple(sorted(m for m in months if m % 12 + 1 not in months))


def _round_down(amount: float, step: float) -> float:
    return math.floor(amount / step + 1e-9) * step  # the epsilon keeps 2.5 x 40,000 from rounding down a step


class Policy:
    """A lender's validated policy, compiled for fast, deterministic decisions."""

    name: str
    version: str  # name@declared version+first 8 hex digits of the sha256 of the YAML bytes
    grades: tuple[str, ...]  # the grades it covers; the API checks the model bundle's grades against these
    rate_cap: float  # min(rate_cap, 4 x lpr_1y)
    velocity_windows: tuple[int, ...]  # the days of the velocity counts its fraud checks read (none: no read)
    fraud_codes: frozenset[str]

    def __init__(self, spec: PolicySpec, version: str, source_text: str = "") -> None:
        self.spec = spec
        self.name = spec.name
        self.version = version
        self.source_text = source_text  # the YAML it was read from: ships the same policy to batch workers
        self.grades = tuple(spec.limit.revenue_months_by_grade)
        self._fraud_checks = tuple(_FraudCheck.of(c) for c in spec.fraud_checks)
        self.fraud_codes = frozenset(c.code for c in spec.fraud_checks)
        self.velocity_windows = tuple(sorted({d for c in self._fraud_checks for k in c.conditions
                                              if (d := velocity_days(k.name)) is not None}))
        self._knock_outs = tuple(_Check.of(r) for r in spec.knock_outs)
        self._local_rules = tuple(_Check.of(r) for r in spec.local_rules)
        cycle = spec.term.operating_cycle
        self._harvest_ends = {i: _season_ends(m) for i, m in cycle.harvest_months.items()}
        self._default_harvest_ends = _season_ends(cycle.default_harvest_months or [])
        p = spec.pricing
        self.rate_cap = min(p.rate_cap, LPR_MULTIPLE_PROTECTED * p.lpr_1y)
        self._cap_bps = math.floor(self.rate_cap * BPS_PER_UNIT + 1e-6)  # never round the cap up

    def __repr__(self) -> str:
        return f"Policy({self.version!r})"

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "<string>") -> Policy:
        try:
            raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            raise PolicyError(f"{source}: {where}invalid YAML ({getattr(exc, 'problem', None) or exc})") from exc
        if not isinstance(raw, dict):
            raise PolicyError(f"{source}: the policy must be a YAML mapping of sections, got {type(raw).__name__}")
        try:
            spec = PolicySpec.model_validate(raw)
        except ValidationError as exc:
            raise PolicyError(config_errors(exc, source)) from None
        errors = _cross_section_errors(spec)
        if errors:
            raise PolicyError("\n".join(f"{source}: {e}" for e in errors))
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
        return cls(spec, f"{spec.name}@{spec.version}+{digest}", text)

    # -----------------------------------------------------------------------------------------------------

    def decide(self, x: PolicyInput) -> PolicyOutcome:
        if x.grade not in self.spec.limit.revenue_months_by_grade:
            raise PolicyError(f"policy {self.version} has no limit or term for grade {x.grade!r}; "
                              f"it covers {list(self.grades)}")
        hits = [c.hit for c in self._fraud_checks if c.fires(x)]  # is the application genuine, before credit
        hits += [c.hit for c in self._knock_outs if c.fires(x.features)]
        hits += self._score_hits(x.score)
        local = [c for c in self._local_rules if c.fires(x.features)]

        capacity_factor = math.prod(c.amount for c in local if c.hit.action == "limit_factor")
        limit, limit_hit = self._limit(x, capacity_factor)
        hits += [limit_hit] if limit_hit else []
        hits += [c.hit for c in local]

        term = self._term(x)
        risk_bps = self._risk_price_bps(x.pd, term)
        green_bps = self._green_discount_bps(x.features)
        apr_bps = risk_bps - green_bps + int(sum(c.amount for c in local if c.hit.action == "apr_bps"))
        if risk_bps > self._cap_bps or apr_bps > self._cap_bps:
            # The lender cannot lawfully charge what this risk costs: decline, never clip to the cap.
            hits.append(self._price_hit(risk_bps if risk_bps > self._cap_bps else apr_bps))

        decision = max(("approve", *(h.action for h in hits if h.action in _SEVERITY)), key=_SEVERITY.__getitem__)
        offer = None if decision == "decline" else Offer(limit, term, apr_bps / BPS_PER_UNIT, green_bps)
        return PolicyOutcome(decision, offer, tuple(hits), self.version)

    def _score_hits(self, score: float) -> list[RuleHit]:
        c = self.spec.cut_offs
        if score >= c.approve_min_score:
            return []
        if score >= c.refer_min_score:
            return [RuleHit(SCORE_REVIEW_BAND, "refer",
                            f"Score {score:.0f} is in the review band: at least {c.refer_min_score:.0f} but below "
                            f"the automatic-approval score {c.approve_min_score:.0f}",
                            f"评分{score:.0f}处于人工审核区间：不低于{c.refer_min_score:.0f}分，"
                            f"但低于自动审批分数线{c.approve_min_score:.0f}分")]
        return [RuleHit("SCORE_BELOW_CUTOFF", "decline",
                        f"Score {score:.0f} is below the minimum score {c.refer_min_score:.0f}",
                        f"评分{score:.0f}低于最低分数线{c.refer_min_score:.0f}")]

    def _limit(self, x: PolicyInput, capacity_factor: float) -> tuple[float, RuleHit | None]:
        spec = self.spec.limit
        if x.monthly_revenue is None or math.isnan(x.monthly_revenue):
            return 0.0, RuleHit("REVENUE_UNKNOWN", "refer",
                                "Monthly revenue is unknown (no payment flows or tax filings with sales), so the "
                                "limit cannot be sized to the business",
                                "无法获取月均经营收入（无经营流水或含销售额的纳税申报），额度无法按经营规模核定")
        capacity = max(x.monthly_revenue, 0.0) * spec.revenue_months_by_grade[x.grade] * capacity_factor
        limit = _round_down(min(x.requested_amount, capacity, spec.max_limit), spec.round_to)
        if capacity < spec.min_limit:  # refer rather than offer a token amount that covers nothing
            return limit, self._capacity_hit(x, spec.revenue_months_by_grade[x.grade] * capacity_factor,
                                             capacity)
        return limit, None

    def _capacity_hit(self, x: PolicyInput, months: float, capacity: float) -> RuleHit:
        """The real cause of a capacity below the minimum: a grade the product does not fund, or a small revenue."""
        minimum, revenue = self.spec.limit.min_limit, max(x.monthly_revenue or 0.0, 0.0)
        if months == 0:
            return RuleHit("CAPACITY_BELOW_MIN_LIMIT", "refer",
                           f"Grade {x.grade}: this product funds no limit at this risk level",
                           f"等级{x.grade}：本产品在此风险等级下不提供额度")
        return RuleHit("CAPACITY_BELOW_MIN_LIMIT", "refer",
                       f"At grade {x.grade} this product lends up to {months:g} months of revenue: "
                       f"{capacity:,.0f} CNY for monthly revenue of {revenue:,.0f} CNY, below the product minimum of "
                       f"{minimum:,.0f} CNY",
                       f"等级{x.grade}的可贷额度为{months:g}个月经营收入：按月均收入{revenue:,.0f}元为{capacity:,.0f}元，"
                       f"低于产品最低额度{minimum:,.0f}元")

    def fundable_limit(self, x: PolicyInput) -> float | None:
        """The largest amount this policy funds for ``x`` whatever was asked (revenue capacity, local limit
        factors and the product maximum, rounded down as ``decide`` rounds it); None when revenue is unknown or
        the capacity is below the product minimum. Recourse asks for this amount; ``decide`` does not call it."""
        spec = self.spec.limit
        if x.monthly_revenue is None or math.isnan(x.monthly_revenue):
            return None
        factor = math.prod(c.amount for c in self._local_rules
                           if c.hit.action == "limit_factor" and c.fires(x.features))
        capacity = max(x.monthly_revenue, 0.0) * spec.revenue_months_by_grade[x.grade] * factor
        if capacity < spec.min_limit:
            return None
        return _round_down(min(capacity, spec.max_limit), spec.round_to)

    def _term(self, x: PolicyInput) -> int:
        cycle = self.spec.term.operating_cycle
        season_ends: tuple[int, ...] = ()
        if x.purpose not in cycle.exempt_purposes:
            season_ends = self._harvest_ends.get(x.industry, ())
            if not season_ends and x.purpose in cycle.seasonal_purposes:
                season_ends = self._default_harvest_ends
        if not season_ends:
            return min(x.term_months, self.spec.term.max_months_by_grade[x.grade])
        # Run through the end of the next harvest, counting the application month: March -> October is 8 months.
        # The grade's maximum does not cut it: a loan due before the harvest is due before the money comes in,
        # which is the mismatch that makes seasonal borrowers default; risk is priced and limited instead.
        months = min((end - x.application_date.month) % 12 + 1 for end in season_ends)
        return min(max(months, cycle.min_months), cycle.max_months)

    def _risk_price_bps(self, pd: float, term_months: int) -> int:
        p = self.spec.pricing
        # pd is a 12-month PD. Spread over a life of at least one year: a short loan is renewed, so its yearly
        # risk is still pd; a longer loan defaults with 1 - (1 - pd)^years over its life.
        years = max(term_months / 12, 1.0)
        yearly_loss = (1.0 - (1.0 - pd) ** years) * p.lgd / years
        return round((p.funding_cost + yearly_loss + p.operating_cost + p.margin) * BPS_PER_UNIT)

    def _green_discount_bps(self, features: Mapping[str, float]) -> int:
        green = self.spec.green
        if green is None or not green.enabled:
            return 0
        change = features.get(green.feature)
        if change is None or math.isnan(change) or not change < green.threshold:
            return 0
        return green.discount_bps

    def _price_hit(self, price_bps: int) -> RuleHit:
        price, cap = price_bps / BPS_PER_UNIT, self._cap_bps / BPS_PER_UNIT
        return RuleHit("PRICE_ABOVE_CAP", "decline",
                       f"The risk-based rate {price:.2%} would exceed the rate cap {cap:.2%}; "
                       "the loan cannot be priced lawfully",
                       f"按风险定价的年化利率{price:.2%}将超过利率上限{cap:.2%}，无法合规定价")
