"""Responses shaped from records: a decision, its explanation table, a review."""

from __future__ import annotations

import datetime as dt

from service.api import schemas
from service.config import Settings
from service.db.tables import Review
from service.db.tables import as_utc as aware  # timestamps leave as RFC 3339 with their offset
from service.scoring.catalog import BY_NAME, MISSING_DATA
from service.scoring.record import DecisionRecord


def score_response(d: DecisionRecord, settings: Settings, *, application_id: str | None, token: str | None = None,
                   expires_at: dt.datetime | None = None) -> schemas.ScoreResponse:
    explanation = None
    if token is not None:
        explanation = schemas.ExplanationLink(url=f"{settings.public_base_url}/v1/explanations/{token}",
                                              token=token, expires_at=aware(expires_at))
    return schemas.ScoreResponse(
        decision_id=d.id, application_id=application_id, application_ref=d.application_ref,
        applicant_ref=d.applicant_ref, model_version=d.model_version, policy_version=d.policy_version, pd=d.pd,
        score=d.score, grade=d.grade, decision=d.decision, offer=d.offer, reasons=d.reasons,
        recourse=d.explanation.recourse, rule_hits=d.explanation.rule_hits, sources_used=d.sources_used,
        data_requests=d.explanation.data_requests,
        explanation=explanation, created_at=d.created_at)


def review_out(r: Review) -> schemas.ReviewOut:
    return schemas.ReviewOut(id=r.id, decision_id=r.decision_id, status=r.status, requested_by=r.requested_by,
                             request_note=r.request_note, reviewer=r.reviewer, outcome=r.outcome, reason=r.reason,
                             created_at=aware(r.created_at), decided_at=aware(r.decided_at))


def explanation_out(d: DecisionRecord) -> schemas.ExplanationOut:
    e = d.explanation
    ppm = e.points_per_margin
    rows = [schemas.ContributionOut(feature=n, group=MISSING_DATA if d.features.get(n) is None else BY_NAME[n].group,
                                    value=d.features.get(n), contribution=c, points=round(c * ppm, 4))
            for n, c in zip(list(d.features), e.contributions, strict=True)]
    return schemas.ExplanationOut(decision_id=d.id, model_version=d.model_version, base_value=e.base_value,
                                  margin=e.margin, points_per_margin=ppm, contributions=rows,
                                  groups=[schemas.GroupOut(group=g, points=round(p, 4)) for g, p in e.groups.items()])
