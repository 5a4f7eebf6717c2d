"""The applicant's own explanation page, opened by the token from the score response; no API key needed.

A token opens exactly one decision (only its SHA-256 is stored) until it expires. The page lets the applicant
ask for a human review (PIPL Art. 24); the request joins the lender's review queue with the decision's card.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, Header, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from service.api.routing import EdgeRoute
from service.db import repo
from service.db.session import checkpoint_after_purge
from service.db.tables import Decision
from service.deps import ReadSessionsDep, SessionsDep, WriteEngineDep
from service.errors import ERROR_RESPONSES
from service.scoring.raw import MONTHLY_SOURCES
from service.web.page import choose_language, render, render_line, render_message

# Rate-limited per client address before routing (service/edge.py): 429; 503 when the database is unreachable;
# 422 (JSON) for control characters in the query or form (service/api/routing.py).
router = APIRouter(route_class=EdgeRoute, prefix="/v1/explanations", tags=["explanations"],
                   responses={code: ERROR_RESPONSES[code] for code in (422, 429, 503)})

SECURITY_HEADERS = {
    "Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "base-uri 'none'; frame-ancestors 'none'",
}
REVOKED = (("已撤回数据授权", "Your consent has been withdrawn"),
           ("您对所有数据来源的授权已撤回，贷款机构保存的原始经营数据已删除，今后不会再使用。决定记录仅保留摘要和匿名编号。",
            "Your consent for every data source is withdrawn; the raw operating data the lender held is deleted "
            "and will not be used again. The decision record keeps only digests and a pseudonymous reference."))
NOT_FOUND = (("链接无效", "This link is not valid"),
             ("请检查链接是否完整，或联系贷款机构。", "Check that the link is complete, or contact the lender."))
EXPIRED = (("链接已过期", "This link has expired"),
           ("为保护您的信息，说明页面链接有有效期。请联系贷款机构获取新的链接或人工复核。",
            "To protect your information, explanation links expire. Contact the lender for a new link or a review."))


def _page(html: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


@dataclass(frozen=True)
class Opened:
    decision: Decision
    expires_at: dt.datetime


def _open(session, token: str) -> Opened | str:  # noqa: ANN001
    """The decision a valid token opens and when the token expires, or why not ("not_found" or "expired")."""
    found = repo.get_by_token(session, token=token)
    if found is None:
        return "not_found"
    decision, expires = found
    if expires <= dt.datetime.now(dt.UTC):
        return "expired"
    return Opened(decision, expires)


def _refusal(problem: str, lang: str) -> HTMLResponse:
    title, body = NOT_FOUND if problem == "not_found" else EXPIRED
    return _page(render_message(lang=lang, title=title, body=body), 404 if problem == "not_found" else 410)


@router.get("/{token}", operation_id="get_explanation_page", response_class=HTMLResponse,
            responses={404: {"description": "Unknown token"}, 410: {"description": "Expired token"}})
def get_explanation_page(token: str, sessions: ReadSessionsDep, lang: str | None = None,
                         accept_language: Annotated[str | None, Header()] = None) -> HTMLResponse:
    """The explanation card for the applicant: decision, factor chart, reasons, recourse, data used, rights."""
    language = choose_language(lang, accept_language)
    with sessions() as session:
        opened = _open(session, token)
        if isinstance(opened, str):
            return _refusal(opened, language)
        decision = opened.decision
        reviews = repo.reviews_of(session, decision_id=decision.id)
    mine = [r for r in reviews if r.requested_by == "applicant"]
    status = None if not mine else "pending" if any(r.status == "pending" for r in mine) else "decided"
    expires = opened.expires_at.strftime("%Y-%m-%d %H:%M UTC")
    return _page(render(decision=decision, lang=language, token=token, review_status=status, now_expires=expires))


@router.get("/lines/{token}", operation_id="get_line_page", response_class=HTMLResponse,
            responses={404: {"description": "Unknown token"}, 410: {"description": "Expired token"}})
def get_line_page(token: str, sessions: ReadSessionsDep, lang: str | None = None,
                  accept_language: Annotated[str | None, Header()] = None) -> HTMLResponse:
    """The borrower's page for a credit-line recommendation: what changes, why, and their rights."""
    language = choose_language(lang, accept_language)
    with sessions() as session:
        found = repo.get_line_by_token(session, token=token)
    if found is None:
        return _refusal("not_found", language)
    rescoring, expires = found
    if expires <= dt.datetime.now(dt.UTC):
        return _refusal("expired", language)
    return _page(render_line(line=rescoring.line, as_of=rescoring.as_of.strftime("%Y-%m"), lang=language,
                             expires=expires.strftime("%Y-%m-%d %H:%M UTC")))


@router.post("/{token}/review", operation_id="request_review_from_page", response_class=RedirectResponse,
             status_code=303, responses={  # a redirect has no body, hence no content type
                 303: {"description": "Recorded: back to the page, which shows the pending request (no body)",
                       "headers": {"Location": {"description": "The explanation page", "schema": {"type": "string"}}}},
                 404: {"description": "Unknown token"}, 410: {"description": "Expired"}})
async def request_review_from_page(token: str, request: Request, sessions: SessionsDep,
                                   lang: str | None = None) -> HTMLResponse:
    """The applicant asks for a human review; the page then shows that the request is pending."""
    language = choose_language(lang, request.headers.get("accept-language"))
    form = parse_qs((await request.body()).decode("utf-8", errors="replace"))
    note = (form.get("note", [""])[0].strip() or None)
    note = note[:2000] if note else None

    def record() -> str | None:
        with sessions() as session:
            opened = _open(session, token)
            if isinstance(opened, str):
                return opened
            repo.request_review(session, decision=opened.decision, requested_by="applicant", note=note)
            session.commit()
            return None

    problem = await run_in_threadpool(record)
    if problem:
        return _refusal(problem, language)
    return RedirectResponse(f"/v1/explanations/{token}?lang={language}", status_code=303, headers=SECURITY_HEADERS)


@router.post("/{token}/consents/revoke", operation_id="revoke_consent_from_page", response_class=HTMLResponse,
             responses={404: {"description": "Unknown token"}, 410: {"description": "Expired"}})
async def revoke_consent_from_page(token: str, request: Request, sessions: SessionsDep, engine: WriteEngineDep,
                                   lang: str | None = None) -> HTMLResponse:
    """The applicant withdraws consent for every source; their stored raw data is purged at once."""
    language = choose_language(lang, request.headers.get("accept-language"))

    def revoke() -> str | None:
        with sessions() as session:
            opened = _open(session, token)
            if isinstance(opened, str):
                return opened
            d = opened.decision
            repo.revoke_consent(session, tenant_id=d.tenant_id, applicant_ref=d.applicant_ref,
                                sources=list(MONTHLY_SOURCES), actor="applicant", reason="withdrawn on the page")
            session.commit()
        checkpoint_after_purge(engine)
        return None

    problem = await run_in_threadpool(revoke)
    if problem:
        return _refusal(problem, language)
    return _page(render_message(lang=language, title=REVOKED[0], body=REVOKED[1]))
