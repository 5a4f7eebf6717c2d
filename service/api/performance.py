"""Performance before labels mature: the expected default rate and AUC of a tenant's recent decisions, from
their calibrated PDs, with the band the realised values should fall in, and the realised ones once known."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from service.api.routing import EdgeRoute
from service.deps import Caller, ReadSessionDep, require
from service.errors import ERROR_RESPONSES, Invalid
from service.monitoring.backtest import Estimate
from service.usecases import backtest as usecase

router = APIRouter(route_class=EdgeRoute, prefix="/v1/monitoring", tags=["monitoring"], responses=ERROR_RESPONSES)
AnalystDep = Annotated[Caller, Depends(require("admin", "review"))]


class EstimateOut(BaseModel):
    n: int = Field(description="Decisions in the group")
    expected_default_rate: float = Field(description="Mean PD: the default rate if the PDs are calibrated")
    default_rate_band: tuple[float, float] = Field(
        description="Central 95% of the default rates a calibrated model would realise (labels drawn from the PDs)")
    expected_auc: float | None = Field(description="ROC AUC implied by the PDs; null with fewer than two decisions")
    auc_band: tuple[float, float] | None = Field(description="Central 95% of the AUCs a calibrated model would "
                                                             "realise")
    n_mature: int = Field(description="Decisions whose 12-month outcome is known")
    defaults: int | None
    realised_default_rate: float | None = Field(description="Null until every decision of the group has matured")
    realised_auc: float | None
    flags: list[str] = Field(description="default_rate_above_band, default_rate_below_band, auc_below_band, "
                                         "auc_above_band")

    @classmethod
    def of(cls, e: Estimate) -> EstimateOut:
        return cls(**{**e.__dict__, "flags": list(e.flags)})


class VintageOut(BaseModel):
    vintage: str = Field(description="Application month, YYYY-MM")
    estimate: EstimateOut = Field(description="Every decision of the vintage: expected values")
    matured: EstimateOut | None = Field(description="The decisions that became loans whose 12-month window has "
                                                    "closed: expected and realised on the same decisions")


class GradeOut(BaseModel):
    grade: str
    n: int
    expected_default_rate: float = Field(description="The grade's mean PD")


class PerformanceOut(BaseModel):
    since: dt.date
    until: dt.date = Field(description="Inclusive")
    decisions: int
    model_versions: list[str]
    overall: EstimateOut | None = Field(description="Null when the window holds no decision")
    matured: EstimateOut | None = Field(description="The decisions with a known 12-month loan outcome: expected "
                                                    "and realised; null when there are none")
    vintages: list[VintageOut] = Field(description="One per application month in the window, oldest first")
    grades: list[GradeOut] = Field(description="Safest grade first")
    realised_source: str


@router.get("/performance", operation_id="get_expected_performance", response_model=PerformanceOut)
def get_expected_performance(
    caller: AnalystDep, session: ReadSessionDep,
    since: Annotated[dt.date, Query(description="First day (UTC) of decisions to include, YYYY-MM-DD")],
    until: Annotated[dt.date | None, Query(description="Last day (UTC), inclusive, YYYY-MM-DD; default today; "
                                                       f"at most {usecase.MAX_WINDOW_DAYS} days after since")] = None,
) -> PerformanceOut:
    """Expected default rate and AUC of this tenant's decisions in a window (confidence-based performance
    estimation from the calibrated PDs), overall, by application month and by grade."""
    try:
        r = usecase.expected_performance(session, tenant_id=caller.tenant.id, since=since, until=until)
    except usecase.WindowError as exc:
        raise Invalid(f"query.{exc.field}: {exc.rule}",
                      errors=[{"loc": ["query", exc.field], "msg": exc.rule, "type": "window"}]) from None
    return PerformanceOut(
        since=r.since, until=r.until, decisions=r.decisions, model_versions=r.model_versions,
        overall=EstimateOut.of(r.overall) if r.overall else None,
        matured=EstimateOut.of(r.matured) if r.matured else None,
        vintages=[VintageOut(vintage=v.vintage, estimate=EstimateOut.of(v.estimate),
                             matured=EstimateOut.of(v.matured) if v.matured else None) for v in r.vintages],
        grades=[GradeOut(**g.__dict__) for g in r.grades], realised_source=r.realised_source)
