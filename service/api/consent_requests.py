"""Consent requests: the lender asks the applicant to grant each data source on their own page, before scoring.

``POST /v1/consent-requests`` returns the page link (its token shown once); ``GET /v1/consent-requests/{id}``
reads the applicant's answers. A score request then names the request (``consent_request_id``) instead of
carrying the lender's own consent record, and only what the applicant granted is used.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter
from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from service.api.routing import EdgeRoute
from service.api.schemas import Strict
from service.config import Settings
from service.db import consents
from service.db.consents import ConsentView
from service.db.tables import as_utc, utcnow
from service.deps import ReaderDep, ReadSessionDep, ScorerDep, SessionDep, SettingsDep
from service.errors import ERROR_RESPONSES, NotFound
from service.scoring.raw import CONSENT_SOURCES
from service.usecases import consents as consent_cases

router = APIRouter(route_class=EdgeRoute, prefix="/v1/consent-requests", tags=["consent"], responses=ERROR_RESPONSES)
PAGE_PATH = "/v1/explanations/consent"  # under the applicant's pages: public, rate-limited per address, untraced

Source = Literal[CONSENT_SOURCES]  # type: ignore[valid-type]


def _distinct(sources: list[str]) -> list[str]:
    repeated = sorted({s for s in sources if sources.count(s) > 1})
    if repeated:
        raise ValueError(f"each source at most once; repeated: {', '.join(repeated)}")
    return sources


class ConsentRequestIn(Strict):
    enterprise_id: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)] = Field(
        description="The applicant's enterprise id, as in score requests; stored only as the lender's keyed "
                    "pseudonym (applicant_ref)")
    sources: Annotated[list[Source], AfterValidator(_distinct)] = Field(
        min_length=1, description="The data sources to ask for; the applicant grants or declines each separately. "
                                  "links: the related-party records (owners, representatives, address, phone, "
                                  "receiving accounts, guarantees, main trading partners), sent in a score "
                                  "request's `related` block only when granted")
    purpose: Annotated[str, StringConstraints(strip_whitespace=True, min_length=5, max_length=500)] = Field(
        description="What the data is for, in the lender's words, shown to the applicant as written")
    language: Literal["zh", "en"] = Field("zh", description="The page's language (the applicant can switch)")


class SourceGrantOut(BaseModel):
    source: str
    status: Literal["pending", "granted", "declined", "withdrawn"]
    recorded_at: dt.datetime | None = Field(description="When the applicant answered or withdrew; null while pending")


class ConsentLink(BaseModel):
    url: str
    token: str = Field(description="Shown once; only its SHA-256 is stored")
    expires_at: dt.datetime = Field(description="The page opens until then (withdrawal included)")


class ConsentRequestOut(BaseModel):
    id: str = Field(description="Name it as consent_request_id in a score request")
    applicant_ref: str = Field(description="Pseudonymous applicant reference (keyed HMAC of the enterprise id, per "
                               "lender), as in decisions")
    sources: list[str]
    purpose: str
    language: str
    status: Literal["pending", "answered", "expired"] = Field(
        description="pending: not answered yet; answered: scoring may use the grants until expires_at; expired: "
                    "past expires_at (answered grants can still be withdrawn on the page until link_expires_at)")
    grants: list[SourceGrantOut] = Field(description="One per source asked for, its current state")
    created_at: dt.datetime
    expires_at: dt.datetime = Field(description="Deadline to answer and to score under this request")
    link_expires_at: dt.datetime = Field(description="The page stays open until then: expires_at plus the raw "
                                         "data's retention period")
    answered_at: dt.datetime | None
    link: ConsentLink | None = Field(description="The page link for the applicant; only in the creation response")


def consent_out(page: ConsentView, settings: Settings, token: str | None = None) -> ConsentRequestOut:
    r = page.request
    link_expires = as_utc(r.link_expires_at)
    return ConsentRequestOut(
        id=r.id, applicant_ref=r.applicant_ref, sources=list(r.sources), purpose=r.purpose, language=r.language,
        status=page.status(utcnow()),
        grants=[SourceGrantOut(source=s.source, status=s.status, recorded_at=s.recorded_at) for s in page.states],
        created_at=as_utc(r.created_at), expires_at=as_utc(r.expires_at), link_expires_at=link_expires,
        answered_at=as_utc(r.answered_at),
        link=None if token is None else ConsentLink(url=f"{settings.public_base_url}{PAGE_PATH}/{token}", token=token,
                                                    expires_at=link_expires))


@router.post("", operation_id="create_consent_request", status_code=201, response_model=ConsentRequestOut)
def create_consent_request(body: ConsentRequestIn, caller: ScorerDep, session: SessionDep,
                           settings: SettingsDep) -> ConsentRequestOut:
    """Ask the applicant for consent per source: returns the page link to send them (token shown once)."""
    created = consent_cases.request_consent(
        session, settings=settings, tenant_id=caller.tenant.id, actor=f"key:{caller.key_id}",
        enterprise_id=body.enterprise_id, sources=list(body.sources), purpose=body.purpose, language=body.language)
    session.commit()
    return consent_out(created.view, settings, created.token)


@router.get("/{request_id}", operation_id="get_consent_request", response_model=ConsentRequestOut)
def get_consent_request(request_id: str, caller: ReaderDep, session: ReadSessionDep,
                        settings: SettingsDep) -> ConsentRequestOut:
    """The applicant's answers per source, as they stand now (withdrawals included); never the link."""
    request = consents.get_request(session, tenant_id=caller.tenant.id, request_id=request_id)
    if request is None:
        raise NotFound(f"no consent request {request_id!r} for this lender")
    return consent_out(consents.view(session, request=request), settings)
