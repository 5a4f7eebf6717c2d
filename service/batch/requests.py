"""Example API requests built from a data folder: what POST /v1/scores would receive for one application."""

from __future__ import annotations

import numpy as np

from service.scoring.catalog import WINDOW_MONTHS
from service.scoring.graph import EVENT_MONTHS
from service.scoring.raw import CONTRACT, MONTHLY_SOURCES, RawData, month_index, month_start


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
    body = {"application": application, "profile": profile, "consent": consent, "data": monthly}
    if data.links is not None:
        consent["links"] = True
        body["related"] = related_for(data, ent, str(application["application_date"]))
    return body


def related_for(data: RawData, ent: int, before: str) -> dict:
    """The enterprise's rows of the link files recorded before the date ``before``: a request's ``related`` (trade
    of the 12 months the graph features read)."""
    links = data.links or {}
    day, month = np.datetime64(before, "D"), month_index(np.array([before], dtype="datetime64[D]"))[0]
    out: dict[str, list[dict]] = {"links": [], "guarantees": [], "counterparties": []}
    if (t := links.get("links")) is not None:
        out["links"] = [{"kind": str(t["kind"][r]), "ref": str(t["ref"][r]), "since": _py(t["since"][r])}
                        for r in np.flatnonzero((t["enterprise_row"] == ent) & (t["since"] < day))]
    if (t := links.get("guarantees")) is not None:
        mine = ((t["guarantor_row"] == ent) | (t["borrower_row"] == ent)) & (t["start"] < day)
        out["guarantees"] = [{"guarantor_id": str(t["guarantor_id"][r]), "borrower_id": str(t["borrower_id"][r]),
                              "amount": float(t["amount"][r]), "start": _py(t["start"][r]),
                              "end": None if np.isnat(t["end"][r]) else _py(t["end"][r])}
                             for r in np.flatnonzero(mine)]
    if (t := links.get("counterparties")) is not None:
        out["counterparties"] = [{"month": str(month_start(t["month"][r])),
                                  "counterparty_id": str(t["counterparty_id"][r]), "role": str(t["role"][r]),
                                  "share": float(t["share"][r])}
                                 for r in np.flatnonzero((t["enterprise_row"] == ent) & (t["month"] < month)
                                                         & (t["month"] >= month - EVENT_MONTHS))]
    return out
