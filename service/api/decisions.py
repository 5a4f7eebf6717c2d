"""Decisions: read one decision (with its reviews) and its full contribution table. Tenants see only their own."""

from __future__ import annotations

from fastapi import APIRouter

from service.api import schemas
from service.api.routing import EdgeRoute
from service.api.shapes import explanation_out, review_out, score_response
from service.db import repo
from service.deps import (
    KeyringDep,
    ReaderDep,
    ReadSessionDep,
    SettingsDep,
)
from service.errors import ERROR_RESPONSES, NotFound
from service.scoring.record import DecisionRecord

router = APIRouter(route_class=EdgeRoute, prefix="/v1/decisions", tags=["decisions"], responses=ERROR_RESPONSES)


def _get_or_404(session, tenant_id: int, decision_id: str):  # noqa: ANN001, ANN202
    decision = repo.get_decision(session, tenant_id=tenant_id, decision_id=decision_id)
    if decision is None:
        raise NotFound(f"no decision {decision_id!r} for this tenant")
    return decision


@router.get("/{decision_id}", operation_id="get_decision", response_model=schemas.DecisionOut)
def get_decision(decision_id: str, caller: ReaderDep, session: ReadSessionDep, settings: SettingsDep,
                 keyring: KeyringDep) -> schemas.DecisionOut:
    """A decision with its reviews. The application id comes from the encrypted raw input while it is kept."""
    decision = _get_or_404(session, caller.tenant.id, decision_id)
    application_id = repo.read_application_id(session, keyring=keyring, decision_id=decision.id)
    base = score_response(DecisionRecord.of(decision), settings, application_id=application_id)
    return schemas.DecisionOut(**base.model_dump(), reviews=[review_out(r) for r in
                                                             repo.reviews_of(session, decision_id=decision.id)])


@router.get("/{decision_id}/explanation", operation_id="get_decision_explanation",
            response_model=schemas.ExplanationOut)
def get_decision_explanation(decision_id: str, caller: ReaderDep, session: ReadSessionDep) -> schemas.ExplanationOut:
    """Every feature's contribution (log-odds and points), group totals and the base value."""
    return explanation_out(DecisionRecord.of(_get_or_404(session, caller.tenant.id, decision_id)))
