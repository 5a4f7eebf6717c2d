"""Pieces of whole enterprises: the unit in which a data folder is featurised and scored, in one process or
on a Dask cluster, with the same ``build_features`` as online scoring."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from service.scoring.features import FeatureMatrix, build_features
from service.scoring.raw import MONTHLY_SOURCES, RawData

CHUNK_APPLICATIONS = 20_000  # window arrays stay cache-friendly: measured fastest of 5k-100k (docs/benchmarks.md)


def enterprise_ranges(enterprise_row: np.ndarray, max_applications: int = CHUNK_APPLICATIONS,
                      ) -> Iterator[tuple[np.ndarray, int, int]]:
    """Cut applications (their enterprises' rows) into ranges of whole enterprises, ~max_applications each.

    Yields the positions of each range's applications (in enterprise order) and the range [lo, hi) of
    enterprise rows it covers: the unit that ``iter_chunks`` slices from memory and that a streaming reader
    (training/stream.py) reads from the files.
    """
    apps_order = np.argsort(enterprise_row, kind="stable")
    app_ent = enterprise_row[apps_order]
    n_apps = len(app_ent)
    start = 0
    while start < n_apps:
        stop = min(start + max_applications, n_apps)
        # Extend to the end of the last enterprise so that no enterprise is split across pieces.
        stop = int(np.searchsorted(app_ent, app_ent[stop - 1], side="right"))
        yield apps_order[start:stop], int(app_ent[start]), int(app_ent[stop - 1]) + 1
        start = stop


def iter_chunks(data: RawData, max_applications: int = CHUNK_APPLICATIONS) -> Iterator[tuple[np.ndarray, RawData]]:
    """Split ``data`` into pieces of whole enterprises with at most ~max_applications applications each.

    Yields the original application rows of each piece and the piece itself (enterprise rows renumbered).
    Records are sorted by enterprise once, so each piece is a contiguous slice.
    """
    sorted_tables = {}
    for name, t in data.monthly.items():
        order = np.argsort(t["enterprise_row"], kind="stable")
        sorted_tables[name] = {k: v[order] for k, v in t.items()}
    for rows, lo, hi in enterprise_ranges(data.applications["enterprise_row"], max_applications):
        apps = {k: v[rows] for k, v in data.applications.items()}
        apps["enterprise_row"] = apps["enterprise_row"] - lo
        monthly = {}
        for name, t in sorted_tables.items():
            a, b = np.searchsorted(t["enterprise_row"], [lo, hi])
            monthly[name] = {k: v[a:b] for k, v in t.items()}
            monthly[name]["enterprise_row"] = monthly[name]["enterprise_row"] - lo
        profile = {k: v[lo:hi] for k, v in data.profile.items()}
        yield rows, RawData(profile=profile, applications=apps, monthly=monthly, graph=data.graph, related=data.related)


def piece_features(piece: RawData) -> tuple[np.ndarray, np.ndarray]:
    """Features and sources used of one piece, as plain arrays (what a Dask task sends back)."""
    fm = build_features(piece)
    return fm.values, fm.sources_used


def build_all(data: RawData, max_applications: int = CHUNK_APPLICATIONS,
              allowed_sources: list[str] | None = None) -> FeatureMatrix:
    """Features for every application of ``data``, in the applications file's order."""
    n = len(data.applications["application_id"])
    values: np.ndarray | None = None
    used = np.zeros((n, len(MONTHLY_SOURCES)), dtype=bool)
    for rows, piece in iter_chunks(data, max_applications):
        fm = build_features(piece, allowed_sources=allowed_sources)
        if values is None:
            values = np.empty((n, fm.values.shape[1]))
        values[rows] = fm.values
        used[rows] = fm.sources_used
    if values is None:
        values = build_features(data, allowed_sources=allowed_sources).values
    return FeatureMatrix(application_id=data.applications["application_id"], values=values, sources_used=used)
