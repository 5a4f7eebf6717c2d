"""Loans: an approved decision becomes a loan; its monthly servicing; the tenant's book, a page at a time.
Tenants see only their own loans (another tenant's id answers 404, as a missing one does)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from service.api.pagination import Cursor, Limit, decode_cursor, encode_cursor
from service.api.routing import EdgeRoute
from service.api.schemas import Strict, _month_start, _plausible_date
from service.deps import Caller, ReaderDep, ReadSessionDep, SessionDep, SettingsDep, require
from service.errors import ERROR_RESPONSES
from service.scoring.raw import LOAN_MAX, LOAN_STATUSES, PRODUCTS
from service.usecases import loans as usecase

router = APIRouter(route_class=EdgeRoute, prefix="/v1/loans", tags=["loans"], responses=ERROR_RESPONSES)
LenderDep = Annotated[Caller, Depends(require("score", "admin"))]

Money = Annotated[float, Field(strict=True, ge=0, le=LOAN_MAX)]
Date = Annotated[dt.date, AfterValidator(_plausible_date)]
Month = Annotated[dt.date, AfterValidator(_month_start), AfterValidator(_plausible_date)]
LoanId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The loan's id")]
Reference = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]


class LoanIn(Strict):
    decision_id: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description="An approved decision of this tenant (or a referral a reviewer approved)")
    loan_reference: Reference = Field(description="The lender's own loan id; stored only as a keyed pseudonym")
    product: Literal[PRODUCTS] = "term_loan"  # type: ignore[valid-type]
    drawn: Money = Field(description="Principal paid out at origination (CNY), at most the limit")
    limit: Money | None = Field(None, description="Limit or principal (CNY); at most the offer's, which it defaults to")
    term_months: Annotated[int, Field(strict=True, ge=1, le=360)] | None = Field(
        None, description="At most the offer's term, which it defaults to")
    apr: Annotated[float, Field(strict=True, ge=0, le=1)] | None = Field(
        None, description="At most the offer's APR, which it defaults to")
    origination_date: Date = Field(description="Date of the first drawdown; not before the decision, not in the "
                                   "future")


class ServicingIn(Strict):
    month: Month = Field(description="The month reported (first day), after the last reported one")
    outstanding: Money = Field(description="Balance owed at the end of the month (CNY)")
    days_past_due: Annotated[int, Field(strict=True, ge=0, le=10_000)]
    status: Literal[LOAN_STATUSES]  # type: ignore[valid-type]
    default_month: Month | None = Field(None, description="Month of default; required when the loan defaults now")
    drawn: Money | None = Field(None, description="A revolving line's drawn principal after this month's draws "
                                "and repayments")


class LoanOut(BaseModel):
    id: int
    decision_id: str
    loan_ref: str = Field(description="Keyed pseudonym (HMAC, per lender) of the lender's loan reference")
    applicant_ref: str
    product: str
    limit: float
    drawn: float
    outstanding: float
    term_months: int
    apr: float
    status: str
    days_past_due: int
    origination_date: dt.date
    origination_month: dt.date
    default_month: dt.date | None
    as_of_month: dt.date = Field(description="The month the figures describe: origination, then the last report")
    created_at: dt.datetime
    updated_at: dt.datetime


class LoanPageOut(BaseModel):
    items: list[LoanOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page")


def _out(v: usecase.LoanView) -> LoanOut:
    return LoanOut(**v.__dict__)


@router.post("", operation_id="create_loan", response_model=LoanOut, status_code=201)
def create_loan(body: LoanIn, caller: LenderDep, session: SessionDep, settings: SettingsDep) -> LoanOut:
    """Book an approved decision as a loan, within its offer (409 if the decision already has one)."""
    return _out(usecase.create_loan(session, settings=settings, tenant_id=caller.tenant.id,
                                    actor=f"key:{caller.key_id}", **body.model_dump()))


@router.get("", operation_id="list_loans", response_model=LoanPageOut)
def list_loans(caller: ReaderDep, session: ReadSessionDep, settings: SettingsDep,
               status: Literal[LOAN_STATUSES] | None = None,  # type: ignore[valid-type]
               loan_reference: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
               limit: Limit = 100, cursor: Cursor = None) -> LoanPageOut:
    """The tenant's loans in booking order, a page at a time: follow ``next_cursor`` until it is null."""
    page = usecase.list_loans(session, settings=settings, tenant_id=caller.tenant.id,
                              after=decode_cursor(cursor, int) or 0, limit=limit, status=status,
                              loan_reference=loan_reference)
    return LoanPageOut(items=[_out(v) for v in page.items],
                       next_cursor=None if page.next_after is None else encode_cursor(page.next_after))


@router.get("/{loan_id}", operation_id="get_loan", response_model=LoanOut)
def get_loan(loan_id: LoanId, caller: ReaderDep,
             session: ReadSessionDep) -> LoanOut:
    return _out(usecase.get_loan(session, tenant_id=caller.tenant.id, loan_id=loan_id))


@router.post("/{loan_id}/servicing", operation_id="service_loan", response_model=LoanOut)
def service_loan(loan_id: LoanId, body: ServicingIn, caller: LenderDep,
                 session: SessionDep) -> LoanOut:
    """One month's servicing: balance, days past due, status (a default with its month). Impossible transitions
    (a repaid loan serviced, a default cured, days past due growing faster than the calendar) answer 409."""
    return _out(usecase.service_loan(session, tenant_id=caller.tenant.id, actor=f"key:{caller.key_id}",
                                     loan_id=loan_id, **body.model_dump()))
