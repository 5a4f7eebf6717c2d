"""Loans: repository functions (keyword-only, session first, never commit). Every write is sealed in the audit
chain: ``loan.created`` when a decision becomes a loan, ``loan.serviced`` for each monthly servicing report."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db import repo
from service.db.tables import Loan, utcnow


def add_loan(session: Session, *, loan: Loan, actor: str) -> Loan:
    """Insert a loan and seal it in a ``loan.created`` event."""
    session.add(loan)
    session.flush()
    repo.append_audit(session, tenant_id=loan.tenant_id, actor=actor, action="loan.created", subject=f"loan:{loan.id}",
                      payload={"decision_id": loan.decision_id, "product": loan.product, "limit": loan.limit,
                               "drawn": loan.drawn, "origination_date": loan.origination_date.isoformat()},
                      rows=[loan])
    return loan


def get_loan(session: Session, *, tenant_id: int, loan_id: int, for_update: bool = False) -> Loan | None:
    """A loan of this tenant only: another tenant's id is indistinguishable from a missing one."""
    q = select(Loan).where(Loan.id == loan_id, Loan.tenant_id == tenant_id)
    return session.scalar(q.with_for_update() if for_update else q)


def loan_of_decision(session: Session, *, decision_id: str) -> Loan | None:
    return session.scalar(select(Loan).where(Loan.decision_id == decision_id))


def loan_by_ref(session: Session, *, tenant_id: int, loan_ref: str) -> Loan | None:
    return session.scalar(select(Loan).where(Loan.tenant_id == tenant_id, Loan.loan_ref == loan_ref))


def list_loans(session: Session, *, tenant_id: int, after: int = 0, limit: int = 100, status: str | None = None,
               loan_ref: str | None = None) -> list[Loan]:
    """One page of the tenant's loans in booking order: ids above ``after`` (keyset pagination)."""
    q = select(Loan).where(Loan.tenant_id == tenant_id, Loan.id > after)
    if status is not None:
        q = q.where(Loan.status == status)
    if loan_ref is not None:
        q = q.where(Loan.loan_ref == loan_ref)
    return list(session.scalars(q.order_by(Loan.id).limit(limit)))


def all_loans(session: Session, *, tenant_id: int) -> list[Loan]:
    """The tenant's whole book, in booking order."""
    return list(session.scalars(select(Loan).where(Loan.tenant_id == tenant_id).order_by(Loan.id)))


def record_servicing(session: Session, *, loan: Loan, changes: dict[str, object], actor: str) -> Loan:
    """Apply one month's servicing report (already checked) and seal the row in a ``loan.serviced`` event that
    keeps what changed, from what."""
    before = {k: _plain(getattr(loan, k)) for k in changes}
    for k, v in changes.items():
        setattr(loan, k, v)
    loan.updated_at = utcnow()
    session.flush()
    repo.append_audit(session, tenant_id=loan.tenant_id, actor=actor, action="loan.serviced", subject=f"loan:{loan.id}",
                      payload={"before": before, "after": {k: _plain(v) for k, v in changes.items()}}, rows=[loan])
    return loan


def _plain(value: object) -> object:
    return value.isoformat() if hasattr(value, "isoformat") else value
