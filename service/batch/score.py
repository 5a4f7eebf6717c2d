"""Offline scoring of a whole data folder: the batch twin of POST /v1/scores, through the same Engine.score."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from service.batch.chunks import build_all
from service.batch.distributed import score_distributed
from service.batch.scored import scored_table
from service.scoring.bundle import load_bundle
from service.scoring.engine import Engine
from service.scoring.policy import Policy
from service.scoring.raw import load_folder


def score_folder(folder: Path, bundle_dir: Path, policy: Policy, *, dask_address: str | None = None) -> pa.Table:
    """PD, score, grade, decision, offer and reasons for every application, via Engine.score (as the API).
    With ``dask_address`` the pieces are scored on a Dask cluster (service/batch/distributed.py)."""
    data = load_folder(folder)
    if dask_address:
        return score_distributed(data, bundle_dir, policy, dask_address)
    engine = Engine(load_bundle(bundle_dir))
    return scored_table(data, engine.version, engine.score(data, policy, fm=build_all(data)))
