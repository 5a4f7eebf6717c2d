"""Stress tests of the tenant's loan book: POST /v1/monitoring/stress (docs/stress.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.api.routing import EdgeRoute
from service.deps import (
    Caller,
    EngineDep,
    KeyringDep,
    PoliciesDep,
    ReadSessionDep,
    require,
)
from service.errors import ERROR_RESPONSES, Invalid
from service.monitoring.stress import Scenario, ScenarioError, StressReport, load_scenario, shipped_scenarios
from service.usecases.stress import stress_stored

router = APIRouter(route_class=EdgeRoute, prefix="/v1/monitoring", tags=["monitoring"], responses=ERROR_RESPONSES)
AnalystDep = Annotated[Caller, Depends(require("admin", "review"))]


class StressIn(BaseModel):
    """A shipped scenario by name, or a scenario of your own in the documented format (exactly one)."""

    model_config = ConfigDict(extra="forbid")
    scenario: Annotated[str | None, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$",
                                          description="A shipped scenario: mild, severe or extreme")] = None
    spec: Scenario | None = Field(default=None, description="A scenario of your own (docs/stress.md)")

    @model_validator(mode="after")
    def _exactly_one(self) -> StressIn:
        if (self.scenario is None) == (self.spec is None):
            raise ValueError("give exactly one of scenario (a shipped name) or spec (a scenario of your own)")
        return self


class StressOut(StressReport):
    """The book, baseline vs stressed: totals, segments, drivers, migration, PD distribution, concentration."""


@router.post("/stress", operation_id="stress_book", response_model=StressOut)
def stress_book(body: StressIn, caller: AnalystDep, session: ReadSessionDep, engine: EngineDep, policies: PoliciesDep,
                keyring: KeyringDep) -> StressOut:
    """Apply a macro scenario to the operating data of the tenant's live borrowers, rescore them with the
    champion, and compare with the baseline. Loans whose raw data is gone are counted in ``missing_raw``."""
    if body.spec is not None:
        scenario = body.spec
    else:
        try:
            scenario = load_scenario(str(body.scenario))
        except ScenarioError as exc:
            raise Invalid(f"body.scenario: {exc}", errors=[{"loc": ["body", "scenario"], "type": "value_error",
                                                            "msg": f"one of {shipped_scenarios()}"}]) from None
    report = stress_stored(session, tenant_id=caller.tenant.id, keyring=keyring, engine=engine,
                           policy=policies.for_tenant(caller.tenant.policy), scenario=scenario)
    return StressOut.model_validate(report.model_dump())
