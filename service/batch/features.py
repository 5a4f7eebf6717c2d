"""Batch features for a data folder, written as one table: identifiers, features, sources used, label."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from service.batch.chunks import build_all
from service.batch.distributed import features_distributed
from service.scoring.features import FeatureMatrix
from service.scoring.raw import MONTHLY_SOURCES, RawData, load_folder


def feature_table(data: RawData, fm: FeatureMatrix) -> pa.Table:
    """Identifiers, features, the sources used and (when present) the label, as one Arrow table."""
    apps = data.applications
    columns: dict[str, object] = {
        "application_id": pa.array(apps["application_id"], type=pa.string()),
        "enterprise_id": pa.array(apps["enterprise_id"], type=pa.string()),
        "application_date": pa.array(apps["application_date"]),
    }
    for j, name in enumerate(fm.names):
        columns[name] = pa.array(fm.values[:, j], from_pandas=True)  # NaN -> null: missing, not zero
    for j, source in enumerate(MONTHLY_SOURCES):
        columns[f"used_{source}"] = pa.array(fm.sources_used[:, j])
    if "defaulted_12m" in apps:
        columns["defaulted_12m"] = pa.array(apps["defaulted_12m"], from_pandas=True).cast(pa.int8())
    return pa.table(columns)


def write_table(table: pa.Table, out: Path) -> None:
    """Write atomically: a reader never sees a half-written file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        if out.suffix == ".csv":
            pacsv.write_csv(table, tmp)
        else:
            pq.write_table(table, tmp, compression="zstd")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)


def featurize_folder(data_dir: Path, out: Path, log: Callable[[str], None] = print,
                     dask_address: str | None = None) -> tuple[int, int]:
    data = load_folder(data_dir)
    log(f"loaded {data.n_enterprises:,} enterprises, {len(data.applications['application_id']):,} applications, "
        f"sources: {', '.join(data.monthly)}")
    if dask_address:
        fm = features_distributed(data, dask_address)
    else:
        fm = build_all(data)
    write_table(feature_table(data, fm), out)
    return fm.values.shape
