"""Applicants' data rights: withdrawing consent stops further use and purges the stored raw data."""

from __future__ import annotations

from fastapi import APIRouter

from service.api import schemas
from service.api.routing import EdgeRoute
from service.db import repo
from service.db.session import checkpoint_after_purge
from service.deps import ReaderDep, SessionDep
from service.errors import ERROR_RESPONSES, NotFound

router = APIRouter(route_class=EdgeRoute, prefix="/v1/applicants", tags=["applicants"], responses=ERROR_RESPONSES)


@router.post("/{applicant_ref}/consents/revoke", operation_id="revoke_consent", response_model=schemas.RevokeOut)
def revoke_consent(applicant_ref: str, body: schemas.RevokeIn, caller: ReaderDep,
                   session: SessionDep) -> schemas.RevokeOut:
    """Record the withdrawal for the given sources and purge this applicant's stored raw data (every source:
    raw requests are stored whole). Decision records keep only digests and the pseudonymous reference."""
    if not repo.known_applicant(session, tenant_id=caller.tenant.id, applicant_ref=applicant_ref):
        raise NotFound(f"no applicant {applicant_ref!r} for this tenant")
    purged = repo.revoke_consent(session, tenant_id=caller.tenant.id, applicant_ref=applicant_ref,
                                 sources=list(body.sources), actor=f"key:{caller.key_id}", reason=body.reason)
    session.commit()
    checkpoint_after_purge(session.get_bind())
    return schemas.RevokeOut(applicant_ref=applicant_ref, sources=list(body.sources), raw_rows_purged=purged)
