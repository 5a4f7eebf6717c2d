"""Human review: the queue, and a reviewer's decision with a mandatory reason (the original is kept)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter

from service.api import schemas
from service.api.pagination import Cursor, Limit, decode_cursor, encode_cursor
from service.api.routing import EdgeRoute
from service.api.shapes import review_out
from service.db import repo
from service.deps import ReadSessionDep, ReviewerDep, SessionDep
from service.errors import ERROR_RESPONSES, NotFound

router = APIRouter(route_class=EdgeRoute, prefix="/v1/reviews", tags=["reviews"], responses=ERROR_RESPONSES)


@router.get("", operation_id="list_reviews", response_model=schemas.ReviewPage)
def list_reviews(caller: ReviewerDep, session: ReadSessionDep,
                 status: Literal["pending", "awaiting_data", "decided"] | None = None,
                 limit: Limit = 100, cursor: Cursor = None) -> schemas.ReviewPage:
    """The review queue, oldest first, a page at a time: follow ``next_cursor`` until it is null. ``pending`` is a
    person's queue; ``awaiting_data`` holds referrals waiting for a source the applicant did not share (the
    score response's ``data_requests``), which a reviewer may still decide."""
    after = decode_cursor(cursor, int) or 0
    rows = repo.list_reviews(session, tenant_id=caller.tenant.id, status=status, after=after, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return schemas.ReviewPage(items=[review_out(r) for r in rows],
                              next_cursor=encode_cursor(rows[-1].id) if more else None)


@router.post("/{decision_id}", operation_id="decide_review", response_model=schemas.ReviewOut)
def decide_review(decision_id: str, body: schemas.ReviewIn, caller: ReviewerDep,
                  session: SessionDep) -> schemas.ReviewOut:
    decision = repo.get_decision(session, tenant_id=caller.tenant.id, decision_id=decision_id)
    if decision is None:
        raise NotFound(f"no decision {decision_id!r} for this tenant")
    review = repo.decide_review(session, decision=decision, reviewer=body.reviewer, outcome=body.outcome,
                                reason=body.reason)
    session.commit()
    return review_out(review)
