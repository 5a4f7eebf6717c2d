"""Request and response schemas. The raw-data parts are generated from the data contract, so the API accepts
exactly what a data folder may hold, with the same ranges and categories."""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from service.scoring.raw import CONTRACT, EARLIEST_DATE, MONTHLY_SOURCES, Column, business_today

MAX_MONTHS = 60  # monthly rows per source in one request: five years is more than any feature reads


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


_UNIX_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


def _plausible_date(d: dt.date) -> dt.date:
    """The same date rules as the file contract: not before 1950, not in the future (business time zone)."""
    if d < EARLIEST_DATE:
        raise ValueError(f"must not be before {EARLIEST_DATE.isoformat()}")
    # A request carries about 150 dates, nearly all months long past: a date before yesterday in UTC is in the
    # past in every time zone, so the time-zone lookup is only needed for the last two days.
    if d.toordinal() < _UNIX_EPOCH_ORDINAL + int(time.time() // 86400) - 1:
        return d
    today = business_today()
    if d > today:
        raise ValueError(f"must not be in the future (after {today.isoformat()})")
    return d


def _month_start(d: dt.date) -> dt.date:
    if d.day != 1:
        raise ValueError("must be the first day of a month")
    return d


def _annotation(c: Column) -> Any:
    if c.kind in ("id", "text"):
        return Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
    if c.kind == "category":
        return Literal[c.categories]  # type: ignore[valid-type]
    if c.kind == "date":
        return Annotated[dt.date, AfterValidator(_plausible_date)]
    if c.kind == "month":
        return Annotated[dt.date, AfterValidator(_month_start), AfterValidator(_plausible_date)]
    # Numbers and booleans are strict: "18" or true is not a head count, and a client that sends them has a bug
    # worth hearing about (a float field takes an integer, 5 is 5.0).
    if c.kind == "bool":
        return Annotated[bool, Field(strict=True)]
    bounds = {"ge": c.min, "le": c.max}
    if c.kind == "int":
        return Annotated[int, Field(strict=True, **bounds)]
    return Annotated[float, Field(strict=True, allow_inf_nan=False, **bounds)]


def contract_model(source: str, *, name: str, skip: tuple[str, ...] = ()) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for c in CONTRACT[source].columns:
        if c.name in skip:
            continue
        ann = _annotation(c)
        fields[c.name] = (ann, Field(description=c.description)) if c.required else \
            (ann | None, Field(None, description=c.description))
    return create_model(name, __base__=Strict, __doc__=CONTRACT[source].description, **fields)


ProfileIn = contract_model("profile", name="ProfileIn")
ApplicationIn = contract_model("applications", name="ApplicationIn", skip=("enterprise_id", "defaulted_12m"))
MONTHLY_MODELS = {s: contract_model(s, name=f"{s.title().replace('_', '')}Month", skip=("enterprise_id",))
                  for s in MONTHLY_SOURCES}


class ConsentIn(Strict):
    """The applicant's consent per data source (PIPL: separate, specific). A source without consent is not used."""

    tax: StrictBool
    payments: StrictBool
    utilities: StrictBool
    social_insurance: StrictBool
    bureau: StrictBool = False
    links: StrictBool | None = Field(
        None, description="Related-party data: the firm's owners, representatives, address, phone, receiving "
        "accounts, guarantees and main trading partners, matched against the lender's graph of firms. Not given "
        "or false: no related-party feature is used and `related` must not be sent")


MAX_RELATED = 500  # rows per kind of related-party record in one request
LinkIn = contract_model("links", name="LinkIn", skip=("enterprise_id",))
GuaranteeIn = contract_model("guarantees", name="GuaranteeIn")
CounterpartyIn = contract_model("counterparties", name="CounterpartyIn", skip=("enterprise_id",))


class RelatedIn(Strict):
    """The applicant's own rows of the contract's link files, as the lender records them: the graph features
    match them against the lender's index of other firms (service/scoring/graph.py)."""

    links: list[LinkIn] = Field(default_factory=list, max_length=MAX_RELATED)  # type: ignore[valid-type]
    guarantees: list[GuaranteeIn] = Field(  # type: ignore[valid-type]
        default_factory=list, max_length=MAX_RELATED,
        description="Guarantees the applicant gives or receives: its enterprise_id is the guarantor or the borrower")
    counterparties: list[CounterpartyIn] = Field(  # type: ignore[valid-type]
        default_factory=list, max_length=MAX_RELATED, description="Main customers and suppliers, per month")


MonthlyDataIn = create_model(
    "MonthlyDataIn", __base__=Strict, __doc__="Monthly operating data per source; one row per month.",
    **{s: (list[m], Field(default_factory=list, max_length=MAX_MONTHS))  # type: ignore[valid-type]
       for s, m in MONTHLY_MODELS.items()},
)


class ScoreRequest(Strict):
    application: ApplicationIn  # type: ignore[valid-type]
    profile: ProfileIn  # type: ignore[valid-type]
    consent: ConsentIn | None = Field(None, description="Consent per source as the lender recorded it; required "
                                      "unless consent_request_id is given")
    consent_request_id: str | None = Field(
        None, pattern=r"^[0-9a-f]{32}$", description="A consent request the applicant answered on their own page "
        "(POST /v1/consent-requests): their grants are then the consent, and data for a source they did not grant "
        "is refused. Give this or consent, not both")
    data: MonthlyDataIn  # type: ignore[valid-type]
    related: RelatedIn | None = Field(None, description="The applicant's related-party records (needs "
                                      "consent.links); without them the lender's graph is matched on what it "
                                      "already holds for this enterprise_id")

    @model_validator(mode="after")
    def _coherent(self) -> ScoreRequest:
        problems = []
        if self.application.application_date < self.profile.registration_date:
            problems.append((("application", "application_date"), "must not be before profile.registration_date"))
        if (self.consent is None) == (self.consent_request_id is None):
            problems.append((("consent",), "give exactly one of consent (the lender's record) and consent_request_id "
                             "(the applicant's own answers)" + ("" if self.consent else "; neither was given")))
        refuse(type(self).__name__, problems + monthly_problems(self.consent, self.data)
               + related_problems(self.profile, self.consent, self.related))
        return self

    def payload(self) -> dict:
        """The request as recorded and digested: a request that names no consent request, gives no links consent
        and no related records dumps exactly as before those fields existed, so its keyed digest (and an
        idempotent retry across the upgrade) is unchanged."""
        data = self.model_dump(mode="json")
        for name in ("consent", "consent_request_id", "related"):
            if data[name] is None:
                del data[name]
        if data.get("consent") and data["consent"]["links"] is None:
            del data["consent"]["links"]
        return data


Problem = tuple[tuple[str | int, ...], str]  # where in the model, and the rule broken


def monthly_problems(consent: ConsentIn | None, data: BaseModel) -> list[Problem]:
    """No data for a source without consent (``None``: checked against the applicant's grants when scoring); one
    row per month and source."""
    problems: list[Problem] = []
    for source in MONTHLY_SOURCES:
        rows = getattr(data, source)
        if rows and consent is not None and not getattr(consent, source):
            problems.append((("data", source), f"sent without consent (consent.{source} is false): do not send data "
                                               "the applicant has not agreed to share"))
        seen: set[dt.date] = set()
        for i, row in enumerate(rows):
            if row.month in seen:
                problems.append((("data", source, i, "month"), f"duplicate month {row.month.isoformat()}"))
            seen.add(row.month)
    return problems


def related_problems(profile: BaseModel, consent: ConsentIn | None, related: RelatedIn | None) -> list[Problem]:
    """Related records only with consent to them, and each about this applicant, dated as the contract says."""
    if related is None:
        return []
    # Under a consent request (no consent block) the applicant's grant of links is checked when scoring.
    if consent is not None and consent.links is not True:
        return [(("related",), "sent without consent (consent.links is not true): do not send related-party "
                               "records the applicant has not agreed to share")]
    me, registered = profile.enterprise_id, profile.registration_date  # type: ignore[attr-defined]
    problems: list[Problem] = []
    for i, link in enumerate(related.links):
        if link.since < registered:
            problems.append((("related", "links", i, "since"), f"must not be before profile.registration_date "
                                                               f"({registered.isoformat()})"))
    for i, g in enumerate(related.guarantees):
        if me not in (g.guarantor_id, g.borrower_id):
            problems.append((("related", "guarantees", i), f"must have the applicant ({me}) as guarantor_id or "
                                                           "borrower_id"))
        elif g.guarantor_id == g.borrower_id:
            problems.append((("related", "guarantees", i, "borrower_id"), "must differ from guarantor_id"))
        if g.end is not None and g.end < g.start:
            problems.append((("related", "guarantees", i, "end"), f"must not be before start ({g.start})"))
    totals: dict[tuple[dt.date, str], float] = {}
    for i, c in enumerate(related.counterparties):
        if c.counterparty_id == me:
            problems.append((("related", "counterparties", i, "counterparty_id"), "must not be the applicant itself"))
        totals[c.month, c.role] = totals.get((c.month, c.role), 0.0) + c.share
    problems += [(("related", "counterparties"), f"the shares of {role}s in {month.isoformat()} add up to "
                                                 f"{total:.4g}; they must add up to at most 1")
                 for (month, role), total in totals.items() if total > 1 + 1e-9]
    return problems


def refuse(model: str, problems: list[Problem]) -> None:
    """Every rule across fields that a request breaks, each at its own place (not only the first): a 422 lists
    them all, as it lists the fields' own errors."""
    if problems:
        raise ValidationError.from_exception_data(model, [
            InitErrorDetails(type=PydanticCustomError("coherence", msg), loc=loc, input=None)
            for loc, msg in problems])


class BatchScoreRequest(Strict):
    items: list[ScoreRequest] = Field(min_length=1)


class FeatureScoreRequest(Strict):
    """A bring-your-own-table model: the feature vector as the model's table had it (null = missing)."""

    features: dict[str, Annotated[float, Field(strict=True, allow_inf_nan=False)] | Annotated[str, Field(strict=True)]
                   | None]
    application_ref: str = Field(min_length=1, max_length=128)


class OfferOut(BaseModel):
    limit: float
    term_months: int
    apr: float
    green_discount_bps: int


class ReasonOut(BaseModel):
    code: str
    group: str
    feature: str
    text_zh: str
    text_en: str
    impact_points: float


class RuleHitOut(BaseModel):
    code: str
    action: str
    text_en: str
    text_zh: str


class SuggestionOut(BaseModel):
    feature: str
    current: float
    target: float
    months: int = Field(description="Realistic time frame; 0 = can be done now")
    text_zh: str
    text_en: str
    score_gain: float = Field(description="Score points gained, from re-scoring the model with this change")


class ChangeOut(BaseModel):
    feature: str
    current: float
    target: float


class RemedyOut(BaseModel):
    code: str = Field(description="The rule it lifts, or REQUEST_ABOVE_FUNDABLE (more was asked than the policy "
                                  "funds)")
    kind: Literal["act", "wait", "amount", "data", "none"] = Field(
        description="act: a change the applicant makes; wait: time lifts it; amount: ask for this amount; data: "
                    "share a source first (then scored again); none: nothing lifts it now (the text says why)")
    text_zh: str
    text_en: str
    changes: list[ChangeOut] = Field(description="The features the decision was re-run with")
    amount: float | None = Field(description="The amount re-decided with (kind amount)")
    months: int | None = Field(description="Months until it takes effect when time heals it (at the latest)")
    decision: Literal["approve", "refer", "decline"] | None = Field(
        description="The engine's decision with this change alone; null when there is nothing to re-run")
    score: float | None
    offer: OfferOut | None = Field(description="The offer of the re-run decision (a decline has none)")
    still: list[str] = Field(description="The adverse rules that would still apply")


class RuleRecourseOut(BaseModel):
    remedies: list[RemedyOut]
    decides: bool = Field(description="A knock-out, local or limit rule sets the decision: show these first")
    decision: Literal["approve", "refer", "decline"] | None = Field(
        description="Every remedy at once, re-decided by the engine and policy")
    score: float | None
    offer: OfferOut | None
    still: list[str]
    with_suggestions: Literal["approve", "refer", "decline"] | None = Field(
        description="Every remedy and every model suggestion at once, re-decided")
    note_zh: str
    note_en: str


class RecourseOut(BaseModel):
    rules: RuleRecourseOut | None = Field(
        default=None, description="Remedies for the lender's rules that fired (absent in decisions recorded "
                                  "before they existed)")
    suggestions: list[SuggestionOut]
    combined_score: float = Field(description="The score with every suggestion applied at once, re-scored")
    flips: bool = Field(description="Whether all suggestions together would turn the decision into an approval")
    note_zh: str
    note_en: str


class ExplanationLink(BaseModel):
    url: str
    token: str
    expires_at: dt.datetime


class ScoreResponse(BaseModel):
    decision_id: str
    application_id: str | None = Field(description="The lender's application id; null once the applicant has "
                                       "withdrawn consent or the raw data has passed retention")
    application_ref: str = Field(description="Pseudonymous reference of the application id (keyed HMAC, per "
                                 "lender): what the decision record keeps")
    applicant_ref: str = Field(description="Pseudonymous applicant reference (keyed HMAC of the enterprise id, "
                               "per lender)")
    model_version: str
    policy_version: str
    pd: float
    score: float
    grade: str
    decision: Literal["approve", "refer", "decline"]
    offer: OfferOut | None
    reasons: list[ReasonOut]
    recourse: RecourseOut | None
    rule_hits: list[RuleHitOut]
    sources_used: list[str]
    data_requests: list[str] = Field(
        default=[], description="A referral by the score's review band from an applicant who did not share these "
                                "sources: ask for them and score again before a person reviews it")
    explanation: ExplanationLink | None
    created_at: dt.datetime


class BatchScoreResponse(BaseModel):
    items: list[ScoreResponse]


class FeatureScoreResponse(BaseModel):
    model_version: str
    application_ref: str
    pd: float
    score: float
    grade: str
    contributions: dict[str, float]


class ContributionOut(BaseModel):
    feature: str
    group: str
    value: float | None
    contribution: float  # log-odds, from exact TreeSHAP
    points: float


class GroupOut(BaseModel):
    group: str
    points: float


class ExplanationOut(BaseModel):
    decision_id: str
    model_version: str
    base_value: float
    margin: float
    points_per_margin: float
    contributions: list[ContributionOut]
    groups: list[GroupOut]


class ReviewOut(BaseModel):
    id: int
    decision_id: str
    status: str
    requested_by: str
    request_note: str | None
    reviewer: str | None
    outcome: str | None
    reason: str | None
    created_at: dt.datetime
    decided_at: dt.datetime | None


class ReviewPage(BaseModel):
    items: list[ReviewOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page")


class DecisionOut(ScoreResponse):
    reviews: list[ReviewOut]


class ReviewIn(Strict):
    outcome: Literal["approve", "decline"]
    reason: str = Field(min_length=5, max_length=2000, description="Why; kept with the review")
    reviewer: str = Field(min_length=1, max_length=128)


class ModelOut(BaseModel):
    version: str
    kind: str
    champion: bool
    trees: int
    metrics: dict[str, float | int]


class ModelPage(BaseModel):
    items: list[ModelOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page")


class ModelDetail(ModelOut):
    features: list[str]
    split: dict[str, Any]
    libraries: dict[str, str]
    data_fingerprint: str


class PromoteIn(Strict):
    reason: str = Field(min_length=5, max_length=2000)


class RevokeIn(Strict):
    sources: list[Literal["tax", "payments", "utilities", "social_insurance", "bureau", "links"]] = Field(
        default_factory=lambda: ["tax", "payments", "utilities", "social_insurance", "bureau", "links"], min_length=1,
        description="links: the related-party records; withdrawing it also deletes the keyed owner, phone and "
                    "account references kept for the velocity checks")
    reason: str = Field("withdrawn by the applicant", min_length=3, max_length=500)


class RevokeOut(BaseModel):
    applicant_ref: str
    sources: list[str]
    raw_rows_purged: int
