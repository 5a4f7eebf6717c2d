"""Consent requests answered on the applicant's own page: repository functions (keyword-only, session first, never
commit). Every write is sealed in the audit chain: ``consent.requested`` when the lender asks,
``consent.answered`` with the applicant's choice per source, and the existing ``consent.revoked`` for a
withdrawal, which also purges the applicant's stored raw data (repo.revoke_consent)."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db import repo
from service.db.tables import Consent, ConsentGrant, ConsentRequest, as_utc, utcnow

GrantStatus = Literal["pending", "granted", "declined", "withdrawn"]
RequestStatus = Literal["pending", "answered", "expired"]


@dataclass(frozen=True)
class SourceState:
    """Where one asked source stands: not answered yet, granted, declined, or granted and later withdrawn."""

    source: str
    status: GrantStatus
    recorded_at: dt.datetime | None  # of the newest row; None while pending

    @property
    def granted(self) -> bool:
        return self.status == "granted"


@dataclass(frozen=True)
class ConsentView:
    """A consent request with the current state of each source it asked for, as the page and the lender see it."""

    request: ConsentRequest
    states: tuple[SourceState, ...]

    def status(self, now: dt.datetime) -> RequestStatus:
        if now >= as_utc(self.request.expires_at):
            return "expired"
        return "answered" if self.request.answered_at is not None else "pending"

    def state(self, source: str) -> SourceState | None:
        return next((s for s in self.states if s.source == source), None)


def create_request(session: Session, *, tenant_id: int, applicant_ref: str, sources: list[str], purpose: str,
                   language: str, answer_hours: int, retention_days: int, actor: str) -> tuple[ConsentRequest, str]:
    """A new request and its page token (returned once; only its SHA-256 is stored), sealed in
    ``consent.requested``. The page opens until the answer deadline plus the retention period."""
    token = secrets.token_urlsafe(24)
    now = utcnow()
    expires = now + dt.timedelta(hours=answer_hours)
    row = ConsentRequest(id=uuid.uuid4().hex, tenant_id=tenant_id, applicant_ref=applicant_ref,
                         token_hash=repo.sha256_hex(token), sources=list(sources), purpose=purpose, language=language,
                         created_at=now, expires_at=expires,
                         link_expires_at=expires + dt.timedelta(days=retention_days))
    session.add(row)
    session.flush()
    repo.append_audit(session, tenant_id=tenant_id, actor=actor, action="consent.requested", subject=row.id,
                      payload={"applicant_ref": applicant_ref, "sources": list(sources), "language": language},
                      rows=[row])
    return row, token


def get_request(session: Session, *, tenant_id: int, request_id: str,
                for_update: bool = False) -> ConsentRequest | None:
    """A request of this tenant only: another tenant's id is indistinguishable from a missing one."""
    q = select(ConsentRequest).where(ConsentRequest.id == request_id, ConsentRequest.tenant_id == tenant_id)
    return session.scalar(q.with_for_update() if for_update else q)


def get_request_by_token(session: Session, *, token: str, for_update: bool = False) -> ConsentRequest | None:
    q = select(ConsentRequest).where(ConsentRequest.token_hash == repo.sha256_hex(token))
    return session.scalar(q.with_for_update() if for_update else q)


def view(session: Session, *, request: ConsentRequest) -> ConsentView:
    """The request with each asked source's current state, from its append-only grant rows and from any
    withdrawal made another way after the grant (the lender's withdrawal endpoint, the explanation page's
    button): a grant withdrawn anywhere is withdrawn here too."""
    rows = list(session.scalars(select(ConsentGrant).where(ConsentGrant.request_id == request.id)
                                .order_by(ConsentGrant.id)))
    elsewhere: dict[str, dt.datetime] = {}
    if any(r.granted for r in rows):
        for source, at in session.execute(
                select(Consent.source, Consent.recorded_at).where(
                    Consent.tenant_id == request.tenant_id, Consent.applicant_ref == request.applicant_ref,
                    Consent.decision_id.is_(None), Consent.granted.is_(False))):
            elsewhere[source] = max(elsewhere.get(source, as_utc(at)), as_utc(at))
    states = []
    for source in request.sources:
        mine = [r for r in rows if r.source == source]
        if not mine:
            states.append(SourceState(source, "pending", None))
            continue
        newest = mine[-1]
        status: GrantStatus = "granted" if newest.granted else "withdrawn" if any(r.granted for r in mine) \
            else "declined"
        at = as_utc(newest.recorded_at)
        if status == "granted" and source in elsewhere and elsewhere[source] >= at:
            status, at = "withdrawn", elsewhere[source]
        states.append(SourceState(source, status, at))
    return ConsentView(request, tuple(states))


def answer(session: Session, *, request: ConsentRequest, choices: dict[str, bool]) -> list[ConsentGrant]:
    """Record the applicant's choice for every asked source (the caller checked that ``choices`` covers exactly
    those and that the request is open and unanswered), sealed with the request in ``consent.answered``."""
    now = utcnow()
    request.answered_at = now
    rows = [ConsentGrant(request_id=request.id, source=s, granted=choices[s], recorded_at=now)
            for s in request.sources]
    session.add_all(rows)
    session.flush()
    repo.append_audit(session, tenant_id=request.tenant_id, actor="applicant", action="consent.answered",
                      subject=request.id,
                      payload={"granted": [s for s in request.sources if choices[s]],
                               "declined": [s for s in request.sources if not choices[s]]},
                      rows=[request, *rows])
    return rows


def withdraw(session: Session, *, request: ConsentRequest, source: str) -> int:
    """Withdraw a granted source: a ``granted=false`` row for it, and the existing withdrawal (a consent row, the
    applicant's stored raw data purged, one ``consent.revoked`` event sealing both). Returns the raw rows purged."""
    row = ConsentGrant(request_id=request.id, source=source, granted=False, recorded_at=utcnow())
    session.add(row)
    session.flush()
    return repo.revoke_consent(session, tenant_id=request.tenant_id, applicant_ref=request.applicant_ref,
                               sources=[source], actor="applicant",
                               reason=f"withdrawn on the consent page of request {request.id}", also_seal=[row])
