"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

router = APIRouter(tags=["health"])


@router.get("/healthz", operation_id="healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", operation_id="readyz", responses={503: {"description": "Not ready: the reason is given"}})
def readyz(request: Request) -> JSONResponse:
    """Ready when a champion model is loaded and the database answers."""
    checks: dict[str, str] = {}
    champion = request.app.state.champion
    champion.refresh()
    checks["model"] = f"ok: {champion.loaded.version}" if champion.loaded else (champion.last_error or "no champion")
    try:
        with request.app.state.read_engine.connect() as conn:  # a probe must not queue behind writers
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready; the reason is reported
        checks["database"] = f"unreachable: {type(exc).__name__}"
    ready = all(v.startswith("ok") for v in checks.values())
    return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks},
                        status_code=200 if ready else 503)


@router.get("/metrics", operation_id="metrics", response_class=Response)
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
