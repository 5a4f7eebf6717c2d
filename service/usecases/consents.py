"""Consent asked on the applicant's own page: the lender creates a request, the applicant answers per source and
may withdraw later from the same link, and scoring under the request uses only what was granted.

One place for the rules, which the lender's API (service/api/consent_requests.py), the page
(service/api/consent_page.py) and scoring (service/usecases/scoring.py) all call.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from service.config import Settings
from service.db import consents
from service.db.consents import ConsentView
from service.db.tables import ConsentRequest, as_utc, utcnow
from service.errors import Invalid
from service.pseudonyms import keyed, tenant_key
from service.scoring.raw import CONSENT_SOURCES, MONTHLY_SOURCES


@dataclass(frozen=True)
class Created:
    view: ConsentView
    token: str  # shown once


def request_consent(session: Session, *, settings: Settings, tenant_id: int, actor: str, enterprise_id: str,
                    sources: list[str], purpose: str, language: str) -> Created:
    """A consent request for the applicant, who is kept only as the lender's keyed pseudonym; the answer window
    is ``explanation_ttl_hours`` (the same lifetime as a decision's page link)."""
    ordered = [s for s in CONSENT_SOURCES if s in sources]  # the page lists sources in the contract's order
    request, token = consents.create_request(
        session, tenant_id=tenant_id, applicant_ref=keyed(tenant_key(settings, tenant_id), enterprise_id),
        sources=ordered, purpose=purpose, language=language, answer_hours=settings.explanation_ttl_hours,
        retention_days=settings.raw_retention_days, actor=actor)
    return Created(consents.view(session, request=request), token)


# --- the applicant's page -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PageProblem:
    """Why a page action is refused: an HTTP status and the message's key (the page words it per language)."""

    status: int
    key: str
    field: str | None = None  # the form field at fault
    source: str | None = None  # the source it concerns


def open_page(session: Session, *, token: str, for_update: bool = False) -> ConsentRequest | PageProblem:
    """The request a token opens, or why not: unknown (404), or over (410): past the page's end, or past the
    deadline without an answer (nothing to show or withdraw)."""
    request = consents.get_request_by_token(session, token=token, for_update=for_update)
    if request is None:
        return PageProblem(404, "not_found")
    now = utcnow()
    if now >= as_utc(request.link_expires_at) or (request.answered_at is None and now >= as_utc(request.expires_at)):
        return PageProblem(410, "expired")
    return request


def check_answer(request: ConsentRequest, form: dict[str, list[str]]) -> dict[str, bool] | PageProblem:
    """The applicant's choices from the page's form: exactly one of ``grant`` or ``decline`` per asked source,
    nothing else but the form's own fields."""
    if request.answered_at is not None:
        return PageProblem(409, "already_answered")
    if utcnow() >= as_utc(request.expires_at):
        return PageProblem(410, "expired")
    unknown = sorted(set(form) - set(request.sources))
    if unknown:
        return PageProblem(422, "not_asked", unknown[0])
    choices = {}
    for source in request.sources:
        values = form.get(source, [])
        if len(values) != 1 or values[0] not in ("grant", "decline"):
            return PageProblem(422, "choose", source, source)
        choices[source] = values[0] == "grant"
    return choices


def check_withdrawal(page: ConsentView, form: dict[str, list[str]]) -> str | PageProblem:
    """The source to withdraw: one field ``source`` naming a source granted on this page now."""
    values = form.get("source", [])
    if set(form) - {"source"} or len(values) != 1:
        return PageProblem(422, "one_source", "source")
    state = page.state(values[0])
    if state is None:
        return PageProblem(422, "not_asked", "source")
    if not state.granted:
        return PageProblem(409, "not_granted", "source", values[0])
    return values[0]


# --- scoring under a consent request --------------------------------------------------------------------------


def consent_for_scoring(session: Session, *, settings: Settings, tenant_id: int, request_id: str,
                        enterprise_id: str, sent: list[str], loc: list[str | int]) -> dict[str, bool]:
    """The consent per source a score request naming ``request_id`` may use: what the applicant granted on their
    page and has not withdrawn. Refused (422) when the request is not this lender's, is for another applicant,
    is unanswered or past its deadline, or when data was ``sent`` for a source not granted (each named: the
    monthly sources under ``data``, links as the ``related`` block)."""
    where = ".".join(str(p) for p in [*loc, "consent_request_id"])

    def refuse(msg: str, type_: str) -> Invalid:
        return Invalid(f"{where}: {msg}", errors=[{"loc": [*loc, "consent_request_id"], "msg": msg, "type": type_}])

    request = consents.get_request(session, tenant_id=tenant_id, request_id=request_id)
    if request is None:
        raise refuse(f"no consent request {request_id} for this lender", "consent_request_unknown")
    if request.applicant_ref != keyed(tenant_key(settings, tenant_id), enterprise_id):
        raise refuse(f"consent request {request_id} was made for another applicant (profile.enterprise_id differs)",
                     "consent_request_applicant")
    if utcnow() >= as_utc(request.expires_at):
        raise refuse(f"consent request {request_id} expired at {as_utc(request.expires_at).isoformat()}; "
                     "ask the applicant again with a new one", "consent_request_expired")
    if request.answered_at is None:
        raise refuse(f"the applicant has not answered consent request {request_id} yet", "consent_request_pending")
    page = consents.view(session, request=request)
    refused = []
    for source in sent:
        state = page.state(source)
        if state is None or not state.granted:
            why = "was not asked for" if state is None else {"declined": "declined", "withdrawn": "withdrew",
                                                               "pending": "has not answered"}[state.status]
            refused.append((source, f"the applicant {why} {source} in consent request {request_id}"
                            if state is not None else f"{source} {why} in consent request {request_id}"))
    if refused:
        def where_sent(source: str) -> list[str | int]:
            return [*loc, "related"] if source == "links" else [*loc, "data", source]

        first = ".".join(str(p) for p in where_sent(refused[0][0]))
        raise Invalid(f"{first}: {refused[0][1]}; do not send data the applicant has not agreed to share",
                      errors=[{"loc": where_sent(source), "msg": msg, "type": "consent_not_granted"}
                              for source, msg in refused])
    # A monthly source not asked for is not consented; links not asked for are not recorded either way.
    return {s: bool(state and state.granted) for s in CONSENT_SOURCES
            if (state := page.state(s)) is not None or s in MONTHLY_SOURCES}

