"""Loans, once for the API and the CLI: book an approved decision as a loan, record its monthly servicing, read
the book. The rules are the data contract's for the ``loans`` file (service/scoring/raw.py), checked here on
each write so that the book in the database is always a valid ``loans`` file (``book_table``)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.config import Settings
from service.db import loans as loans_db
from service.db import repo
from service.db.tables import Decision, Loan, as_utc
from service.errors import Conflict, Invalid, NotFound
from service.pseudonyms import keyed, tenant_key
from service.scoring.raw import BUSINESS_TZ, NO_MONTH, Table, business_today, month_index

DPD_PER_MONTH = 31  # days past due can grow by at most the days between two monthly reports


@dataclass(frozen=True)
class LoanView:
    """A loan as the API and the CLI show it."""

    id: int
    decision_id: str
    loan_ref: str
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
    as_of_month: dt.date
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True)
class LoanPage:
    items: list[LoanView]
    next_after: int | None  # the id to continue after; None on the last page


def view(loan: Loan) -> LoanView:
    return LoanView(id=loan.id, decision_id=loan.decision_id, loan_ref=loan.loan_ref, applicant_ref=loan.applicant_ref,
                    product=loan.product, limit=loan.limit, drawn=loan.drawn, outstanding=loan.outstanding,
                    term_months=loan.term_months, apr=loan.apr, status=loan.status,
                    days_past_due=loan.days_past_due, origination_date=loan.origination_date,
                    origination_month=loan.origination_date.replace(day=1), default_month=loan.default_month,
                    as_of_month=loan.as_of_month, created_at=as_utc(loan.created_at),
                    updated_at=as_utc(loan.updated_at))


def _invalid(field: str, rule: str) -> Invalid:
    return Invalid(f"body.{field}: {rule}", errors=[{"loc": ["body", field], "msg": rule, "type": "value_error"}])


def _conflict(field: str, rule: str) -> Conflict:
    return Conflict(f"body.{field}: {rule}", errors=[{"loc": ["body", field], "msg": rule, "type": "conflict"}])


def effective_outcome(session: Session, decision: Decision) -> str:
    """The decision as it stands: the newest reviewer's outcome overrides the automated one."""
    decided = [r for r in repo.reviews_of(session, decision_id=decision.id) if r.status == "decided" and r.outcome]
    return decided[-1].outcome if decided else decision.decision


def _business_date(at: dt.datetime) -> dt.date:
    return as_utc(at).astimezone(ZoneInfo(BUSINESS_TZ)).date()


def create_loan(session: Session, *, settings: Settings, tenant_id: int, actor: str, decision_id: str,
                loan_reference: str, drawn: float, origination_date: dt.date, product: str = "term_loan",
                limit: float | None = None, term_months: int | None = None, apr: float | None = None) -> LoanView:
    """Book an approved decision of this tenant as a loan, within its offer. 404 for another tenant's decision,
    422 naming the field for a decision that is not approved or an amount beyond the offer, 409 when the
    decision or the lender's loan reference already has a loan."""
    decision = repo.get_decision(session, tenant_id=tenant_id, decision_id=decision_id)
    if decision is None:
        raise NotFound(f"no decision {decision_id!r} for this tenant")
    outcome = effective_outcome(session, decision)
    if outcome != "approve" or not decision.offer:
        raise _invalid("decision_id", f"only an approved decision can become a loan; this one is {outcome}")
    existing = loans_db.loan_of_decision(session, decision_id=decision.id)
    if existing is not None:
        raise _conflict("decision_id", f"the decision already has loan {existing.id}")
    offer = decision.offer
    limit = offer["limit"] if limit is None else limit
    term_months = offer["term_months"] if term_months is None else term_months
    apr = offer["apr"] if apr is None else apr
    if limit > offer["limit"]:
        raise _invalid("limit", f"must not exceed the offer's limit {offer['limit']:g}")
    if term_months > offer["term_months"]:
        raise _invalid("term_months", f"must not exceed the offer's term {offer['term_months']} months")
    if apr > offer["apr"]:
        raise _invalid("apr", f"must not exceed the offer's APR {offer['apr']:g}")
    if drawn > limit:
        raise _invalid("drawn", f"must not exceed the limit {limit:g}")
    decided_on = _business_date(decision.created_at)
    if origination_date < decided_on:
        raise _invalid("origination_date", f"must not be before the decision's date {decided_on.isoformat()}")
    ref = keyed(tenant_key(settings, tenant_id), loan_reference)
    if loans_db.loan_by_ref(session, tenant_id=tenant_id, loan_ref=ref) is not None:
        raise _conflict("loan_reference", "this loan reference is already booked")
    loan = Loan(tenant_id=tenant_id, decision_id=decision.id, loan_ref=ref, applicant_ref=decision.applicant_ref,
                product=product, limit=round(float(limit), 2), drawn=round(float(drawn), 2),
                outstanding=round(float(drawn), 2), term_months=int(term_months), apr=float(apr), status="current",
                days_past_due=0, origination_date=origination_date, default_month=None,
                as_of_month=origination_date.replace(day=1))
    try:
        loans_db.add_loan(session, loan=loan, actor=actor)
        session.commit()
    except IntegrityError as exc:  # a concurrent request booked the same decision or reference first
        session.rollback()
        raise _conflict("decision_id", "the decision or the loan reference was booked by a concurrent request") \
            from exc
    return view(loan)


def _months_between(a: dt.date, b: dt.date) -> int:
    return (b.year - a.year) * 12 + b.month - a.month


def servicing_changes(loan: Loan, *, month: dt.date, outstanding: float, days_past_due: int, status: str,
                      default_month: dt.date | None = None, drawn: float | None = None,
                      today: dt.date | None = None) -> dict[str, object]:
    """The columns one month's servicing report changes, after checking it against the loan as it stands.
    Raises Conflict (409) for a transition the loan's state forbids, Invalid (422) for a report that breaks
    the contract's rules. Pure: no database access."""
    today = today or business_today()
    if loan.status == "repaid":
        raise _conflict("status", "the loan is repaid; there is nothing left to service")
    if loan.status == "defaulted" and status != "defaulted":
        raise _conflict("status", f"a defaulted loan stays defaulted; '{status}' is not possible")
    if month.day != 1:
        raise _invalid("month", "must be the first day of a month")
    if month <= loan.as_of_month:
        raise _invalid("month", f"must be after the last reported month {loan.as_of_month.isoformat()}")
    if month > today:
        raise _invalid("month", f"must not be in the future (after {today.isoformat()})")
    if drawn is not None and loan.product != "revolving_line":
        raise _invalid("drawn", "only a revolving line draws after origination; a term loan's drawn is fixed")
    new_drawn = loan.drawn if drawn is None else round(float(drawn), 2)
    if new_drawn > loan.limit:
        raise _invalid("drawn", f"must not exceed the limit {loan.limit:g}")
    if outstanding > new_drawn * (1 + loan.apr) + 0.01:
        raise _invalid("outstanding", "must not exceed drawn x (1 + apr) (principal plus a year's interest)")
    if status == "current" and days_past_due != 0:
        raise _invalid("days_past_due", "must be 0 when status is current")
    if status == "past_due" and days_past_due < 1:
        raise _invalid("days_past_due", "must be >= 1 when status is past_due")
    if status == "repaid" and (outstanding != 0 or days_past_due != 0):
        field = "outstanding" if outstanding != 0 else "days_past_due"
        raise _invalid(field, "must be 0 when status is repaid")
    grown = days_past_due - loan.days_past_due
    if grown > DPD_PER_MONTH * _months_between(loan.as_of_month, month):
        raise _conflict("days_past_due", f"cannot grow from {loan.days_past_due} to {days_past_due} in "
                        f"{_months_between(loan.as_of_month, month)} month(s)")
    changes: dict[str, object] = {"as_of_month": month, "outstanding": round(float(outstanding), 2),
                                  "days_past_due": int(days_past_due), "status": status}
    if drawn is not None:
        changes["drawn"] = new_drawn
    if status == "defaulted":
        if loan.status == "defaulted":
            if default_month is not None and default_month != loan.default_month:
                raise _conflict("default_month", f"the loan defaulted in {loan.default_month.isoformat()}; the "
                                "month of default does not change")
        else:
            if default_month is None:
                raise _invalid("default_month", "must be set when status is defaulted")
            if default_month.day != 1:
                raise _invalid("default_month", "must be the first day of a month")
            if not loan.origination_date.replace(day=1) <= default_month <= month:
                raise _invalid("default_month", "must be between the origination month and the reported month")
            changes["default_month"] = default_month
    elif default_month is not None:
        raise _invalid("default_month", "must be empty unless status is defaulted")
    return changes


def service_loan(session: Session, *, tenant_id: int, actor: str, loan_id: int, month: dt.date, outstanding: float,
                 days_past_due: int, status: str, default_month: dt.date | None = None,
                 drawn: float | None = None) -> LoanView:
    """Record one month's servicing of a loan of this tenant (404 otherwise), audited and sealed."""
    loan = loans_db.get_loan(session, tenant_id=tenant_id, loan_id=loan_id, for_update=True)
    if loan is None:
        raise NotFound(f"no loan {loan_id} for this tenant")
    try:
        changes = servicing_changes(loan, month=month, outstanding=outstanding, days_past_due=days_past_due,
                                    status=status, default_month=default_month, drawn=drawn)
    except (Invalid, Conflict):
        session.rollback()
        raise
    loans_db.record_servicing(session, loan=loan, changes=changes, actor=actor)
    session.commit()
    return view(loan)


def get_loan(session: Session, *, tenant_id: int, loan_id: int) -> LoanView:
    loan = loans_db.get_loan(session, tenant_id=tenant_id, loan_id=loan_id)
    if loan is None:
        raise NotFound(f"no loan {loan_id} for this tenant")
    return view(loan)


def list_loans(session: Session, *, settings: Settings, tenant_id: int, after: int = 0, limit: int = 100,
               status: str | None = None, loan_reference: str | None = None) -> LoanPage:
    """One page of the tenant's loans in booking order, optionally by status or the lender's loan reference."""
    ref = keyed(tenant_key(settings, tenant_id), loan_reference) if loan_reference is not None else None
    rows = loans_db.list_loans(session, tenant_id=tenant_id, after=after, limit=limit + 1, status=status,
                               loan_ref=ref)
    more = len(rows) > limit
    rows = rows[:limit]
    return LoanPage(items=[view(r) for r in rows], next_after=rows[-1].id if more and rows else None)


def _month(d: dt.date | None) -> int:
    return NO_MONTH if d is None else int(month_index(np.array([np.datetime64(d, "D")]))[0])


def book_table(session: Session, *, tenant_id: int) -> Table:
    """The tenant's book as the data contract's ``loans`` table (months as month indexes, an empty default month
    as NO_MONTH). ``loan_id`` is the loan's id, ``enterprise_id`` the applicant's keyed reference (the database
    holds no enterprise id in clear), ``application_id`` the decision id; ``as_of_month`` is the newest month
    any loan was reported for."""
    loans = loans_db.all_loans(session, tenant_id=tenant_id)
    as_of = max((loan.as_of_month for loan in loans), default=None)
    return {
        "loan_id": np.array([str(loan.id) for loan in loans], dtype=object),
        "enterprise_id": np.array([loan.applicant_ref for loan in loans], dtype=object),
        "application_id": np.array([loan.decision_id for loan in loans], dtype=object),
        "origination_month": np.array([_month(loan.origination_date) for loan in loans], dtype=np.int64),
        "product": np.array([loan.product for loan in loans], dtype=object),
        "limit": np.array([loan.limit for loan in loans], dtype=np.float64),
        "drawn": np.array([loan.drawn for loan in loans], dtype=np.float64),
        "outstanding": np.array([loan.outstanding for loan in loans], dtype=np.float64),
        "term_months": np.array([loan.term_months for loan in loans], dtype=np.float64),
        "apr": np.array([loan.apr for loan in loans], dtype=np.float64),
        "status": np.array([loan.status for loan in loans], dtype=object),
        "days_past_due": np.array([loan.days_past_due for loan in loans], dtype=np.float64),
        "default_month": np.array([_month(loan.default_month) for loan in loans], dtype=np.int64),
        "as_of_month": np.full(len(loans), _month(as_of), dtype=np.int64),
        "reported_month": np.array([_month(loan.as_of_month) for loan in loans], dtype=np.int64),
    }
