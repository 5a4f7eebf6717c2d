"""Scores: one application, a batch, or a bring-your-own-table feature vector."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Header, Response
from lightgbm.basic import LightGBMError
from pydantic import BaseModel

from service.api import schemas
from service.api.routing import EdgeRoute
from service.api.shapes import score_response
from service.deps import (
    Caller,
    ChampionDep,
    EngineDep,
    MetricsDep,
    PoliciesDep,
    RecorderDep,
    ScorerDep,
    SettingsDep,
)
from service.errors import ERROR_RESPONSES, Invalid
from service.metrics import Metrics
from service.runtime import BundleCache, Policies
from service.scoring import tabular
from service.scoring.bundle import BundleError
from service.scoring.engine import Engine
from service.scoring.registry import RegistryError
from service.usecases import scoring

IdempotencyKey = Annotated[str | None, Header(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$",
                                              description="Retries with the same key and body get the same decision")]
table_bundles = BundleCache()  # table models: verified, checked in a child process, loaded once per version
router = APIRouter(route_class=EdgeRoute, prefix="/v1/scores", tags=["scores"], responses=ERROR_RESPONSES)


async def _decide(recorder: scoring.Recorder, metrics: Metrics, caller: Caller, engine: Engine, policies: Policies,
                  items: list[schemas.ScoreRequest], idempotency_key: str | None = None,
                  batch: bool = False) -> list[schemas.ScoreResponse]:
    """Score and record (service/usecases/scoring.py): one application is scored on the event loop (no
    thread-pool hop), a batch in a thread; the request then waits, without a thread, for the group-commit
    writer to make its decisions durable."""
    issued = await scoring.decide(recorder, engine=engine, policy=policies.for_tenant(caller.tenant.policy),
                                  tenant_id=caller.tenant.id, actor=f"key:{caller.key_id}",
                                  payloads=[item.payload() for item in items],
                                  idempotency_key=idempotency_key, batch=batch)
    for i in issued:
        metrics.observe_decision(i.record, caller.tenant.name)
    return [score_response(i.record, recorder.settings, application_id=i.application_id, token=i.token,
                           expires_at=i.expires_at) for i in issued]


def _json(model: BaseModel) -> Response:
    """The response as validated once, serialised by pydantic's own encoder (FastAPI would validate the
    returned model again against ``response_model``, which only documents the shape here)."""
    return Response(model.model_dump_json(), media_type="application/json")


@router.post("", operation_id="create_score", response_model=schemas.ScoreResponse)
async def create_score(body: schemas.ScoreRequest, caller: ScorerDep, engine: EngineDep, policies: PoliciesDep,
                       recorder: RecorderDep, metrics: MetricsDep, idempotency_key: IdempotencyKey = None) -> Response:
    """Score one application: PD, score, grade, decision with offer and reasons; the decision is recorded."""
    return _json((await _decide(recorder, metrics, caller, engine, policies, [body], idempotency_key))[0])


@router.post("/batch", operation_id="create_scores_batch", response_model=schemas.BatchScoreResponse)
async def create_scores_batch(body: schemas.BatchScoreRequest, caller: ScorerDep, settings: SettingsDep,
                              engine: EngineDep, policies: PoliciesDep, recorder: RecorderDep,
                              metrics: MetricsDep) -> Response:
    """Score up to ``max_batch`` applications in one transaction: all are recorded, or none."""
    if len(body.items) > settings.max_batch:
        raise Invalid(f"body.items: at most {settings.max_batch} applications per batch, got {len(body.items)}",
                      errors=[{"loc": ["body", "items"], "msg": f"at most {settings.max_batch} items",
                               "type": "too_long"}])
    return _json(schemas.BatchScoreResponse(items=await _decide(recorder, metrics, caller, engine, policies,
                                                                body.items, batch=True)))


@router.post("/features", operation_id="score_features", response_model=schemas.FeatureScoreResponse)
def score_features(body: schemas.FeatureScoreRequest, caller: ScorerDep, settings: SettingsDep,
                   champion: ChampionDep,
                   model_version: str | None = None) -> schemas.FeatureScoreResponse:
    """Score a feature vector with a bring-your-own-table model named by ``model_version`` (the champion is
    always a catalog model: applications go to ``POST /v1/scores``)."""
    if model_version is None:
        current = champion.current_version()
        raise Invalid(f"query.model_version: required; the champion {current or '(none)'} is a catalog model, "
                      "send applications to POST /v1/scores",
                      errors=[{"loc": ["query", "model_version"], "msg": "a table model version is required",
                               "type": "missing"}])
    version = model_version
    try:
        bundle = table_bundles.get(settings.registry, version)
    except (RegistryError, BundleError) as exc:
        raise Invalid(f"query.model_version: {exc}",
                      errors=[{"loc": ["query", "model_version"], "msg": "unknown or invalid model version",
                               "type": "value"}]) from exc
    if bundle.kind != "table":
        raise Invalid(f"query.model_version: {version} is a catalog model; send applications to POST /v1/scores",
                      errors=[{"loc": ["query", "model_version"], "msg": "not a table model", "type": "value"}])
    spec = {f["name"]: f for f in bundle.metadata["features"]}
    unknown = sorted(set(body.features) - set(spec))
    if unknown:
        raise Invalid(f"body.features.{unknown[0]}: not a feature of model {version}",
                      errors=[{"loc": ["body", "features", u], "msg": "unknown feature", "type": "value"}
                              for u in unknown])
    x = np.full((1, len(spec)), np.nan)
    for j, (name, f) in enumerate(spec.items()):
        value = body.features.get(name)
        if value is None:
            continue
        if f["categories"]:
            # One encoder with training (service/scoring/tabular.py): a level too rare at training, or new, scores
            # as the model's '(other)' level; a model trained before that level existed refuses it instead.
            code = tabular.encode([value], f["categories"])[0]
            if np.isnan(code):
                raise Invalid(f"body.features.{name}: must be one of {', '.join(f['categories'][:20])}",
                              errors=[{"loc": ["body", "features", name], "msg": "unknown category", "type": "enum"}])
            x[0, j] = code
        elif isinstance(value, str):
            raise Invalid(f"body.features.{name}: must be a number",
                          errors=[{"loc": ["body", "features", name], "msg": "must be a number", "type": "float"}])
        else:
            x[0, j] = float(value)
    try:
        contrib = bundle.contributions(x)
    except LightGBMError as exc:  # a checked bundle should not get here; if it does, a 4xx naming it, not a 500
        raise Invalid(f"query.model_version: model {version} cannot score this vector ({exc})",
                      errors=[{"loc": ["query", "model_version"], "msg": "model cannot score", "type": "value"}]
                      ) from exc
    pd, score, grade = bundle.scorer.apply(contrib.sum(axis=1))
    return schemas.FeatureScoreResponse(
        model_version=version, application_ref=body.application_ref, pd=float(pd[0]), score=float(score[0]),
        grade=str(grade[0]), contributions={n: float(c) for n, c in zip(spec, contrib[0, :-1], strict=True)})
