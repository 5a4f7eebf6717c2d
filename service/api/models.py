"""Models: the registry as lenders and administrators see it; promotion swaps the champion without a restart."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from service.api import schemas
from service.db import repo
from service.deps import ChampionDep, PlatformDep, ReaderDep, SessionDep, SettingsDep
from service.errors import ERROR_RESPONSES, Invalid, NotFound
from service.scoring.registry import Registry, RegistryError

router = APIRouter(prefix="/v1/models", tags=["models"], responses=ERROR_RESPONSES)


def _summary(registry: Registry, version: str, champion: str | None) -> dict:
    md = registry.metadata(version)
    oot = md["metrics"]["oot"]
    return {"version": version, "kind": md["kind"], "champion": version == champion, "trees": md["training"]["trees"],
            "metrics": {k: oot[k] for k in ("auc", "gini", "ks", "brier", "log_loss", "n") if k in oot}}


@router.get("", operation_id="list_models", response_model=list[schemas.ModelOut])
def list_models(_: ReaderDep, settings: SettingsDep) -> list[schemas.ModelOut]:
    registry = Registry(settings.registry)
    champion = registry.champion()
    return [schemas.ModelOut(**_summary(registry, v, champion)) for v in registry.versions()]


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
    return HTMLResponse((registry.path(version) / "model_card.html").read_text(encoding="utf-8"))


@router.post("/{version}/promote", operation_id="promote_model", response_model=schemas.ModelOut)
def promote_model(version: str, body: schemas.PromoteIn, caller: PlatformDep, settings: SettingsDep,
                  champion: ChampionDep, session: SessionDep) -> schemas.ModelOut:
    """Verify and promote a version (platform scope: the champion serves every tenant); this replica loads it at
    once, others within a second."""
    registry = Registry(settings.registry)
    try:
        registry.path(version)
    except RegistryError as exc:
        raise NotFound(str(exc)) from exc
    try:
        event = registry.promote(version, by=f"{caller.tenant.name}/key:{caller.key_id}", reason=body.reason)
    except RegistryError as exc:
        raise Invalid(str(exc)) from exc
    repo.append_audit(session, tenant_id=caller.tenant.id, actor=f"key:{caller.key_id}", action="model.promoted",
                      subject=version, payload={"previous": event.previous, "reason": body.reason})
    session.commit()
    champion.refresh(force=True)
    return schemas.ModelOut(**_summary(registry, version, version))
