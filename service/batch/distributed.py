"""Batch scoring and features beyond one process or machine, with Dask (dask.distributed).

The coordinator validates the folder once (errors keep their file, row and column), cuts it into pieces of
whole enterprises (``chunks.iter_chunks``), and maps the very same code over them on the cluster: features
with ``build_features``, decisions with ``Engine.score``. The model travels as its bundle files and is
verified on each worker; the policy travels as its YAML text. Results come back in the applications order.

    smecredit score --data DIR --out FILE --dask local            # a local cluster, one worker per core
    smecredit score --data DIR --out FILE --dask tcp://host:8786  # an existing scheduler

Post-loan monitoring maps ``score_book`` the same way (``score_book_distributed``): the book's loans travel with
their enterprises, and the pieces' results are put back in the loans' order as one ``BookScores``.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa

from service.batch.chunks import CHUNK_APPLICATIONS, iter_chunks, piece_features
from service.batch.scored import scored_table
from service.scoring.bundle import MANIFEST_FILE, load_bundle
from service.scoring.engine import Engine
from service.scoring.features import FeatureMatrix
from service.scoring.policy import Policy
from service.scoring.raw import MONTHLY_SOURCES, RawData
from service.scoring.signals import Signals
from service.usecases.portfolio import BookScores, LossParameters, score_book


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


def _run(data: RawData, address: str, fn, *args: object, chunk: int = CHUNK_APPLICATIONS) -> list:  # noqa: ANN001
    pieces = list(iter_chunks(data, chunk))
    with cluster(address) as client:
        # Scatter rather than embed: pieces go to workers once, shared arguments (the bundle) once per worker.
        data_futures = client.scatter([piece for _, piece in pieces])
        shared = [client.scatter(a, broadcast=True) for a in args]
        futures = [client.submit(fn, f, *shared, pure=False) for f in data_futures]
        results = client.gather(futures)
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
    for rows, (piece_values, piece_used) in _run(data, address, piece_features, chunk=chunk):
        if values.shape[1] == 0:
            values = np.empty((n, piece_values.shape[1]))
        values[rows] = piece_values
        used[rows] = piece_used
    return FeatureMatrix(application_id=data.applications["application_id"], values=values, sources_used=used)


# --- Post-loan monitoring: score_book over pieces of whole enterprises (issue 10, item 7) -----------------------

_NOT_PER_LOAN = ("data", "rows")  # BookScores fields the coordinator already has


def _book_piece(piece: RawData, files: dict[str, bytes], version: str, policy_yaml: str, as_of_month: int,
                loss: LossParameters) -> dict[str, object]:
    """On a worker: ``score_book`` on one piece, whose applications table is its slice of the book."""
    engine = _engine_from(files, version)
    policy = Policy.from_yaml(policy_yaml, source="policy")
    book = piece.applications
    part = RawData(profile=piece.profile, applications=book, monthly=piece.monthly, book=book, graph=piece.graph)
    scores = score_book(data=part, engine=engine, policy=policy, rows=np.arange(len(book["loan_id"])),
                        as_of_month=as_of_month, loss=loss)
    # Only the per-loan results travel back: the coordinator already holds the data.
    return {f.name: getattr(scores, f.name) for f in dataclasses.fields(scores) if f.name not in _NOT_PER_LOAN}


def _put_back(n: int, parts: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """One array in the loans' order from the pieces' arrays (each piece: its positions among the loans)."""
    first = parts[0][1]
    out = np.empty((n, *first.shape[1:]), dtype=first.dtype)
    for at, values in parts:
        out[at] = values
    return out


def _assemble(n: int, done: list[tuple[np.ndarray, dict]]) -> dict[str, object]:
    """The pieces' results as one: per-loan arrays (and the signals' arrays) in the loans' order."""
    out: dict[str, object] = {}
    for name, first in done[0][1].items():
        if isinstance(first, Signals):
            out[name] = Signals(
                fired=_put_back(n, [(at, r[name].fired) for at, r in done]),
                indicators={k: _put_back(n, [(at, r[name].indicators[k]) for at, r in done])
                            for k in first.indicators})
        elif isinstance(first, np.ndarray):
            out[name] = _put_back(n, [(at, r[name]) for at, r in done])
        else:
            raise TypeError(f"BookScores.{name} is neither a per-loan array nor Signals: cannot be put together")
    return out


def _warm_engine(files: dict[str, bytes], version: str, *_: object) -> None:
    _engine_from(files, version)


@contextmanager
def cluster(address: str) -> Iterator:
    """A client of the scheduler at ``address`` (or of a new local cluster: 'local'), closed on exit with the
    local cluster it may have started."""
    client = client_for(address)
    try:
        yield client
    finally:
        client.close()
        if address == "local" and client.cluster is not None:
            client.cluster.close()


def map_pieces(client, pieces: Iterable[tuple[np.ndarray, object]], fn, *args: object,  # noqa: ANN001
               warm=None, per_worker: int = 2) -> list[tuple[np.ndarray, object]]:  # noqa: ANN001
    """``fn(piece, *args)`` for each piece on the cluster, with at most ``per_worker`` pieces per worker sent
    and not yet done: the pieces are cut as the work goes, so neither the coordinator nor the workers ever
    hold every piece at once (at a million loans, that copy of the data would not fit beside the data).
    ``warm(*args)``, when given, runs first on every worker (loading the model) while the coordinator cuts.
    Returns each piece's rows with its result, in the order the pieces finished."""
    from dask.distributed import as_completed

    shared = [client.scatter(a, broadcast=True) for a in args]
    workers = list(client.scheduler_info()["workers"])
    limit = per_worker * max(len(workers), 1)
    warming = [client.submit(warm, *shared, workers=[w], allow_other_workers=False, pure=False)
               for w in workers] if warm is not None else []
    running = as_completed()
    positions: dict[str, np.ndarray] = {}
    done = []

    def collect(future) -> None:  # noqa: ANN001
        done.append((positions.pop(future.key), future.result()))
        future.release()

    for rows, piece in pieces:
        if running.count() >= limit:
            collect(next(running))
        [sent] = client.scatter([piece], hash=False)  # hash=False: no need to digest a piece sent once
        future = client.submit(fn, sent, *shared, pure=False)
        positions[future.key] = rows
        running.add(future)
        del sent, piece
    for future in running:
        collect(future)
    client.gather(warming)  # surfaces a worker that could not load the model
    return done


def _map_streaming(pieces: Iterator[tuple[np.ndarray, RawData]], address: str, fn, *args: object,  # noqa: ANN001
                   warm=None, per_worker: int = 2) -> list[tuple[np.ndarray, object]]:  # noqa: ANN001
    """``map_pieces`` on a client of ``address``, opened and closed around it."""
    with cluster(address) as client:
        return map_pieces(client, pieces, fn, *args, warm=warm, per_worker=per_worker)


def score_book_distributed(*, data: RawData, bundle_dir: Path, policy: Policy, rows: np.ndarray, as_of_month: int,
                           loss: LossParameters, address: str, chunk: int = CHUNK_APPLICATIONS) -> BookScores:
    """``score_book`` for the loans at ``rows`` of ``data.book``, mapped over pieces of whole enterprises on a
    Dask cluster; the result equals the single-process ``score_book`` exactly, loan for loan.

    Each piece carries its loans (``chunk`` loans at most, save to keep an enterprise whole) with their
    enterprises' profile and monthly records, so every loan sees the same windows as in one process.
    """
    if data.book is None:
        raise ValueError("the data has no loan book (loans.parquet); monitoring needs one")
    if not (bundle_dir / MANIFEST_FILE).exists():
        raise ValueError(f"{bundle_dir} is not a model bundle")
    rows = np.asarray(rows, dtype=np.int64)
    n_book = len(data.book["loan_id"])
    if rows.ndim != 1 or (rows.size and (rows.min() < 0 or rows.max() >= n_book)):
        raise ValueError(f"rows must be a 1-D array of rows of the book (0 to {n_book - 1})")
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    files, version = _bundle_files(bundle_dir), bundle_dir.name
    loans = {k: v[rows] for k, v in data.book.items()}
    if not rows.size:  # nothing to map: the same empty result, computed here
        done = [(rows, _book_piece(RawData(profile=data.profile, applications=loans, monthly=data.monthly,
                                           graph=data.graph),
                                   files, version, policy.source_text, as_of_month, loss))]
    else:
        # The selected loans stand in for the applications, so iter_chunks cuts them with their enterprises.
        pieces = iter_chunks(RawData(profile=data.profile, applications=loans, monthly=data.monthly,
                                     graph=data.graph), chunk)
        done = _map_streaming(pieces, address, _book_piece, files, version, policy.source_text, as_of_month, loss,
                              warm=_warm_engine)
    return BookScores(data=data, rows=rows, **_assemble(len(rows), done))

