"""One row per scored application, as offline scoring writes it (one process or each Dask piece)."""

from __future__ import annotations

import json

import pyarrow as pa

from service.scoring.raw import RawData


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
