"""Offline scoring of a whole data folder, and example API requests built from one: the batch twins of the API."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from service.scoring.bundle import load_bundle
from service.scoring.catalog import WINDOW_MONTHS
from service.scoring.engine import Engine
from service.scoring.policy import Policy
from service.scoring.raw import CONTRACT, MONTHLY_SOURCES, RawData, month_index, month_start
from training.featurize import build_all


def score_folder(folder: Path, bundle_dir: Path, policy: Policy, *, dask_address: str | None = None) -> pa.Table:
    """PD, score, grade, decision, offer and reasons for every application, via Engine.score (as the API).
    With ``dask_address`` the pieces are scored on a Dask cluster (training/distributed.py)."""
    from service.scoring.raw import load_folder

    data = load_folder(folder)
    if dask_address:
        from training.distributed import score_distributed

        return score_distributed(data, bundle_dir, policy, dask_address)
    engine = Engine(load_bundle(bundle_dir))
    return scored_table(data, engine.version, engine.score(data, policy, fm=build_all(data)))


def scored_table(data: RawData, model_version: str, scored: list) -> pa.Table:
    """One row per application of ``data``, in its order."""
    return pa.table({
        "application_id": pa.array(data.applications["application_id"], type=pa.string()),
        "model_version": [model_version] * len(scored),
        "policy_version": [s.outcome.policy_version for s in scored],
        "pd": [s.pd for s in scored], "score": [s.score for s in scored], "grade": [s.grade for s in scored],
        "decision": [s.outcome.decision for s in scored],
        "limit": [s.outcome.offer.limit if s.outcome.offer else None for s in scored],
        "term_months": [s.outcome.offer.term_months if s.outcome.offer else None for s in scored],
        "apr": [s.outcome.offer.apr if s.outcome.offer else None for s in scored],
        "reasons": [json.dumps([r.code for r in s.reasons]) for s in scored],
        "reasons_en": [" | ".join(r.text_en for r in s.reasons) for s in scored],
        "sources_used": [",".join(s.sources_used) for s in scored],
    })


def _py(value: object) -> object:
    if isinstance(value, np.datetime64):
        return str(value.astype("datetime64[D]"))
    if isinstance(value, np.generic):
        return value.item()
    return value


def request_for(data: RawData, application_id: str | None = None) -> dict:
    """A POST /v1/scores body for one application: its profile and the 24 months before it, consent to all."""
    apps = data.applications
    if application_id is None:
        has_all = np.ones(len(apps["application_id"]), dtype=bool)
        for source in MONTHLY_SOURCES:
            rows = np.zeros(data.n_enterprises, dtype=bool)
            if source in data.monthly:
                rows[data.monthly[source]["enterprise_row"]] = True
            has_all &= rows[apps["enterprise_row"]]
        candidates = np.flatnonzero(has_all)
        i = int(candidates[0]) if candidates.size else 0
    else:
        found = np.flatnonzero(apps["application_id"] == application_id)
        if not found.size:
            raise ValueError(f"application {application_id!r} is not in the data folder")
        i = int(found[0])
    ent = int(apps["enterprise_row"][i])
    asof = int(month_index(apps["application_date"][i:i + 1])[0])
    profile = {c.name: _py(data.profile[c.name][ent]) for c in CONTRACT["profile"].columns
               if c.name in data.profile and data.profile[c.name][ent] is not None}
    profile = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in profile.items()}
    profile = {k: int(v) if k in ("employees", "owner_age") and v is not None else v for k, v in profile.items()}
    application = {"application_id": str(apps["application_id"][i]),
                   "application_date": _py(apps["application_date"][i]),
                   "requested_amount": float(apps["requested_amount"][i]),
                   "term_months": int(apps["term_months"][i]), "purpose": str(apps["purpose"][i])}
    monthly: dict[str, list[dict]] = {}
    for source in MONTHLY_SOURCES:
        t = data.monthly.get(source)
        rows = []
        if t is not None:
            for r in np.flatnonzero((t["enterprise_row"] == ent) & (t["month"] < asof)
                                    & (t["month"] >= asof - WINDOW_MONTHS)):
                row: dict = {"month": str(month_start(t["month"][r]))}
                for c in CONTRACT[source].columns:
                    if c.name in ("enterprise_id", "month") or c.name not in t:
                        continue
                    v = _py(t[c.name][r])
                    if isinstance(v, float) and np.isnan(v):
                        v = None
                    if v is not None and c.kind == "int":
                        v = int(v)
                    if v is not None and c.kind == "bool":
                        v = bool(v)
                    row[c.name] = v
                rows.append({k: v for k, v in row.items() if v is not None or CONTRACT[source].column(k).required})
        monthly[source] = rows
    consent = {s: bool(monthly[s]) for s in MONTHLY_SOURCES}
    return {"application": application, "profile": profile, "consent": consent, "data": monthly}
