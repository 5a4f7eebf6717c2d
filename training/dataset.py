"""Training sets: features, labels, dates and monitoring groups, from a data folder or from a user's own table.

Both paths produce the same ``TrainingSet``, so the rest of the pipeline (split, fit, evaluate, card, bundle)
does not know where the features came from.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from service.batch.chunks import piece_features
from service.batch.distributed import map_pieces
from service.scoring import tabular
from service.scoring.bundle import sha256_file
from service.scoring.catalog import CATALOG, FEATURE_NAMES, PROTECTED_FIELDS
from service.scoring.features import build_features
from service.scoring.raw import CONTRACT, MONTHLY_SOURCES, RawData, find_file
from training.evaluate import age_band
from training.protected import fairness_groups as protected_groups
from training.protected import protected_reason
from training.stream import StreamedFolder
from training.table_options import TableError, TableOptions, parse_dates

__all__ = ["TableError", "TrainingSet", "from_folder", "from_table"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Protected:
    """A protected attribute in the data: kept for the fairness checks, a model input only when allowed."""

    name: str
    why: str  # what the name says it holds ("age", "sex or gender", ...) or "declared with --protected"
    input: bool

    def to_json(self) -> dict:
        return {"name": self.name, "why": self.why, "input": self.input}


@dataclass
class TrainingSet:
    kind: str  # "catalog" or "table"
    X: np.ndarray
    y: np.ndarray
    dates: np.ndarray | None  # datetime64[D]; None: no time order (cross-validation)
    features: list[dict]  # name, internal name, categorical categories, monotone direction, ... (in metadata)
    segments: dict[str, np.ndarray] = field(default_factory=dict)  # performance by region, industry, ...
    fairness_groups: dict[str, np.ndarray] = field(default_factory=dict)  # owner gender, owner age band
    withheld: WithheldSources | None = None  # features without each monthly source, for the rows that need them
    sources_used: np.ndarray | None = None
    fingerprint: dict = field(default_factory=dict)
    target: str = "defaulted_12m"
    protected: tuple[Protected, ...] = ()
    allow_protected: str | None = None  # the risk team's reason, when protected columns are model inputs
    excluded: tuple[str, ...] = ()  # columns the risk team left out (--exclude)
    columns_read: int = 0  # columns of the user's table (0: a data folder)

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


Mapper = Callable[[Iterable[tuple[np.ndarray, object]], Callable], Iterable[tuple[np.ndarray, object]]]


def map_here(pieces: Iterable[tuple[np.ndarray, object]], fn: Callable) -> Iterator[tuple[np.ndarray, object]]:
    """Each piece's rows with ``fn(piece)``, in this process, one piece in memory at a time."""
    return ((rows, fn(piece)) for rows, piece in pieces)


def mapper_for(client: object | None) -> Mapper:
    """``map_here``, or the same map over the workers of a Dask client (``distributed.map_pieces``)."""
    return map_here if client is None else functools.partial(map_pieces, client)


def withheld_piece(job: tuple[RawData, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """For one piece and, per source, positions of its applications: their features with that source withheld,
    exactly as an applicant who did not consent to it is scored."""
    piece, positions = job
    return {source: build_features(piece.select(at), allowed_sources=[s for s in (*MONTHLY_SOURCES, "links")
                                                                      if s != source]).values
            for source, at in positions.items()}


def withheld_features(folder: Path, files: dict[str, tuple[int, int]], wanted: dict[str, np.ndarray],
                      mapper: Mapper = map_here) -> dict[str, np.ndarray]:
    """Features of the rows ``wanted[source]`` (sorted, unique) with that source withheld, in one read of the
    folder that touches only the pieces holding those rows. The folder is opened again rather than kept open
    since ``from_folder``: held through fitting and evaluation it cost 1.3 GiB at 1M firms. ``files`` (sizes and
    modification times then) make sure it is still the same data."""
    if _file_stamps(folder) != files:
        raise ValueError(f"{folder}: the data files changed during training; train again")
    streamed = _labelled(folder)
    needed = np.unique(np.concatenate(list(wanted.values())))
    out = {source: np.empty((len(rows), len(FEATURE_NAMES))) for source, rows in wanted.items()}

    def jobs() -> Iterator[tuple[np.ndarray, object]]:
        for rows, piece in streamed.pieces(needed):
            yield rows, (piece, {source: np.flatnonzero(np.isin(rows, want)) for source, want in wanted.items()})

    for rows, values in mapper(jobs(), withheld_piece):
        for source, block in values.items():
            out[source][np.searchsorted(wanted[source], rows[np.isin(rows, wanted[source])])] = block
    return out


def _training_files(folder: Path) -> list[Path]:
    # Every file a feature reads: the link files and the book (its defaults) feed the related-party graph.
    return [p for name in CONTRACT if (p := find_file(folder, name)) is not None]


def _file_stamps(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in _training_files(folder)}


def _labelled(folder: Path) -> StreamedFolder:
    """The folder with only its labelled applications; refused without enough outcomes to train on."""
    streamed = StreamedFolder(folder)
    apps = streamed.applications
    if "defaulted_12m" not in apps:
        raise ValueError(f"{folder}: applications has no defaulted_12m column; training needs outcomes")
    labelled = ~np.isnan(apps["defaulted_12m"])
    if labelled.sum() < 100:
        raise ValueError(f"{folder}: only {int(labelled.sum())} applications have an outcome; need at least 100")
    streamed.keep_applications(labelled)
    return streamed


@dataclass
class WithheldSources:
    """Features recomputed with one monthly source withheld, built only for the rows that use them (the
    training rows picked for source masking and the test rows of the robustness check), on first request.

    ``compute({source: rows})`` returns those rows' features with the source withheld; requested rows are
    kept, so each is computed once however often the pipeline asks.
    """

    sources: tuple[str, ...]
    compute: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
    rows: dict[str, np.ndarray] = field(default_factory=dict)  # source -> sorted rows computed so far
    values: dict[str, np.ndarray] = field(default_factory=dict)  # source -> their features

    def prepare(self, wanted: dict[str, np.ndarray]) -> None:
        """Compute every row of ``wanted`` not computed yet, all sources in one pass."""
        missing = {s: np.setdiff1d(rows, self.rows.get(s, ())) for s, rows in wanted.items()}
        missing = {s: rows for s, rows in missing.items() if rows.size}
        if not missing:
            return
        for source, values in self.compute(missing).items():
            rows = np.concatenate([self.rows.get(source, np.empty(0, np.int64)), missing[source]])
            values = np.vstack([self.values[source], values]) if source in self.values else values
            order = np.argsort(rows, kind="stable")
            self.rows[source], self.values[source] = rows[order], values[order]

    def take(self, source: str, rows: np.ndarray) -> np.ndarray:
        """Features of ``rows`` (training-set rows) with ``source`` withheld."""
        self.prepare({source: rows})
        return self.values[source][np.searchsorted(self.rows[source], rows)]


def from_folder(folder: Path, *, client: object | None = None) -> TrainingSet:
    """Features for every labelled application of a data folder, read a piece of whole enterprises at a time
    (and built on the workers of a Dask ``client`` when given); features with a source withheld are built
    later, only for the rows the pipeline asks for (``WithheldSources``)."""
    stamps = _file_stamps(folder)
    streamed = _labelled(folder)
    apps = streamed.applications
    mapper = mapper_for(client)
    n = len(apps["application_id"])
    X = np.empty((n, len(FEATURE_NAMES)))
    sources_used = np.zeros((n, len(MONTHLY_SOURCES)), dtype=bool)
    for rows, (values, used) in mapper(streamed.pieces(), piece_features):
        X[rows], sources_used[rows] = values, used
    log.info("features: %d applications x %d features", *X.shape)
    prof = streamed.profile
    rows = apps["enterprise_row"]
    return TrainingSet(
        kind="catalog", X=X, y=apps["defaulted_12m"].astype(np.int64), dates=apps["application_date"],
        features=catalog_features(), segments={c: prof[c][rows] for c in ("region", "industry", "legal_form")},
        fairness_groups=_owner_groups(prof, rows),
        protected=tuple(Protected(name, why, name in FEATURE_NAMES) for name, why in
                        (("owner_gender", "sex or gender"), ("owner_age", "age")) if name in PROTECTED_FIELDS),
        withheld=WithheldSources(tuple(sorted(streamed.sources)),
                                 functools.partial(withheld_features, folder, stamps, mapper=mapper)),
        sources_used=sources_used, fingerprint=fingerprint_files(_training_files(folder)),
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
ID_LEVELS = 50  # text levels above which a column named like an identifier is taken for one
MIN_LEVEL_ROWS = 10  # a level seen in fewer rows is grouped into OTHER: too few to learn its own effect


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


def _table_feature(name: str, j: int, categories: list[str], direction: int = 0) -> dict:
    """A column as a feature: its name as the user wrote it (any characters: spaces, brackets, quotes...) for
    the card, the API and the explanations, and a safe internal name for LightGBM, which refuses JSON special
    characters in feature names and renames spaces."""
    return {"name": name, "internal": f"f{j:03d}", "source": "table", "group": "table", "direction": direction,
            "categories": categories, "actionable": True, "label_en": name, "label_zh": name}


def categorical_codes(col: pd.Series, min_rows: int = MIN_LEVEL_ROWS) -> tuple[np.ndarray, list[str], int]:
    """Codes for LightGBM's native categorical splits, the categories (levels seen in ``min_rows`` rows or
    more, sorted, then ``OTHER``) and how many rare levels ``OTHER`` holds. Scoring encodes with the very same
    ``tabular.encode``, so an unseen level lands where the rare ones did."""
    counts = pd.Series(tabular.levels(col), dtype=object).value_counts()
    kept = sorted(str(c) for c in counts[counts >= min_rows].index if c != tabular.OTHER)
    categories = [*kept, tabular.OTHER]
    return tabular.encode(col, categories), categories, int((counts < min_rows).sum())


def _protected_columns(df: pd.DataFrame, opts: TableOptions, roles: set[str]) -> dict[str, str]:
    """Protected columns and why: found by name, or declared with ``--protected``."""
    found = {str(c): why for c in df.columns if c not in roles and (why := protected_reason(str(c)))}
    found |= {c: found.get(c, "declared with --protected") for c in opts.protected}
    if opts.allow_protected is not None and not found:
        raise TableError("--allow-protected: no column is protected (none found by name, none declared with "
                         "--protected), so there is nothing to allow")
    for name in opts.directions:
        if name in found and opts.allow_protected is None:
            raise TableError(f"--monotone '{name}': the column is protected ({found[name]}) and so not a model "
                             "input; add --allow-protected REASON to use it")
    return found


def from_table(path: Path, target: str, *, id_column: str | None = None, date_column: str | None = None,
               positive: str | None = None, exclude: Sequence[str] = (), categorical: Sequence[str] = (),
               monotone: Sequence[str] = (), protected: Sequence[str] = (), allow_protected: str | None = None,
               min_level_rows: int = MIN_LEVEL_ROWS) -> TrainingSet:
    """A risk team's own feature table: numeric and categorical columns inferred (or declared), protected
    attributes kept out of the inputs and kept for the fairness checks, leaks and junk refused."""
    df = read_table(path)
    y = binary_target(df, target, positive)
    for col, role in ((id_column, "--id"), (date_column, "--date")):
        if col is not None and col not in df.columns:
            raise TableError(f"{role} column '{col}' is not in the table")
    opts = TableOptions(id_column=id_column, date_column=date_column, positive=positive, exclude=exclude,
                        categorical=categorical, monotone=monotone, protected=protected,
                        allow_protected=allow_protected).check([str(c) for c in df.columns], target)
    roles = {target} | {c for c in (id_column, date_column) if c is not None}
    dates = parse_dates(df[date_column], date_column) if date_column else None
    found = _protected_columns(df, opts, roles)
    fairness = {name: protected_groups(df[name], why) for name, why in found.items()}
    features, columns, dropped = [], [], {}
    for name in df.columns:
        if name in roles or name in opts.exclude or (name in found and opts.allow_protected is None):
            continue
        col = df[name]
        label = f"column '{name}'"
        if col.isna().all():
            dropped[name] = "empty in every row"
            continue
        if col.nunique(dropna=True) <= 1:
            dropped[name] = "constant"
            continue
        as_str = col.astype(str)
        if col.notna().all() and col.nunique() == 2 and (pd.Series(y).groupby(as_str.to_numpy()).nunique() == 1).all():
            raise TableError(f"{label} is identical to the target '{target}' (up to relabelling): "
                             "it would leak the outcome")
        numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col) \
            and name not in opts.categorical
        unique_share = col.nunique(dropna=True) / max(col.notna().sum(), 1)
        # Unique values, or many text levels under an identifier's name (enterprise_id of repeat applicants):
        # levels that will not recur in new applications. --categorical keeps such a column.
        id_like = ID_LIKE.search(str(name)) and (unique_share > 0.9 or not numeric and col.nunique() > ID_LEVELS)
        if name not in opts.categorical and (id_like or (not numeric and unique_share > 0.9)):
            dropped[name] = f"looks like an identifier ({100 * unique_share:.0f}% unique values)"
            continue
        if numeric:
            columns.append(col.astype(np.float64).to_numpy())
            features.append(_table_feature(str(name), len(features), [], opts.directions.get(str(name), 0)))
        else:
            codes, cats, rare = categorical_codes(col, min_level_rows)
            if rare:
                log.info("%s: %d levels seen in fewer than %d rows grouped as '%s'", label, rare, min_level_rows,
                         tabular.OTHER)
            columns.append(codes)
            features.append(_table_feature(str(name), len(features), cats))
    for name, why in dropped.items():
        log.warning("column '%s' %s: dropped", name, why if why.startswith("looks") else f"is {why}")
        if name in opts.directions:
            raise TableError(f"--monotone '{name}': the column cannot be a feature (it is {why})")
    seen: set[str] = set()
    for f in features:
        if f["name"] in seen:
            raise TableError(f"column name '{f['name']}' appears twice; feature names must be unique")
        seen.add(f["name"])
    if not features:
        raise TableError("no usable feature column is left after dropping empty, constant, identifier, excluded "
                         "and protected columns")
    log.info("table: %d rows, %d features (%d categorical), target '%s' with %.2f%% positives", len(df),
             len(features), sum(1 for f in features if f["categories"]), target, 100 * y.mean())
    inputs = set(seen)
    return TrainingSet(kind="table", X=np.column_stack(columns), y=y, dates=dates, features=features,
                       fairness_groups=fairness, fingerprint=fingerprint_files([path]), target=target,
                       protected=tuple(Protected(n, why, n in inputs) for n, why in found.items()),
                       allow_protected=opts.allow_protected if any(n in inputs for n in found) else None,
                       excluded=tuple(opts.exclude), columns_read=len(df.columns))
