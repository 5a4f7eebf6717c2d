"""The applicant's consent page, opened by the token of a consent request; no API key needed.

Under the applicant's pages (``/v1/explanations/``): rate-limited per client address at the edge, untraced, and
logged by route template only (the path is the token). The applicant grants or declines each source once, then
the same link shows the current grants and withdraws any of them (purging the stored raw data, as every
withdrawal does).
"""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service.api.explanations import NOT_FOUND, SECURITY_HEADERS
from service.api.routing import EdgeRoute
from service.config import Settings
from service.db import consents
from service.db.session import checkpoint_after_purge
from service.db.tables import ConsentRequest, Tenant, as_utc, utcnow
from service.deps import ReadSessionsDep, SessionsDep, SettingsDep, WriteEngineDep
from service.errors import ERROR_RESPONSES
from service.scoring.raw import MONTHLY_SOURCES
from service.usecases import consents as consent_cases
from service.usecases.consents import PageProblem
from service.web.consent_page import EXPIRED, ConsentPage, SourceRow, problem_text, render_consent
from service.web.page import LANGS, render_message

PREFIX = "/v1/explanations/consent"
# 429 at the edge (per address), 503 when the database is unreachable, 422 (JSON) for control characters or a
# body that is not URL-encoded UTF-8 (415) (service/api/routing.py); the form's own rules answer as HTML pages.
router = APIRouter(route_class=EdgeRoute, prefix=PREFIX, tags=["consent"],
                   responses={code: ERROR_RESPONSES[code] for code in (415, 422, 429, 503)})
PAGE_ERRORS = {404: {"description": "Unknown token"}, 410: {"description": "The page or the time to answer is over"}}
FORM_422 = {422: {"description": "A form field breaks a rule: the page again, naming the field and the rule (HTML); a "
                                 "control character in the query or form: the JSON error of the edge",
                  "content": {"text/html": {"schema": {"type": "string"}},
                              "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}}


def _form_body(properties: dict, required: list[str]) -> dict:
    """The page form's fields in the OpenAPI document (the handler reads the URL-encoded body itself)."""
    return {"requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
        "type": "object", "properties": properties, "required": required}}}}}


ANSWER_FORM = _form_body({s: {"type": "string", "enum": ["grant", "decline"],
                              "description": f"The choice for {s}, once; one field per source asked for"}
                          for s in MONTHLY_SOURCES}, [])
WITHDRAW_FORM = _form_body({"source": {"type": "string", "enum": list(MONTHLY_SOURCES),
                                       "description": "One source granted now"}}, ["source"])
REDIRECT = {303: {"description": "Recorded: back to the page, which shows the current grants (no body)",
                  "headers": {"Location": {"description": "The consent page", "schema": {"type": "string"}}}}}


def _page(html: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def _language(lang: str | None, request: ConsentRequest | None) -> str:
    """?lang= wins; otherwise the language the lender chose for the request; Chinese by default."""
    if lang in LANGS:
        return lang
    return request.language if request is not None and request.language in LANGS else "zh"


def _read(session: Session, request: ConsentRequest, token: str, settings: Settings) -> ConsentPage:
    page = consents.view(session, request=request)
    now = utcnow()
    lender = session.get(Tenant, request.tenant_id)
    return ConsentPage(
        token=token, lender=lender.name if lender else "", purpose=request.purpose,
        rows=tuple(SourceRow(s.source, s.status, s.recorded_at) for s in page.states),
        answerable=page.status(now) == "pending", usable=page.status(now) == "answered",
        expires_at=as_utc(request.expires_at), link_expires_at=as_utc(request.link_expires_at),
        retention_days=settings.raw_retention_days)


def _refusal(problem: PageProblem, lang: str, page: ConsentPage | None) -> HTMLResponse:
    if page is None or problem.key in ("not_found", "expired"):
        title, body = NOT_FOUND if problem.key == "not_found" else EXPIRED
        return _page(render_message(lang=lang, title=title, body=body), problem.status)
    return _page(render_consent(page, lang=lang, error=problem_text(problem.key, problem.field, problem.source)),
                 problem.status)


@router.get("/{token}", operation_id="get_consent_page", response_class=HTMLResponse, responses=PAGE_ERRORS)
def get_consent_page(token: str, sessions: ReadSessionsDep, settings: SettingsDep, lang: str | None = None,
                     done: str | None = None) -> HTMLResponse:
    """The sources asked for, each with its use, user and retention, and a grant/decline choice; once answered,
    the current grants with a withdrawal button each."""
    with sessions() as session:
        opened = consent_cases.open_page(session, token=token)
        if isinstance(opened, PageProblem):
            return _refusal(opened, _language(lang, None), None)
        language, page = _language(lang, opened), _read(session, opened, token, settings)
    return _page(render_consent(page, lang=language, done=done if done in ("answered", "withdrawn") else None))


async def _form(request: Request) -> dict[str, list[str]]:
    return parse_qs((await request.body()).decode("utf-8", errors="replace"), keep_blank_values=True)


@router.post("/{token}", operation_id="answer_consent_page", response_class=RedirectResponse, status_code=303,
             openapi_extra=ANSWER_FORM,
             responses={**REDIRECT, **PAGE_ERRORS, **FORM_422,
                        409: {"description": "Already answered: the page with the current grants"}})
async def answer_consent_page(token: str, request: Request, sessions: SessionsDep, settings: SettingsDep,
                              lang: str | None = None) -> HTMLResponse:
    """The applicant's choice per source (form fields named after the sources: ``grant`` or ``decline``, one
    each), recorded and audited; a form that misses or repeats a choice is refused (422) naming the field."""
    form = await _form(request)

    def record() -> tuple[PageProblem | None, str, ConsentPage | None]:
        with sessions() as session:
            opened = consent_cases.open_page(session, token=token, for_update=True)
            if isinstance(opened, PageProblem):
                return opened, _language(lang, None), None
            language = _language(lang, opened)
            choices = consent_cases.check_answer(opened, form)
            if isinstance(choices, PageProblem):
                return choices, language, _read(session, opened, token, settings)
            consents.answer(session, request=opened, choices=choices)
            session.commit()
            return None, language, None

    problem, language, page = await run_in_threadpool(record)
    if problem:
        return _refusal(problem, language, page)
    return RedirectResponse(f"{PREFIX}/{token}?lang={language}&done=answered", status_code=303,
                            headers=SECURITY_HEADERS)


@router.post("/{token}/withdraw", operation_id="withdraw_consent_from_consent_page",
             response_class=RedirectResponse, status_code=303,
             openapi_extra=WITHDRAW_FORM,
             responses={**REDIRECT, **PAGE_ERRORS, **FORM_422, 409: {"description": "That source is not granted now"}})
async def withdraw_consent_from_consent_page(token: str, request: Request, sessions: SessionsDep,
                                             settings: SettingsDep, engine: WriteEngineDep,
                                             lang: str | None = None) -> HTMLResponse:
    """Withdraw one granted source (form field ``source``): recorded and audited, and the applicant's stored raw
    data purged at once, as every withdrawal does."""
    form = await _form(request)

    def withdraw() -> tuple[PageProblem | None, str, ConsentPage | None]:
        with sessions() as session:
            opened = consent_cases.open_page(session, token=token, for_update=True)
            if isinstance(opened, PageProblem):
                return opened, _language(lang, None), None
            language = _language(lang, opened)
            source = consent_cases.check_withdrawal(consents.view(session, request=opened), form)
            if isinstance(source, PageProblem):
                return source, language, _read(session, opened, token, settings)
            consents.withdraw(session, request=opened, source=source)
            session.commit()
        checkpoint_after_purge(engine)
        return None, language, None

    problem, language, page = await run_in_threadpool(withdraw)
    if problem:
        return _refusal(problem, language, page)
    return RedirectResponse(f"{PREFIX}/{token}?lang={language}&done=withdrawn", status_code=303,
                            headers=SECURITY_HEADERS)
