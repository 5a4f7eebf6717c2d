"""Models: the registry as lenders and administrators see it; promotion swaps the champion without a restart."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from service.api import schemas
from service.api.pagination import Cursor, Limit, decode_cursor, encode_cursor
from service.api.routing import EdgeRoute
from service.deps import ChampionDep, PlatformDep, ReaderDep, SessionDep, SettingsDep
from service.errors import ERROR_RESPONSES, Invalid, NotFound
from service.scoring.registry import Registry, RegistryError
from service.usecases import champion as champion_usecase

router = APIRouter(route_class=EdgeRoute, prefix="/v1/models", tags=["models"], responses=ERROR_RESPONSES)


def _summary(registry: Registry, version: str, champion: str | None) -> dict:
    md = registry.metadata(version)
    oot = md["metrics"]["oot"]
    return {"version": version, "kind": md["kind"], "champion": version == champion, "trees": md["training"]["trees"],
            "metrics": {k: oot[k] for k in ("auc", "gini", "ks", "brier", "log_loss", "n") if k in oot}}


@router.get("", operation_id="list_models", response_model=schemas.ModelPage)
def list_models(_: ReaderDep, settings: SettingsDep, limit: Limit = 100, cursor: Cursor = None) -> schemas.ModelPage:
    """Registered versions, oldest first, a page at a time: follow ``next_cursor`` until it is null."""
    registry = Registry(settings.registry)
    champion = registry.champion()
    versions = registry.versions()
    after = decode_cursor(cursor, str)
    if after is not None and after not in versions:
        raise Invalid("query.cursor: not a cursor from this list; pass next_cursor from the previous page",
                      errors=[{"loc": ["query", "cursor"], "msg": "not a cursor from this list", "type": "cursor"}])
    start = 0 if after is None else versions.index(after) + 1
    page = versions[start:start + limit]
    more = start + limit < len(versions)
    return schemas.ModelPage(items=[schemas.ModelOut(**_summary(registry, v, champion)) for v in page],
                             next_cursor=encode_cursor(page[-1]) if more else None)


@router.get("/{version}", operation_id="get_model", response_model=schemas.ModelDetail)
def get_model(version: str, _: ReaderDep, settings: SettingsDep) -> schemas.ModelDetail:
    registry = Registry(settings.registry)
    try:
        md = registry.metadata(version)
    except RegistryError as exc:
        raise NotFound(str(exc)) from exc
    return schemas.ModelDetail(**_summary(registry, version, registry.champion()),
                               features=[f["name"] for f in md["features"]], split=md["training"]["split"],
                               libraries=md["libraries"], data_fingerprint=md["data"]["sha256"])


@router.get("/{version}/card", operation_id="get_model_card", response_class=HTMLResponse)
def get_model_card(version: str, _: ReaderDep, settings: SettingsDep) -> HTMLResponse:
    """The model card (HTML with plots) of a verified bundle, for risk teams and auditors."""
    registry = Registry(settings.registry)
    try:
        registry.verify(version)
    except RegistryError as exc:
        raise NotFound(str(exc)) from exc
    # The card is self-contained (inline CSS and SVG, no script, no external resource): tests/test_edge.py.
    return HTMLResponse((registry.path(version) / "model_card.html").read_text(encoding="utf-8"), headers={
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
                                   "form-action 'none'; frame-ancestors 'none'", "X-Content-Type-Options": "nosniff"})


@router.post("/{version}/promote", operation_id="promote_model", response_model=schemas.ModelOut)
def promote_model(version: str, body: schemas.PromoteIn, caller: PlatformDep, settings: SettingsDep,
                  champion: ChampionDep, session: SessionDep) -> schemas.ModelOut:
    """Check and promote a version (platform scope: the champion serves every tenant); this replica loads it at
    once, others within a second. A version that fails the checks (digests, parse and canary scoring in a child
    process, a catalog model) is refused with the reason: the champion and the audit trail stay as they were."""
    registry = Registry(settings.registry)
    try:
        registry.path(version)
    except RegistryError as exc:
        raise NotFound(str(exc)) from exc
    try:
        champion_usecase.promote(session, registry=registry, version=version,
                                 by=f"{caller.tenant.name}/key:{caller.key_id}", actor=f"key:{caller.key_id}",
                                 reason=body.reason, tenant_id=caller.tenant.id)
    except RegistryError as exc:
        raise Invalid(str(exc)) from exc
    champion.refresh(force=True)  # checked by promote(): loads from the memoised verdict, forks nothing
    return schemas.ModelOut(**_summary(registry, version, version))
