"""Training sets: features, labels, dates and monitoring groups, from a data folder or from a user's own table.

Both paths produce the same ``TrainingSet``, so the rest of the pipeline (split, fit, evaluate, card, bundle)
does not know where the features came from.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from service.batch.chunks import build_all
from service.scoring.bundle import sha256_file
from service.scoring.catalog import CATALOG
from service.scoring.raw import CONTRACT, MONTHLY_SOURCES, find_file, load_folder
from training.evaluate import age_band

log = logging.getLogger(__name__)


@dataclass
class TrainingSet:
    kind: str  # "catalog" or "table"
    X: np.ndarray
    y: np.ndarray
    dates: np.ndarray | None  # datetime64[D]; None: no time order (cross-validation)
    features: list[dict]  # name, internal name, categorical categories, monotone direction, ... (in metadata)
    segments: dict[str, np.ndarray] = field(default_factory=dict)  # performance by region, industry, ...
    fairness_groups: dict[str, np.ndarray] = field(default_factory=dict)  # owner gender, owner age band
    withheld: dict[str, np.ndarray] = field(default_factory=dict)  # source -> X computed without that source
    sources_used: np.ndarray | None = None
    fingerprint: dict = field(default_factory=dict)
    target: str = "defaulted_12m"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f["name"] for f in self.features)

    @property
    def internal_names(self) -> tuple[str, ...]:
        """What LightGBM calls the features: it refuses or renames some characters that real column names have."""
        return tuple(f["internal"] for f in self.features)

    @property
    def categorical(self) -> list[int]:
        return [j for j, f in enumerate(self.features) if f["categories"]]

    @property
    def monotone(self) -> list[int]:
        return [f["direction"] for f in self.features]


def fingerprint_files(paths: list[Path]) -> dict:
    h = hashlib.sha256()
    files = {}
    for p in sorted(paths):
        digest = sha256_file(p)  # streamed: data files can be gigabytes
        files[p.name] = digest
        h.update(f"{p.name}:{digest}\n".encode())
    return {"sha256": h.hexdigest(), "files": files}


def catalog_features() -> list[dict]:
    return [{"name": f.name, "internal": f.name, "source": f.source, "group": f.group, "direction": f.direction,
             "categories": list(f.categories), "actionable": f.actionable, "label_en": f.label_en,
             "label_zh": f.label_zh} for f in CATALOG]


def from_folder(folder: Path) -> TrainingSet:
    """Features for every labelled application of a data folder, plus each source withheld in turn."""
    data = load_folder(folder)
    if "defaulted_12m" not in data.applications:
        raise ValueError(f"{folder}: applications has no defaulted_12m column; training needs outcomes")
    y_all = data.applications["defaulted_12m"]
    labelled = ~np.isnan(y_all)
    if labelled.sum() < 100:
        raise ValueError(f"{folder}: only {int(labelled.sum())} applications have an outcome; need at least 100")
    data = data.select(np.flatnonzero(labelled)) if not labelled.all() else data
    fm = build_all(data)
    log.info("features: %d applications x %d features", *fm.values.shape)
    withheld = {}
    for source in data.monthly:
        allowed = [s for s in MONTHLY_SOURCES if s != source]
        withheld[source] = build_all(data, allowed_sources=allowed).values
    prof = data.profile
    rows = data.applications["enterprise_row"]
    # The book is not training data (labels come from applications): it does not change the model's fingerprint.
    files = [p for name in CONTRACT if name != "loans" and (p := find_file(folder, name)) is not None]
    return TrainingSet(
        kind="catalog", X=fm.values, y=data.applications["defaulted_12m"].astype(np.int64),
        dates=data.applications["application_date"], features=catalog_features(),
        segments={c: prof[c][rows] for c in ("region", "industry", "legal_form")},
        fairness_groups=_owner_groups(prof, rows), withheld=withheld, sources_used=fm.sources_used,
        fingerprint=fingerprint_files(files),
    )


def _owner_groups(profile: dict, rows: np.ndarray) -> dict[str, np.ndarray]:
    groups = {}
    if "owner_gender" in profile:
        groups["owner_gender"] = np.array([g or "unknown" for g in profile["owner_gender"][rows]], dtype=object)
    if "owner_age" in profile:
        groups["owner_age_band"] = age_band(profile["owner_age"][rows])
    return groups


def industry_medians(ts: TrainingSet) -> dict[str, dict[str, float]]:
    """Median of each numeric feature per industry on the training data: the comparison in reason texts."""
    if ts.kind != "catalog":
        return {}
    industry = ts.segments["industry"]
    out: dict[str, dict[str, float]] = {}
    numeric = [j for j, f in enumerate(ts.features) if not f["categories"]]
    for ind in sorted(set(industry)):
        block = ts.X[industry == ind][:, numeric]
        med = {}
        for k, j in enumerate(numeric):
            col = block[:, k][~np.isnan(block[:, k])]
            if col.size:
                med[ts.features[j]["name"]] = round(float(np.median(col)), 6)
        out[str(ind)] = med
    return out


# ---------------------------------------------------------------------------------------------------------
# Bring your own table


ID_LIKE = re.compile(r"(^|_)(id|uuid|key|no|number|code)$", re.IGNORECASE)


class TableError(ValueError):
    """The user's table cannot be trained on; the message names the column and the problem."""


def read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise TableError(f"{path}: file does not exist")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path, low_memory=False)
    raise TableError(f"{path}: must be .csv or .parquet")


def binary_target(df: pd.DataFrame, target: str, positive: str | None) -> np.ndarray:
    if target not in df.columns:
        raise TableError(f"target column '{target}' is not in the table (columns: {', '.join(map(str, df.columns))})")
    col = df[target]
    if col.isna().any():
        raise TableError(f"target column '{target}' has {int(col.isna().sum())} empty values")
    values = sorted(col.astype(str).unique())
    if positive is not None:
        if positive not in values:
            raise TableError(f"--positive '{positive}' is not a value of '{target}' (values: {', '.join(values)})")
        if len(values) != 2:
            raise TableError(f"target column '{target}' must have exactly two values, has {len(values)}")
        return (col.astype(str) == positive).to_numpy(np.int64)
    numeric = pd.to_numeric(col, errors="coerce")
    if numeric.isna().any() or not set(numeric.unique()) <= {0, 1}:
        shown = ", ".join(values[:5]) + (" ..." if len(values) > 5 else "")
        raise TableError(f"target column '{target}' must be 0/1 (or pass --positive LABEL); found {shown}")
    if numeric.nunique() < 2:
        raise TableError(f"target column '{target}' has only one value; need both 0 and 1")
    return numeric.to_numpy(np.int64)


def _table_feature(name: str, j: int, categories: list[str]) -> dict:
    """A column as a feature: its name as the user wrote it (any characters: spaces, brackets, quotes...) for
    the card, the API and the explanations, and a safe internal name for LightGBM, which refuses JSON special
    characters in feature names and renames spaces."""
    return {"name": name, "internal": f"f{j:03d}", "source": "table", "group": "table", "direction": 0,
            "categories": categories, "actionable": True, "label_en": name, "label_zh": name}


def from_table(path: Path, target: str, *, id_column: str | None = None, date_column: str | None = None,
               positive: str | None = None, max_categories: int = 50) -> TrainingSet:
    """A risk team's own feature table: numeric and categorical columns inferred, leaks and junk refused."""
    df = read_table(path)
    y = binary_target(df, target, positive)
    drop = {target}
    for col, role in ((id_column, "--id"), (date_column, "--date")):
        if col is not None and col not in df.columns:
            raise TableError(f"{role} column '{col}' is not in the table")
        if col is not None:
            drop.add(col)
    dates = None
    if date_column:
        parsed = pd.to_datetime(df[date_column], errors="coerce")
        if parsed.isna().any():
            raise TableError(f"--date column '{date_column}' has {int(parsed.isna().sum())} values that are not dates")
        dates = parsed.to_numpy().astype("datetime64[D]")
    features, columns = [], []
    for name in df.columns:
        if name in drop:
            continue
        col = df[name]
        label = f"column '{name}'"
        if col.isna().all():
            log.warning("%s is empty in every row: dropped", label)
            continue
        if col.nunique(dropna=True) <= 1:
            log.warning("%s is constant: dropped", label)
            continue
        as_str = col.astype(str)
        if col.notna().all() and col.nunique() == 2 and (pd.Series(y).groupby(as_str.to_numpy()).nunique() == 1).all():
            raise TableError(f"{label} is identical to the target '{target}' (up to relabelling): "
                             "it would leak the outcome")
        numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
        unique_share = col.nunique(dropna=True) / max(col.notna().sum(), 1)
        if ID_LIKE.search(str(name)) and unique_share > 0.9 or (not numeric and unique_share > 0.9):
            log.warning("%s looks like an identifier (%.0f%% unique values): dropped", label, 100 * unique_share)
            continue
        if numeric:
            columns.append(col.astype(np.float64).to_numpy())
            features.append(_table_feature(str(name), len(features), []))
        else:
            cats = sorted(as_str[col.notna()].unique())
            if len(cats) > max_categories:
                log.warning("%s has %d categories (> %d): dropped", label, len(cats), max_categories)
                continue
            index = {c: float(i) for i, c in enumerate(cats)}
            columns.append(np.array([index.get(v, np.nan) if ok else np.nan
                                     for v, ok in zip(as_str, col.notna(), strict=True)]))
            features.append(_table_feature(str(name), len(features), cats))
    seen: set[str] = set()
    for f in features:
        if f["name"] in seen:
            raise TableError(f"column name '{f['name']}' appears twice; feature names must be unique")
        seen.add(f["name"])
    if not features:
        raise TableError("no usable feature column is left after dropping empty, constant and identifier columns")
    log.info("table: %d rows, %d features (%d categorical), target '%s' with %.2f%% positives", len(df),
             len(features), sum(1 for f in features if f["categories"]), target, 100 * y.mean())
    return TrainingSet(kind="table", X=np.column_stack(columns), y=y, dates=dates, features=features,
                       fingerprint=fingerprint_files([path]), target=target)
