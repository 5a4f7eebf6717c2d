"""Drift of this tenant's applications against the champion's training references, flagged subjects first."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from service.api.pagination import Cursor, Limit, decode_cursor, encode_cursor
from service.api.routing import EdgeRoute
from service.deps import (
    Caller,
    EngineDep,
    MetricsDep,
    ReadSessionDep,
    require,
)
from service.errors import ERROR_RESPONSES, Invalid
from service.monitoring import drift
from service.scoring.raw import business_today
from service.usecases import drift as usecase

router = APIRouter(route_class=EdgeRoute, prefix="/v1/monitoring", tags=["monitoring"], responses=ERROR_RESPONSES)
AnalystDep = Annotated[Caller, Depends(require("admin", "review"))]


class BinShiftOut(BaseModel):
    bin: str = Field(description="The bin: a value range, a category, 'missing' or 'not consented'")
    reference_share: float
    window_share: float
    psi_part: float = Field(description="This bin's part of the PSI")


class MonthOut(BaseModel):
    month: str = Field(description="Application month, YYYY-MM")
    applications: int
    season: str = Field(description="Reference compared with: calendar month (M01-M12), quarter (Q1-Q4) or all")
    psi: float
    p_value: float | None = Field(description="G-test p-value of the month alone; null below min_window")
    crossed: bool = Field(description="PSI at or above the watch threshold, and significant")


class SubjectDriftOut(BaseModel):
    subject: str = Field(description="score, pd, a feature name or a reason group")
    kind: str = Field(description="score | pd | feature | group")
    segment: str = Field(description="all, region=<region> or industry=<section>")
    status: str = Field(description="act | watch | stable | untested (too few applications)")
    psi: float = Field(description="PSI of the window against the same seasons of the reference")
    p_value: float = Field(description="Season-stratified G-test, Benjamini-Hochberg adjusted over the report")
    applications: int
    reference_rows: int | None
    season: str = Field(description="Seasonal reference of this segment: month, quarter or none (pooled)")
    since: str | None = Field(description="First month whose own PSI crossed the watch threshold (flagged only)")
    what_changed: list[BinShiftOut] = Field(description="The bins whose shares moved most")
    by_month: list[MonthOut]

    @classmethod
    def of(cls, i: drift.SubjectDrift) -> SubjectDriftOut:
        return cls(subject=i.subject, kind=i.kind, segment=i.segment, status=i.status, psi=i.psi,
                   p_value=i.p_value, applications=i.applications, reference_rows=i.reference_rows,
                   season=i.season, since=i.since[:7] if i.since else None,
                   what_changed=[BinShiftOut(**b.__dict__) for b in i.what_changed],
                   by_month=[MonthOut(**{**m.__dict__, "month": m.month[:7]}) for m in i.by_month])


class SegmentOut(BaseModel):
    segment: str
    applications: int
    reference_rows: int | None = Field(description="Training rows of the segment; null: not compared")
    season: str
    note: str | None


class DriftPage(BaseModel):
    since: dt.date
    until: dt.date = Field(description="Inclusive")
    model_version: str
    applications: int = Field(description="Applications dated in the window")
    rescored: int = Field(description="Decisions of other model versions, rescored from their feature snapshots")
    message: str
    thresholds: dict[str, float] = Field(description="psi_watch, psi_act, alpha")
    counts: dict[str, int] = Field(description="Subjects per status over every page")
    segments: list[SegmentOut]
    notes: list[str]
    items: list[SubjectDriftOut] = Field(description="Flagged first (act, then watch), then by PSI")
    next_cursor: str | None


def _invalid(field: str, rule: str) -> Invalid:
    return Invalid(f"query.{field}: {rule}", errors=[{"loc": ["query", field], "msg": rule, "type": "drift"}])


@router.get("/drift", operation_id="get_drift", response_model=DriftPage)
def get_drift(
    metrics: MetricsDep, caller: AnalystDep, session: ReadSessionDep, engine: EngineDep,
    since: Annotated[dt.date, Query(description="First application date of the window, YYYY-MM-DD")],
    until: Annotated[dt.date | None, Query(description="Last application date, inclusive; default today; at most "
                                                       f"{usecase.MAX_WINDOW_DAYS} days after since")] = None,
    segment: Annotated[str | None, Query(max_length=40, description=usecase.SEGMENT_HELP)] = None,
    limit: Limit = 100, cursor: Cursor = None,
) -> DriftPage:
    """PSI and a distribution test for the score, the PD, every feature and every reason group of this tenant's
    applications in a window, per segment, each month against the same season of the champion's training
    data. Sets the smecredit_drift_* gauges."""
    after = decode_cursor(cursor, int) or 0
    try:
        r = usecase.drift_of_decisions(session, bundle=engine.bundle, tenant=caller.tenant, since=since,
                                       until=until or business_today(), segment=segment)
    except usecase.DriftInputError as exc:
        raise _invalid(exc.field, exc.message) from None
    report = r.report
    items = list(report.items) if report else []
    if report is not None:
        metrics.observe_drift(caller.tenant.name, report)
    page = items[after: after + limit]
    config = report.config if report else drift.DriftConfig()
    return DriftPage(
        since=r.since, until=r.until, model_version=r.model_version, applications=r.applications,
        rescored=r.rescored, message=r.message,
        thresholds={"psi_watch": config.psi_watch, "psi_act": config.psi_act, "alpha": config.alpha},
        counts=report.counts() if report else dict.fromkeys(drift.STATUSES, 0),
        segments=[SegmentOut(**s.__dict__) for s in report.segments] if report else [],
        notes=list(report.notes) if report else [],
        items=[SubjectDriftOut.of(i) for i in page],
        next_cursor=encode_cursor(after + limit) if after + limit < len(items) else None)
