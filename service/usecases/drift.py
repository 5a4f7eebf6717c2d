"""Drift monitoring, once for the CLI and the API: the applications of a window, from the decision records (a
tenant, or every tenant) or from a data folder scored offline, compared with the champion's training
references by service/monitoring/drift.py."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session

from service.batch.chunks import build_all
from service.db import monitoring as monitoring_db
from service.db.tables import Tenant
from service.monitoring import drift
from service.scoring.bundle import Bundle
from service.scoring.catalog import BY_NAME
from service.scoring.explain import group_points_matrix
from service.scoring.raw import INDUSTRIES, REGIONS, load_folder

MAX_WINDOW_DAYS = 731  # two years of applications per report
SEGMENT_HELP = "all, region, industry, region=<region> or industry=<industry section>"


class DriftInputError(ValueError):
    """A request the use case cannot serve; ``field`` names the input (since, until, segment, tenant, ...)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class DriftResult:
    source: str  # "decisions" or "folder"
    scope: str  # the tenant's name, "every tenant", or the folder
    model_version: str
    since: dt.date
    until: dt.date
    segment: str | None
    applications: int
    rescored: int  # decisions of other model versions, rescored from their feature snapshots by this one
    report: drift.DriftReport | None  # None: no application in the window
    message: str

    def to_json(self) -> dict:
        out = {k: getattr(self, k) for k in ("source", "scope", "model_version", "segment", "applications",
                                             "rescored", "message")}
        report = None
        if self.report is not None:
            report = dataclasses.asdict(self.report) | {"counts": self.report.counts()}
        return out | {"since": self.since.isoformat(), "until": self.until.isoformat(), "report": report}


def check_window(*, since: dt.date, until: dt.date, segment: str | None = None) -> None:
    """The rules every caller shares; DriftInputError names the field."""
    if until < since:
        raise DriftInputError("until", f"must not be before since ({until.isoformat()} < {since.isoformat()})")
    if (until - since).days > MAX_WINDOW_DAYS:
        raise DriftInputError("until", f"the window is {(until - since).days} days; at most {MAX_WINDOW_DAYS}")
    if segment is None or segment in (drift.ALL, *drift.SEGMENT_DIMENSIONS):
        return
    dim, _, value = segment.partition("=")
    known = {"region": REGIONS, "industry": tuple(INDUSTRIES)}
    if dim not in known or value not in known[dim]:
        choices = f"; {dim} is one of {', '.join(known[dim])}" if dim in known else ""
        raise DriftInputError("segment", f"{segment!r} is not a segment: use {SEGMENT_HELP}{choices}")


def model_subjects(bundle: Bundle, X: np.ndarray) -> dict[str, np.ndarray]:
    """PD, score and reason-group points of feature rows, exactly as Engine.decide computes them (exact TreeSHAP
    contributions, their sum the margin), vectorised: drift needs no policy or recourse."""
    contrib = bundle.contributions(X) if len(X) else np.zeros((0, X.shape[1] + 1))
    margin = contrib.sum(axis=1)
    pd, score, _ = bundle.scorer.apply(margin)
    groups = group_points_matrix(bundle.feature_names, X, contrib[:, :-1] * bundle.scorer.points_per_margin)
    out = {drift.subject_key("pd", "pd"): pd, drift.subject_key("score", "score"): score}
    return out | {drift.subject_key("group", g): v for g, v in groups.items()}


def _feature_values(bundle: Bundle, X: np.ndarray) -> dict[str, np.ndarray]:
    return {drift.subject_key("feature", n): X[:, j] for j, n in enumerate(bundle.feature_names)}


def _require_catalog(bundle: Bundle) -> None:
    if bundle.kind != "catalog":
        raise DriftInputError("model", f"{bundle.version} is a '{bundle.kind}' model; drift of applications needs "
                                       "a catalog model")


def _result(bundle: Bundle, window: drift.Window | None, *, source: str, scope: str, since: dt.date,
            until: dt.date, segment: str | None, config: drift.DriftConfig | None, rescored: int = 0,
            season_aware: bool = True) -> DriftResult:
    if window is None or len(window) == 0:
        return DriftResult(source, scope, bundle.version, since, until, segment, 0, 0, None,
                           f"no application dated {since.isoformat()} to {until.isoformat()} in {scope}: "
                           "nothing to compare")
    reference = drift.ReferenceSet.from_json(bundle.metadata["reference"])
    report = drift.compare(reference, window, config or drift.load_drift_config(), segment=segment,
                           season_aware=season_aware)
    c = report.counts()
    message = (f"{len(window):,} applications of {scope}, {since.isoformat()} to {until.isoformat()}, against "
               f"{bundle.version}: {c['act']} to act on, {c['watch']} to watch, {c['stable']} stable, "
               f"{c['untested']} too small to test")
    return DriftResult(source, scope, bundle.version, since, until, segment, len(window), rescored, report, message)


def drift_of_folder(*, folder: Path, bundle: Bundle, since: dt.date, until: dt.date, segment: str | None = None,
                    config: drift.DriftConfig | None = None, season_aware: bool = True) -> DriftResult:
    """Applications of a data folder dated in the window, featurised by the one builder and scored by the
    bundle, against its references."""
    check_window(since=since, until=until, segment=segment)
    _require_catalog(bundle)
    data = load_folder(folder)
    dates = data.applications["application_date"]
    rows = np.flatnonzero((dates >= np.datetime64(since)) & (dates <= np.datetime64(until)))
    window = None
    if rows.size:
        data = data.select(rows)
        X = build_all(data).values
        ent = data.applications["enterprise_row"]
        window = drift.Window(
            months=data.applications["application_date"].astype("datetime64[M]"),
            segments={d: data.profile[d][ent].astype(str) for d in drift.SEGMENT_DIMENSIONS},
            values=_feature_values(bundle, X) | model_subjects(bundle, X))
    return _result(bundle, window, source="folder", scope=str(folder), since=since, until=until, segment=segment,
                   config=config, season_aware=season_aware)


def drift_of_decisions(session: Session, *, bundle: Bundle, tenant: Tenant | None, since: dt.date,
                       until: dt.date, segment: str | None = None,
                       config: drift.DriftConfig | None = None) -> DriftResult:
    """Decisions of ``tenant`` (None: every tenant) whose application date lies in the window. Decisions of the
    bundle's own version keep their recorded PD, score and group points; others are rescored from their
    feature snapshots (what their model saw), so every row is compared with the same model's references."""
    check_window(since=since, until=until, segment=segment)
    _require_catalog(bundle)
    scope = f"tenant {tenant.name}" if tenant is not None else "every tenant"
    rows = list(monitoring_db.decisions_in_window(session, tenant_id=None if tenant is None else tenant.id,
                                                  since=since, until=until))
    if not rows:
        return _result(bundle, None, source="decisions", scope=scope, since=since, until=until, segment=segment,
                       config=config)
    names = bundle.feature_names
    X = np.array([[np.nan if (v := r.features.get(n)) is None else v for n in names] for r in rows], dtype=float)
    outputs = model_subjects(bundle, X)  # rescored for every row; recorded values replace them below
    own = np.array([r.model_version == bundle.version for r in rows])
    if own.any():
        outputs[drift.subject_key("pd", "pd")][own] = [r.pd for r in rows if r.model_version == bundle.version]
        outputs[drift.subject_key("score", "score")][own] = [r.score for r in rows
                                                            if r.model_version == bundle.version]
        for key in [k for k in outputs if k.startswith("group:")]:
            g = key.split(":", 1)[1]
            outputs[key][own] = [r.groups.get(g, 0.0) for r in rows if r.model_version == bundle.version]
    refused = monitoring_db.withheld_sources(session, decision_ids=[r.id for r in rows])
    withheld = {}
    for j, n in enumerate(names):
        sources = set(BY_NAME[n].sources) if n in BY_NAME else set()
        withheld[drift.subject_key("feature", n)] = np.array(
            [bool(sources & refused.get(r.id, set())) for r in rows]) & np.isnan(X[:, j])
    window = drift.Window(
        months=np.array([r.application_date for r in rows], dtype="datetime64[M]"),
        segments={"region": np.array([r.region for r in rows]), "industry": np.array([r.industry for r in rows])},
        values=_feature_values(bundle, X) | outputs, withheld=withheld)
    return _result(bundle, window, source="decisions", scope=scope, since=since, until=until, segment=segment,
                   config=config, rescored=int((~own).sum()))
