"""Batch scoring and features beyond one process or machine, with Dask (dask.distributed).

The coordinator validates the folder once (errors keep their file, row and column), cuts it into pieces of
whole enterprises (``chunks.iter_chunks``), and maps the very same code over them on the cluster: features
with ``build_features``, decisions with ``Engine.score``. The model travels as its bundle files and is
verified on each worker; the policy travels as its YAML text. Results come back in the applications order.

    smecredit score --data DIR --out FILE --dask local            # a local cluster, one worker per core
    smecredit score --data DIR --out FILE --dask tcp://host:8786  # an existing scheduler
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa

from service.batch.chunks import CHUNK_APPLICATIONS, iter_chunks
from service.batch.scored import scored_table
from service.scoring.bundle import MANIFEST_FILE, load_bundle
from service.scoring.engine import Engine
from service.scoring.features import FeatureMatrix, build_features
from service.scoring.policy import Policy
from service.scoring.raw import MONTHLY_SOURCES, RawData


def client_for(address: str):  # noqa: ANN201 - dask.distributed.Client, imported lazily
    from dask.distributed import Client, LocalCluster

    if address == "local":
        cluster = LocalCluster(n_workers=os.cpu_count() or 1, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        return Client(cluster)
    return Client(address)


def _bundle_files(bundle_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in bundle_dir.iterdir() if p.is_file()}


_ENGINES: dict[str, Engine] = {}  # per worker process: a version is content-addressed, so load it once


def _engine_from(files: dict[str, bytes], version: str) -> Engine:
    """On a worker: write the bundle's files and load it (which verifies every digest), once per version."""
    if version in _ENGINES:
        return _ENGINES[version]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / version
        folder.mkdir()
        for name, data in files.items():
            (folder / name).write_bytes(data)
        _ENGINES[version] = Engine(load_bundle(folder))
    return _ENGINES[version]


def _score_piece(piece: RawData, files: dict[str, bytes], version: str, policy_yaml: str) -> pa.Table:
    engine = _engine_from(files, version)
    policy = Policy.from_yaml(policy_yaml, source="policy")
    return scored_table(piece, engine.version, engine.score(piece, policy))


def _features_piece(piece: RawData) -> tuple[np.ndarray, np.ndarray]:
    fm = build_features(piece)
    return fm.values, fm.sources_used


def _run(data: RawData, address: str, fn, *args: object, chunk: int = CHUNK_APPLICATIONS) -> list:  # noqa: ANN001
    pieces = list(iter_chunks(data, chunk))
    client = client_for(address)
    try:
        # Scatter rather than embed: pieces go to workers once, shared arguments (the bundle) once per worker.
        data_futures = client.scatter([piece for _, piece in pieces])
        shared = [client.scatter(a, broadcast=True) for a in args]
        futures = [client.submit(fn, f, *shared, pure=False) for f in data_futures]
        results = client.gather(futures)
    finally:
        client.close()
        if address == "local" and client.cluster is not None:
            client.cluster.close()
    return [(rows, result) for (rows, _), result in zip(pieces, results, strict=True)]


def score_distributed(data: RawData, bundle_dir: Path, policy: Policy, address: str,
                      chunk: int = CHUNK_APPLICATIONS) -> pa.Table:
    if not (bundle_dir / MANIFEST_FILE).exists():
        raise ValueError(f"{bundle_dir} is not a model bundle")
    done = _run(data, address, _score_piece, _bundle_files(bundle_dir), bundle_dir.name, policy.source_text,
                chunk=chunk)
    order = np.argsort(np.concatenate([rows for rows, _ in done]), kind="stable")
    return pa.concat_tables([table for _, table in done]).take(pa.array(order))


def features_distributed(data: RawData, address: str, chunk: int = CHUNK_APPLICATIONS) -> FeatureMatrix:
    n = len(data.applications["application_id"])
    values = np.empty((n, 0))
    used = np.zeros((n, len(MONTHLY_SOURCES)), dtype=bool)
    for rows, (piece_values, piece_used) in _run(data, address, _features_piece, chunk=chunk):
        if values.shape[1] == 0:
            values = np.empty((n, piece_values.shape[1]))
        values[rows] = piece_values
        used[rows] = piece_used
    return FeatureMatrix(application_id=data.applications["application_id"], values=values, sources_used=used)
