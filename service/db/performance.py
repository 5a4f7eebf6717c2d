"""Reads for performance monitoring: recent decisions (PD, grade, score, dates) and the realised defaults of
those that became loans (the book's ``loans`` table). Repository style: keyword-only, session first, never commits."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.tables import Decision, Loan, as_utc

OUTCOME_MONTHS = 12  # months: defaulted_12m, 90+ days past due within 12 months


@dataclass(frozen=True)
class DecidedApplication:
    """What performance monitoring needs of one decision (no identifiers beyond the decision id)."""

    decision_id: str
    tenant_id: int
    pd: float
    score: float
    grade: str
    model_version: str
    created_at: dt.datetime
    application_date: dt.date  # the application's own date (context), else the decision's UTC date



def decisions_between(session: Session, *, tenant_id: int | None, since: dt.datetime,
                      until: dt.datetime) -> list[DecidedApplication]:
    """Decisions recorded in [since, until), oldest first; every tenant's when ``tenant_id`` is None (the
    operator's command line only: the API always passes the caller's tenant)."""
    query = (select(Decision.id, Decision.tenant_id, Decision.pd, Decision.score, Decision.grade,
                    Decision.model_version, Decision.created_at, Decision.context)
             .where(Decision.created_at >= since, Decision.created_at < until)
             .order_by(Decision.created_at, Decision.id))
    if tenant_id is not None:
        query = query.where(Decision.tenant_id == tenant_id)
    out = []
    for row in session.execute(query):
        created = as_utc(row.created_at)
        applied = (row.context or {}).get("application_date")
        out.append(DecidedApplication(
            decision_id=row.id, tenant_id=row.tenant_id, pd=float(row.pd), score=float(row.score), grade=row.grade,
            model_version=row.model_version, created_at=created,
            application_date=dt.date.fromisoformat(applied) if applied else created.date()))
    return out


def _month(d: dt.date) -> int:
    return d.year * 12 + d.month - 1


def realised_defaults(session: Session, *, decision_ids: list[str], as_of: dt.date) -> dict[str, bool]:
    """The 12-month outcome of each decision that became a loan (the book's ``loans`` table), by decision id,
    for loans whose window has closed by ``as_of``: 12 months from the origination month. A loan counts as
    defaulted when its ``default_month`` falls in the window; as not defaulted when its servicing reached the
    window's last month (``as_of_month``) or it was repaid. Loans still inside their window are left out."""
    out: dict[str, bool] = {}
    now = _month(as_of)
    for k in range(0, len(decision_ids), 500):  # bounded IN lists
        rows = session.execute(select(Loan.decision_id, Loan.origination_date, Loan.default_month, Loan.as_of_month,
                                      Loan.status).where(Loan.decision_id.in_(decision_ids[k:k + 500])))
        for r in rows:
            start = _month(r.origination_date)
            if now < start + OUTCOME_MONTHS:
                continue
            defaulted = r.default_month is not None and _month(r.default_month) < start + OUTCOME_MONTHS
            if defaulted or _month(r.as_of_month) >= start + OUTCOME_MONTHS - 1 or r.status == "repaid":
                out[r.decision_id] = defaulted
    return out
