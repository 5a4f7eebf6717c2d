"""Post-loan monitoring of the book in the database: rescore live loans with their newest months
(POST /v1/monitoring/rescore) and read a loan's recorded rescorings (GET /v1/loans/{loan_id}/rescorings)."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter
from pydantic import BaseModel, Field, model_validator

from service.api.loans import LoanId
from service.api.pagination import Cursor, Limit, decode_cursor, encode_cursor
from service.api.routing import EdgeRoute
from service.api.schemas import (
    ConsentIn,
    ExplanationLink,
    MonthlyDataIn,
    ReasonOut,
    Strict,
    monthly_problems,
    refuse,
)
from service.db.tables import Rescoring, as_utc
from service.deps import (
    EngineDep,
    KeyringDep,
    PoliciesDep,
    ReaderDep,
    ReadSessionDep,
    ScorerDep,
    SessionDep,
    SettingsDep,
)
from service.errors import ERROR_RESPONSES, Invalid
from service.monitoring.warning import trigger_texts
from service.scoring.raw import business_today
from service.usecases.loans import get_loan
from service.usecases.rescore import NewMonths, list_rescorings, rescore_loans

router = APIRouter(route_class=EdgeRoute, prefix="/v1", tags=["monitoring"], responses=ERROR_RESPONSES)


class RescoreItemIn(Strict):
    loan_id: int = Field(ge=1, le=2**62)
    consent: ConsentIn
    data: MonthlyDataIn  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _coherent(self) -> RescoreItemIn:
        refuse(type(self).__name__, monthly_problems(self.consent, self.data))
        return self


class RescoreIn(Strict):
    """The newest months of operating data for live loans; the rest of each borrower's history is what its
    decision stored. ``as_of`` (default today, in the business time zone): the data read ends the month before."""

    items: list[RescoreItemIn] = Field(min_length=1)
    as_of: dt.date | None = None


class TriggerText(BaseModel):
    code: str
    text_zh: str
    text_en: str


class LineReasonOut(BaseModel):
    code: str
    text_zh: str
    text_en: str


class LineOut(BaseModel):
    """The credit-line recommendation (managed products, e.g. revolving lines; the policy's credit_lines)."""

    action: str = Field(description="raise, hold, cut or freeze")
    current_limit: float
    recommended_limit: float = Field(description="For a freeze: what stays usable")
    change: float
    frozen_undrawn: float
    reasons: list[LineReasonOut]
    lines_version: str
    explanation: ExplanationLink | None = Field(None, description="The borrower's page for this recommendation "
                                                "(in the response that made it; the token is shown once)")


class RescoringOut(BaseModel):
    id: int
    loan_id: int
    as_of: dt.date
    model_version: str
    policy_version: str
    pd_then: float = Field(description="The origination's feature snapshot, scored by the same model")
    grade_then: str
    pd_now: float
    grade_now: str
    warning: bool
    level: str | None = Field(description="act or watch when a warning was raised")
    triggers: list[str] = Field(description="pd_up, grade_down and the operating signals that fired")
    trigger_texts: list[TriggerText] = Field(description="Why each trigger fired, in the borrower's own numbers")
    reasons: list[ReasonOut] = Field(description="What pulls the score down now (the decision's reason engine)")
    indicators: dict[str, float | None] = Field(description="The operating signals' lead indicators")
    exposure: float
    expected_loss: float
    line: LineOut | None
    created_at: dt.datetime


class RescoreOut(BaseModel):
    items: list[RescoringOut]


class RescoringPage(BaseModel):
    items: list[RescoringOut]
    next_cursor: str | None


def rescoring_out(r: Rescoring, link: ExplanationLink | None = None) -> RescoringOut:
    line = None if r.line is None else LineOut(**r.line, explanation=link)
    return RescoringOut(id=r.id, loan_id=r.loan_id, as_of=r.as_of, model_version=r.model_version,
                        policy_version=r.policy_version, pd_then=r.pd_then, grade_then=r.grade_then, pd_now=r.pd_now,
                        grade_now=r.grade_now, warning=r.level is not None, level=r.level, triggers=r.triggers,
                        trigger_texts=trigger_texts(r.triggers, pd_then=r.pd_then, pd_now=r.pd_now,
                                                    grade_then=r.grade_then, grade_now=r.grade_now,
                                                    indicators=r.indicators),
                        reasons=r.reasons, indicators=r.indicators, exposure=r.exposure,
                        expected_loss=r.expected_loss, line=line,
                        created_at=as_utc(r.created_at))


@router.post("/monitoring/rescore", operation_id="rescore_loans", response_model=RescoreOut)
def rescore(body: RescoreIn, caller: ScorerDep, session: SessionDep, settings: SettingsDep, engine: EngineDep,
            policies: PoliciesDep, keyring: KeyringDep) -> RescoreOut:
    """Rescore live loans with the champion and the tenant's policy; warn on a PD up by the policy's factor, a
    grade down, or an operating signal; record each result (all or none), sealed in the audit trail."""
    if len(body.items) > settings.max_batch:
        raise Invalid(f"body.items: at most {settings.max_batch} loans per request, got {len(body.items)}",
                      errors=[{"loc": ["body", "items"], "msg": f"at most {settings.max_batch} items",
                               "type": "too_long"}])
    today = business_today()
    as_of = body.as_of or today
    if as_of > today:
        raise Invalid(f"body.as_of: must not be in the future (after {today.isoformat()})",
                      errors=[{"loc": ["body", "as_of"], "msg": "must not be in the future", "type": "value_error"}])
    items = [NewMonths(loan_id=i.loan_id, consent=i.consent.model_dump(), data=i.data.model_dump(mode="json"))
             for i in body.items]
    recorded = rescore_loans(session, keyring=keyring, engine=engine,
                             policy=policies.for_tenant(caller.tenant.policy), tenant_id=caller.tenant.id,
                             actor=f"key:{caller.key_id}", items=items, as_of=as_of,
                             link_hours=settings.explanation_ttl_hours)
    session.commit()
    return RescoreOut(items=[rescoring_out(r.rescoring, None if r.line_token is None else ExplanationLink(
        url=f"{settings.public_base_url}/v1/explanations/lines/{r.line_token}", token=r.line_token,
        expires_at=as_utc(r.line_expires_at))) for r in recorded])


@router.get("/loans/{loan_id}/rescorings", operation_id="list_rescorings", response_model=RescoringPage)
def rescorings(loan_id: LoanId, caller: ReaderDep, session: ReadSessionDep, limit: Limit = 100,
               cursor: Cursor = None) -> RescoringPage:
    """A loan's recorded rescorings and warnings, oldest first, a page at a time."""
    get_loan(session, tenant_id=caller.tenant.id, loan_id=loan_id)  # another tenant's loan: 404
    after = decode_cursor(cursor, int) or 0
    rows = list_rescorings(session, tenant_id=caller.tenant.id, loan_id=loan_id, after=after, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return RescoringPage(items=[rescoring_out(r) for r in rows],
                         next_cursor=encode_cursor(rows[-1].id) if more else None)
