"""Reads for monitoring: the decisions scored in a window and what their applicants did not consent to.
Repository style: keyword-only, session first, never commits."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.tables import Consent, Decision
from service.scoring.record import Explanation

IN_CHUNK = 500  # ids per IN (...) list: well under SQLite's and PostgreSQL's parameter limits
FETCH = 1000  # rows per round trip


@dataclass(frozen=True)
class DecisionRow:
    """What drift needs of one decision record."""

    id: str
    tenant_id: int
    model_version: str
    pd: float
    score: float
    features: dict[str, float | None]
    groups: dict[str, float]
    region: str
    industry: str
    application_date: dt.date




def decisions_in_window(session: Session, *, tenant_id: int | None, since: dt.date,
                        until: dt.date) -> Iterator[DecisionRow]:
    """Decisions whose application date lies in [since, until], of one tenant (None: every tenant), oldest
    first. An application is never scored before its date (the API refuses future dates in the business time
    zone, up to a day ahead of UTC), so the query starts at ``since`` minus a day on the indexed created_at
    and the application date is checked on each row."""
    start = dt.datetime.combine(since - dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    stmt = (select(Decision.id, Decision.tenant_id, Decision.model_version, Decision.pd, Decision.score,
                   Decision.features, Decision.explanation, Decision.context)
            .where(Decision.created_at >= start).order_by(Decision.created_at, Decision.id)
            .execution_options(yield_per=FETCH))
    if tenant_id is not None:
        stmt = stmt.where(Decision.tenant_id == tenant_id)
    for row in session.execute(stmt):
        context = row.context or {}
        try:
            applied = dt.date.fromisoformat(str(context.get("application_date")))
        except ValueError:
            continue  # a record without an application date cannot be placed in a season
        if since <= applied <= until:
            yield DecisionRow(row.id, row.tenant_id, row.model_version, row.pd, row.score, row.features,
                              Explanation.from_json(row.explanation).groups, str(context.get("region")),
                              str(context.get("industry")), applied)


def withheld_sources(session: Session, *, decision_ids: list[str]) -> dict[str, set[str]]:
    """Per decision, the sources its applicant did not consent to (as recorded with the request)."""
    out: dict[str, set[str]] = {}
    for k in range(0, len(decision_ids), IN_CHUNK):
        chunk = decision_ids[k: k + IN_CHUNK]
        stmt = select(Consent.decision_id, Consent.source).where(Consent.decision_id.in_(chunk),
                                                                 Consent.granted.is_(False))
        for decision_id, source in session.execute(stmt):
            out.setdefault(decision_id, set()).add(source)
    return out
