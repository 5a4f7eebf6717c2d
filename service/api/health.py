"""Liveness, readiness and Prometheus metrics.

/metrics (decision counts) and the details of /readyz (model version, reasons) are for operators: with
SMECREDIT_METRICS_TOKEN set (production requires it) they need ``Authorization: Bearer <token>``; /readyz
without it answers the bare ready / not ready status that load balancers need. A wrong token is a failed
authentication: it counts against the client's address like a wrong API key (service/edge.py).
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from service.api.routing import EdgeRoute
from service.deps import ChampionDep, MetricsDep, RateLimiterDep, ReadEngineDep, SettingsDep
from service.edge import client_address
from service.errors import ERROR_RESPONSES, RateLimited, Unauthorized

router = APIRouter(route_class=EdgeRoute, tags=["health"])


OPERATOR_ERRORS = {code: ERROR_RESPONSES[code] for code in (401, 429)}


def operator_access(request: Request, settings: SettingsDep, limiter: RateLimiterDep) -> bool:
    """True when the request may see operator details: no token configured, or the right one sent. No token
    sent: False. A wrong one: 401 (429 beyond the address's failure limit)."""
    if settings.metrics_token is None:
        return True
    scheme, _, sent = request.headers.get("authorization", "").partition(" ")
    if not sent:
        return False
    expected = settings.metrics_token.get_secret_value().encode()
    if scheme.lower() == "bearer" and hmac.compare_digest(sent.strip().encode(), expected):
        return True
    limit = settings.auth_failures_per_minute
    if limiter.hit(f"authfail:{client_address(request.scope)}") > limit:
        raise RateLimited(f"more than {limit} failed authentications in a minute from this address")
    raise Unauthorized("the metrics token is not valid")


OperatorDep = Annotated[bool, Depends(operator_access)]


@router.get("/healthz", operation_id="healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", operation_id="readyz", responses={
    503: {"description": "Not ready (the reasons are given to operators)"}, **OPERATOR_ERRORS})
def readyz(operator: OperatorDep, champion: ChampionDep, database: ReadEngineDep) -> JSONResponse:
    """Ready when a champion model is loaded and the database answers; the checks' details for operators only
    (the metrics token, when one is set)."""
    checks: dict[str, str] = {}
    champion.refresh()
    serving, refused = champion.loaded, champion.refused  # refused: champion.json names a bundle that failed checks
    checks["model"] = (f"ok: {serving.version}" + (f" (last good champion; {champion.last_error})" if refused else "")
                       if serving else (champion.last_error or "no champion"))
    try:
        with database.connect() as conn:  # a probe must not queue behind writers
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready; the reason is reported
        checks["database"] = f"unreachable: {type(exc).__name__}"
    ready = all(v.startswith("ok") for v in checks.values())
    body = {"status": "ready" if ready else "not ready", **({"checks": checks} if operator else {})}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", operation_id="metrics", response_class=Response, responses=OPERATOR_ERRORS)
def metrics(operator: OperatorDep, registry: MetricsDep) -> Response:
    """Prometheus metrics (the metrics token, when one is set)."""
    if not operator:
        raise Unauthorized("send the metrics token as 'Authorization: Bearer <token>'")
    return Response(generate_latest(registry.registry), media_type=CONTENT_TYPE_LATEST)
