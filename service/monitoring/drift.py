"""Drift: is the population still the one the model learnt? Pure numpy, no web or database code.

The bundle keeps, from training, the distribution of every *subject* (the score, the PD, every feature and
every reason group's points) as integer counts over bins fixed on the training data: quantile bins for numbers,
one bin per category, plus an explicit bin for "missing" and one for "source not consented". Counts are kept
per segment (all applications, each region, each industry) and per season (calendar month or quarter of the
application date) wherever there are at least ``min_rows`` training rows; ``ReferenceSet`` is the one typed
owner of that record (``metadata["reference"]``), written by training and read here.

``compare`` bins a window of scored applications the same way and measures, per segment and subject:

* PSI = sum((a - e) * ln(a / e)) over bins (shares floored at ``eps``), month by month against the *same
  season* of the reference (a harvest month against harvest months), and over the whole window against the
  reference's seasons mixed in the window's proportions;
* a G-test (log-likelihood ratio, the test PSI itself is built from: PSI is the symmetrised Kullback-Leibler
  divergence, G / 2n the one-sided one) between the window's and the reference's counts, adjacent bins merged
  until every expected count is at least ``min_expected`` (Cochran's rule), rare categories pooled. PSI alone is
  weak exactly where monitoring hurts most: in a window of 40 applications with 12 bins sampling noise alone
  gives a PSI near (k - 1) / n = 0.3, and a rare category's share jumps through the ``eps`` floor; the test
  says whether the shift is larger than the noise of both samples. Over the window the reference is the
  seasons' mixture, with the sampling noise of Kish's effective size; the omnibus test is paired with 2 x 2
  tests of each bin against the rest (a shift in one bin, a rare category or withheld consent, is diluted over
  the omnibus test's degrees of freedom), Bonferroni-combined; p-values are then adjusted across every
  comparison of a report (Benjamini-Hochberg), since a report runs thousands.

A subject is flagged "act" when PSI >= ``psi_act`` and the adjusted p-value < ``alpha``, "watch" when PSI >=
``psi_watch`` and the same test holds; "untested" when the window has fewer than ``min_window`` applications.
Each result says what changed (the bins whose shares moved most, by their part of the PSI) and since when (the
first month whose own PSI crossed ``psi_watch`` with a significant monthly test, from which most of the months
crossed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import yaml
from scipy.special import chdtrc, xlogy

CONFIG_FILE = Path(__file__).with_name("drift.yaml")
KINDS = ("score", "pd", "feature", "group")
STATUSES = ("act", "watch", "stable", "untested")
MISSING, WITHHELD = "missing", "not consented"
SEGMENT_DIMENSIONS = ("region", "industry")
ALL = "all"
MONTH_KEYS = tuple(f"M{m:02d}" for m in range(1, 13))
QUARTER_KEYS = ("Q1", "Q2", "Q3", "Q4")
REFERENCE_FORMAT = 2


# ---------------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class DriftConfig:
    psi_watch: float = 0.1
    psi_act: float = 0.25
    alpha: float = 0.01  # adjusted p-value below which a PSI is more than sampling noise
    min_expected: float = 5.0  # Cochran's rule for the G-test: bins merged until each expected count reaches it
    min_window: int = 30  # fewer applications in a segment's window (or month): not tested
    what_changed: int = 3  # bins listed per subject
    eps: float = 1e-4  # share floor in PSI (an empty bin would make it infinite)

    def __post_init__(self) -> None:
        if not 0 < self.psi_watch < self.psi_act:
            raise ValueError(f"psi_watch must be > 0 and < psi_act, got {self.psi_watch} and {self.psi_act}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be between 0 and 1, got {self.alpha}")
        if self.min_expected <= 0 or self.min_window < 1 or self.what_changed < 1 or not 0 < self.eps < 0.01:
            raise ValueError("min_expected must be > 0, min_window and what_changed >= 1, eps in (0, 0.01)")


def load_drift_config(path: Path | str | None = None) -> DriftConfig:
    """Thresholds from YAML (the shipped drift.yaml by default); unknown keys are refused by name."""
    path = Path(path) if path is not None else CONFIG_FILE
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: must be a mapping of settings")
    known = {f.name for f in fields(DriftConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown setting {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    try:
        return DriftConfig(**{k: type(getattr(DriftConfig, k))(v) for k, v in data.items()})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None


# ---------------------------------------------------------------------------------------------------------
# Bins fixed on the reference


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 1e4 else f"{x:.3g}"


@dataclass(frozen=True)
class Binning:
    """Value bins (quantile edges, or one per category code), then "missing", then "not consented"."""

    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()

    @property
    def n_values(self) -> int:
        return len(self.categories) if self.categories else len(self.edges) + 1

    @property
    def n_bins(self) -> int:
        return self.n_values + 2

    @classmethod
    def fit(cls, values: np.ndarray, bins: int = 10, categories: tuple[str, ...] = ()) -> Binning:
        if categories:
            return cls(categories=tuple(categories))
        distinct = np.unique(values[~np.isnan(values)])
        if distinct.size == 0:
            return cls()
        quantiles = np.unique(np.quantile(distinct[np.searchsorted(distinct, values[~np.isnan(values)])],
                                          np.linspace(0, 1, bins + 1)[1:-1]))
        # Each edge moves to the middle of the gap between observed values that it falls in (the same split of
        # the training rows), then is rounded as metadata rounds numbers: a value like 11/12, computed a hair
        # differently later or compared with a rounded edge, must not change bins.
        k = np.searchsorted(distinct, quantiles, side="left")
        lower = distinct[np.maximum(k - 1, 0)]
        upper = distinct[np.minimum(k, distinct.size - 1)]
        edges = np.where(k > 0, (lower + upper) / 2, quantiles)
        return cls(edges=tuple(float(f"{e:.10g}") for e in np.unique(edges)))

    def index(self, values: np.ndarray, withheld: np.ndarray | None = None) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        missing = np.isnan(values)
        if self.categories:
            codes = np.where(missing, -1, values)
            valid = (codes >= 0) & (codes < self.n_values) & (codes == np.round(codes))
            missing = missing | ~valid  # an unknown category code reads as missing
            idx = np.where(valid, codes, 0).astype(np.int64)
        else:
            idx = np.searchsorted(np.asarray(self.edges), np.where(missing, 0, values), side="right")
        idx = np.where(missing, self.n_values, idx)
        if withheld is not None:
            idx = np.where(missing & withheld, self.n_values + 1, idx)
        return idx

    def counts(self, values: np.ndarray, withheld: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(self.index(values, withheld), minlength=self.n_bins)

    def labels(self) -> list[str]:
        if self.categories:
            values = list(self.categories)
        elif not self.edges:
            values = ["any value"]
        else:
            e = self.edges
            values = [f"< {_num(e[0])}"] + [f"{_num(a)} – {_num(b)}" for a, b in zip(e, e[1:], strict=False)] \
                + [f"≥ {_num(e[-1])}"]
        return [*values, MISSING, WITHHELD]

    @property
    def kinds(self) -> np.ndarray:
        """How each bin merges in the test (see _merge): value bins, then the two no-value bins."""
        return np.array([CATEGORY if self.categories else ORDERED] * self.n_values + [NO_VALUE, NO_VALUE])

    def to_json(self) -> dict:
        return {"categories": list(self.categories)} if self.categories else {"edges": list(self.edges)}


def season_keys(months: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Calendar-month ("M01".."M12") and quarter ("Q1".."Q4") keys of datetime64 months."""
    moy = np.asarray(months).astype("datetime64[M]").astype(np.int64) % 12
    return np.array(MONTH_KEYS, dtype=object)[moy], np.array(QUARTER_KEYS, dtype=object)[moy // 3]


def subject_key(kind: str, name: str) -> str:
    return f"{kind}:{name}"


def _encode(counts: np.ndarray) -> str:
    return " ".join(str(int(c)) for c in counts)  # a line per number would make metadata.json ~10x longer


def _decode(text: str) -> np.ndarray:
    return np.array([int(c) for c in text.split()], dtype=np.int64)


# ---------------------------------------------------------------------------------------------------------
# The reference: one typed owner of metadata["reference"]

_KIND_KEYS = {"score": "score", "pd": "pd", "feature": "features", "group": "groups"}


@dataclass
class ReferenceSet:
    binnings: dict[str, Binning]  # subject key -> bins
    cells: dict[str, dict[str, dict[str, np.ndarray]]]  # subject -> segment -> season -> counts (or shares)
    rows: dict[str, dict[str, int]]  # segment -> season -> reference rows
    seasons: dict[str, str]  # segment -> "month" | "quarter" | "none"
    notes: dict[str, str] = field(default_factory=dict)  # segment (or "reference") -> why something is coarser
    counted: bool = True  # False: a bundle from before format 2 (pooled shares only)
    bins: int = 10
    min_rows: int = 200

    @property
    def subjects(self) -> list[str]:
        return list(self.binnings)

    def has_segment(self, segment: str) -> bool:
        return segment in self.rows

    def cell(self, subject: str, segment: str, month_key: str, quarter_key: str,
             season_aware: bool = True) -> tuple[np.ndarray, str]:
        """The reference counts for a month of ``segment``: its calendar month, else its quarter, else pooled."""
        by_season = self.cells[subject][segment]
        if season_aware:
            for key in (month_key, quarter_key):
                if key in by_season:
                    return by_season[key], key
        return by_season[ALL], ALL

    def to_json(self) -> dict:
        out: dict = {"format": REFERENCE_FORMAT, "bins": self.bins, "min_rows": self.min_rows, "rows": self.rows,
                     "seasons": self.seasons, "notes": self.notes, "features": {}, "groups": {}}
        for key, binning in self.binnings.items():
            kind, name = key.split(":", 1)
            entry = {**binning.to_json(), "counts": {seg: {s: _encode(c) for s, c in by.items()}
                                                     for seg, by in self.cells[key].items()}}
            if kind in ("score", "pd"):
                out[kind] = entry
            else:
                out[_KIND_KEYS[kind]][name] = entry
        return out

    @classmethod
    def from_json(cls, ref: Mapping) -> ReferenceSet:
        if ref.get("format") != REFERENCE_FORMAT:
            return cls._legacy(ref)
        binnings, cells = {}, {}
        entries = [("score", "score", ref["score"]), ("pd", "pd", ref["pd"])]
        entries += [("feature", n, e) for n, e in ref.get("features", {}).items()]
        entries += [("group", n, e) for n, e in ref.get("groups", {}).items()]
        for kind, name, e in entries:
            key = subject_key(kind, name)
            binnings[key] = Binning(edges=tuple(e.get("edges", ())), categories=tuple(e.get("categories", ())))
            cells[key] = {seg: {s: _decode(c) for s, c in by.items()} for seg, by in e["counts"].items()}
        return cls(binnings, cells, {seg: dict(v) for seg, v in ref["rows"].items()}, dict(ref["seasons"]),
                   dict(ref.get("notes", {})), True, int(ref["bins"]), int(ref["min_rows"]))

    @classmethod
    def _legacy(cls, ref: Mapping) -> ReferenceSet:
        """Format 1 (edges and pooled shares, the last share missing): features and score, no segments or
        seasons, no counts (the test then treats the reference shares as known)."""
        binnings, cells = {}, {}
        items = [("score", "score", ref["score"])] if "score" in ref else []
        items += [("feature", n, e) for n, e in ref.get("features", {}).items()]
        for kind, name, e in items:
            key = subject_key(kind, name)
            binnings[key] = Binning(edges=tuple(e["edges"]))
            cells[key] = {ALL: {ALL: np.array([*e["shares"], 0.0], dtype=np.float64)}}
        note = ("this bundle keeps only pooled training shares of the features and the score (reference format 1): "
                "no PD, reason groups, segments, seasons or counts; retrain to monitor them")
        return cls(binnings, cells, {ALL: {ALL: 0}}, {ALL: "none"}, {"reference": note}, False)


def build_reference(columns: Mapping[str, tuple[np.ndarray, tuple[str, ...]]], *, dates: np.ndarray | None,
                    segments: Mapping[str, np.ndarray], bins: int = 10, min_rows: int = 200) -> ReferenceSet:
    """Counts per bin of each subject (``columns``: key -> (values, categories)) on the training rows, per
    segment and, when the data span a year or more, per season: calendar month if every month of the segment
    has ``min_rows`` rows, else quarter if every quarter has, else pooled (each choice noted)."""
    n = len(next(iter(columns.values()))[0]) if columns else 0
    binnings = {key: Binning.fit(values, bins, categories) for key, (values, categories) in columns.items()}
    idx = {key: binnings[key].index(values) for key, (values, _) in columns.items()}
    notes: dict[str, str] = {}
    month_key = quarter_key = None
    if dates is not None and n:
        d = np.asarray(dates).astype("datetime64[D]")
        if (d.max() - d.min()).astype(int) >= 365:
            month_key, quarter_key = season_keys(d.astype("datetime64[M]"))
        else:
            notes["reference"] = "the training applications span less than a year: no seasonal references"
    else:
        notes["reference"] = "no application dates: no seasonal references"
    masks = {ALL: np.ones(n, dtype=bool)}
    for dim, labels in sorted(segments.items()):
        labels = np.asarray(labels).astype(str)
        for value in sorted(set(labels)):
            masks[f"{dim}={value}"] = labels == value
    rows: dict[str, dict[str, int]] = {}
    seasons: dict[str, str] = {}
    cells: dict[str, dict[str, dict[str, np.ndarray]]] = {key: {} for key in columns}
    for seg, mask in masks.items():
        total = int(mask.sum())
        if total < min_rows:
            notes[seg] = f"no reference: {total} training rows < {min_rows}"
            continue
        chosen: dict[str, np.ndarray] = {ALL: mask}
        seasons[seg] = "none"
        if month_key is not None:
            for kind, keys, key_of in (("month", MONTH_KEYS, month_key), ("quarter", QUARTER_KEYS, quarter_key)):
                season_masks = {k: mask & (key_of == k) for k in keys}
                fewest = min(int(m.sum()) for m in season_masks.values())
                if fewest >= min_rows:
                    chosen |= season_masks
                    seasons[seg] = kind
                    break
            else:
                notes[seg] = f"not season-aware: fewest training rows in a quarter {fewest} < {min_rows}"
        rows[seg] = {s: int(m.sum()) for s, m in chosen.items()}
        for key in columns:
            nb = binnings[key].n_bins
            cells[key][seg] = {s: np.bincount(idx[key][m], minlength=nb) for s, m in chosen.items()}
    return ReferenceSet(binnings, cells, rows, seasons, notes, True, bins, min_rows)


# ---------------------------------------------------------------------------------------------------------
# Statistics


def psi(expected: np.ndarray, actual: np.ndarray, eps: float = 1e-4) -> float:
    """Population stability index between two sets of shares."""
    e, a = np.maximum(expected, eps), np.maximum(actual, eps)
    return float(np.sum((a - e) * np.log(a / e)))


def psi_parts(expected: np.ndarray, actual: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    e, a = np.maximum(expected, eps), np.maximum(actual, eps)
    return (a - e) * np.log(a / e)


ORDERED, CATEGORY, NO_VALUE = 0, 1, 2  # how a bin merges: with a neighbour, with the smallest, with no-value bins


def _merge(table: np.ndarray, kinds: np.ndarray, min_expected: float) -> np.ndarray:
    """Columns of a 2 x k table merged until every expected count is >= min_expected (Cochran's rule): a numeric
    bin with the smaller of its neighbours, "not consented" with "missing" (the model sees neither), a category
    with the smallest other bin (rare categories pooled)."""
    keep = table.sum(axis=0) > 0
    table, kinds = table[:, keep].astype(np.float64), np.asarray(kinds)[keep].copy()
    rows = table.sum(axis=1)
    while table.shape[1] > 2:
        totals = table.sum(axis=0)
        expected = np.outer(rows, totals) / rows.sum()
        if expected.min() >= min_expected:
            break
        b = int(np.argmin(totals))
        near = [j for j in range(len(kinds)) if j != b and kinds[j] == kinds[b]]
        if kinds[b] == ORDERED:
            near = [j for j in (b - 1, b + 1) if j in near]
        if not near:
            near = [j for j in range(len(totals)) if j != b]
        p = min(near, key=lambda j: totals[j])
        table[:, p] += table[:, b]
        table, kinds = np.delete(table, b, axis=1), np.delete(kinds, b)
    return table


def g_statistic(window: np.ndarray, reference: np.ndarray, kinds: np.ndarray, *, counted: bool = True,
                min_expected: float = 5.0) -> tuple[float, int]:
    """G = 2 sum O ln(O / E) and its degrees of freedom: a two-sample test of homogeneity against reference
    counts (which may be effective, non-integer counts), or (``counted`` False: the reference gives shares
    only) a goodness-of-fit test against them."""
    window = np.asarray(window, dtype=np.float64)
    if window.sum() == 0:
        return 0.0, 0
    if counted:
        table = _merge(np.vstack([window, reference]), kinds, min_expected)
        if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
            return 0.0, 0
        expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
        observed = table
    else:
        shares = np.asarray(reference, dtype=np.float64)
        exp = shares * window.sum()
        # Merge on a pseudo-table whose second row is the expectation; bins with zero expectation are floored.
        table = _merge(np.vstack([window, np.maximum(exp, 1e-9)]), kinds, min_expected)
        if table.shape[1] < 2:
            return 0.0, 0
        observed, expected = table[:1], table[1:]
    pos = observed > 0
    g = 2.0 * float(np.sum(observed[pos] * np.log(observed[pos] / expected[pos])))
    return max(g, 0.0), int(table.shape[1] - 1)


def bin_p_value(window: np.ndarray, reference: np.ndarray, min_count: float = 5.0) -> float:
    """The smallest p-value of a 2 x 2 G-test of each bin against the rest, Bonferroni-corrected for the bins
    tested: the omnibus test spreads a shift that sits in one bin (a rare category rising, consent withheld)
    over all its degrees of freedom; this one does not. Bins seen fewer than ``min_count`` times are skipped."""
    o, r = np.asarray(window, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    n, m = o.sum(), r.sum()
    test = (o + r) >= min_count
    if n == 0 or m == 0 or not test.any():
        return 1.0
    o, r = o[test], r[test]
    table = np.stack([o, n - o, r, m - r])  # cells of each bin's 2 x 2 table
    cols = np.stack([o + r, (n - o) + (m - r)])
    expected = np.stack([n * cols[0], n * cols[1], m * cols[0], m * cols[1]]) / (n + m)
    g = 2.0 * np.sum(xlogy(table, table) - xlogy(table, expected), axis=0)
    return float(min(1.0, chdtrc(1, np.maximum(g, 0.0)).min() * test.sum()))


def p_value(g: float, df: int) -> float:
    return 1.0 if df <= 0 else float(chdtrc(df, g))


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Adjusted p-values controlling the false-discovery rate over a family of tests."""
    p = np.asarray(p, dtype=np.float64)
    if p.size == 0:
        return p
    order = np.argsort(p, kind="stable")
    ranked = p[order] * p.size / np.arange(1, p.size + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty_like(p)
    out[order] = np.minimum(adjusted, 1.0)
    return out


# ---------------------------------------------------------------------------------------------------------
# Comparing a window with the reference


@dataclass(frozen=True)
class Window:
    """Scored applications to compare, one row each: application month, segments, and every subject's value
    (``withheld``: the subject's source was not consented to, for rows where it is missing)."""

    months: np.ndarray  # datetime64[M]
    segments: dict[str, np.ndarray]  # "region" -> labels, "industry" -> labels
    values: dict[str, np.ndarray]  # subject key -> values (NaN: missing)
    withheld: dict[str, np.ndarray] = field(default_factory=dict)  # subject key -> bool

    def __len__(self) -> int:
        return len(self.months)


@dataclass(frozen=True)
class BinShift:
    bin: str
    reference_share: float
    window_share: float
    psi_part: float


@dataclass(frozen=True)
class MonthDrift:
    month: str  # YYYY-MM
    applications: int
    season: str  # the reference cell compared with: "M10", "Q4" or "all"
    psi: float
    p_value: float | None  # None: fewer than min_window applications
    crossed: bool  # PSI >= psi_watch and p_value < alpha


@dataclass(frozen=True)
class SubjectDrift:
    subject: str
    kind: str
    segment: str
    status: str  # act | watch | stable | untested
    psi: float
    p_value: float  # season-stratified G-test, Benjamini-Hochberg adjusted over the report
    applications: int
    reference_rows: int | None
    season: str  # month | quarter | none (pooled)
    since: str | None  # first month whose own PSI crossed psi_watch (significantly), and most months after
    what_changed: tuple[BinShift, ...]
    by_month: tuple[MonthDrift, ...]
    bins: tuple[str, ...]
    reference_shares: tuple[float, ...]
    window_shares: tuple[float, ...]

    @property
    def flagged(self) -> bool:
        return self.status in ("act", "watch")


@dataclass(frozen=True)
class SegmentSummary:
    segment: str
    applications: int
    reference_rows: int | None
    season: str
    note: str | None


@dataclass(frozen=True)
class DriftReport:
    items: tuple[SubjectDrift, ...]  # flagged first (act, then watch), then by PSI
    segments: tuple[SegmentSummary, ...]
    months: tuple[str, ...]
    applications: int
    config: DriftConfig
    notes: tuple[str, ...] = ()

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for i in self.items if i.status == s) for s in STATUSES}


def segment_masks(window: Window, only: str | None = None) -> dict[str, np.ndarray]:
    """"all", then "region=R" and "industry=I" for every value in the window; ``only`` keeps "all", one
    dimension ("region") or one segment ("region=east")."""
    masks = {ALL: np.ones(len(window), dtype=bool)}
    for dim in SEGMENT_DIMENSIONS:
        if dim not in window.segments:
            continue
        labels = np.asarray(window.segments[dim]).astype(str)
        for value in sorted(set(labels)):
            masks[f"{dim}={value}"] = labels == value
    if only is None:
        return masks
    return {k: m for k, m in masks.items() if k == only or k.split("=")[0] == only}


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total else np.zeros(len(counts))


def compare(reference: ReferenceSet, window: Window, config: DriftConfig | None = None, *,
            segment: str | None = None, season_aware: bool = True) -> DriftReport:
    """Every subject of every segment of ``window`` against the reference (see the module docstring)."""
    config = config or DriftConfig()
    months = np.asarray(window.months).astype("datetime64[M]")
    month_keys, quarter_keys = season_keys(months)
    labels = [str(m) for m in months]
    raw: list[dict] = []
    summaries = []
    for seg, mask in segment_masks(window, segment).items():
        n = int(mask.sum())
        if not reference.has_segment(seg):
            why = reference.notes.get(seg, "no training rows of this segment")
            summaries.append(SegmentSummary(seg, n, None, "none", f"not compared: {why}"))
            continue
        rows = np.flatnonzero(mask)
        seg_months = sorted(set(months[rows].tolist()))
        season = reference.seasons.get(seg, "none") if season_aware else "none"
        ref_rows = reference.rows[seg][ALL] or None
        summaries.append(SegmentSummary(seg, n, ref_rows, season, reference.notes.get(seg)))
        month_rows = {m: rows[months[rows] == m] for m in seg_months}
        local = {m: np.flatnonzero(months[rows] == m) for m in seg_months}
        for key in reference.subjects:
            if key not in window.values:
                continue
            binning = reference.binnings[key]
            withheld = window.withheld.get(key)
            idx = binning.index(window.values[key][rows], None if withheld is None else withheld[rows])
            raw.append(_subject(reference, config, key, seg, idx, local, month_rows, month_keys, quarter_keys,
                                season, season_aware, ref_rows, binning))
    adjusted = benjamini_hochberg(np.array([r["p"] for r in raw]))
    items = []
    for r, p_adj in zip(raw, adjusted, strict=True):
        if r["n"] < config.min_window:
            status = "untested"
        elif r["psi"] >= config.psi_act and p_adj < config.alpha:
            status = "act"
        elif r["psi"] >= config.psi_watch and p_adj < config.alpha:
            status = "watch"
        else:
            status = "stable"
        kind, name = r["key"].split(":", 1)
        items.append(SubjectDrift(
            subject=name, kind=kind, segment=r["segment"], status=status, psi=r["psi"], p_value=float(p_adj),
            applications=r["n"], reference_rows=r["ref_rows"], season=r["season"],
            since=r["since"] if status in ("act", "watch") else None, what_changed=r["changed"],
            by_month=r["by_month"], bins=r["bins"], reference_shares=r["e"], window_shares=r["a"]))
    rank = {s: k for k, s in enumerate(STATUSES)}
    items.sort(key=lambda i: (rank[i.status], -i.psi, i.segment != ALL, i.segment, KINDS.index(i.kind), i.subject))
    notes = tuple(f"{k}: {v}" for k, v in reference.notes.items() if k == "reference")
    return DriftReport(tuple(items), tuple(summaries), tuple(sorted(set(labels))), len(window), config, notes)


def since_month(months: list[MonthDrift]) -> str | None:
    """The first month that crossed, from which most of the tested months crossed: an isolated noisy
    month long before a lasting shift does not date it."""
    tested = [m for m in months if m.p_value is not None]
    for k, m in enumerate(tested):
        if m.crossed and 2 * sum(x.crossed for x in tested[k:]) > len(tested) - k:
            return m.month
    return None


def _subject(reference: ReferenceSet, config: DriftConfig, key: str, seg: str, idx: np.ndarray,
             local: dict, month_rows: dict, month_keys: np.ndarray, quarter_keys: np.ndarray, season: str,
             season_aware: bool, ref_rows: int | None, binning: Binning) -> dict:
    nb, kinds = binning.n_bins, binning.kinds
    counts = np.bincount(idx, minlength=nb)
    n = int(counts.sum())
    mixed = np.zeros(nb)
    weights: dict[str, tuple[int, int]] = {}  # reference cell -> (window rows compared with it, its rows)
    by_month = []
    for m, pos in local.items():
        first = month_rows[m][0]
        ref, cell = reference.cell(key, seg, month_keys[first], quarter_keys[first], season_aware)
        mc = np.bincount(idx[pos], minlength=nb)
        e = _shares(ref)
        mixed += len(pos) * e
        weights[cell] = (weights.get(cell, (0, 0))[0] + len(pos), int(ref.sum()))
        month_psi = psi(e, _shares(mc), config.eps)
        p = None
        if len(pos) >= config.min_window:
            p = p_value(*g_statistic(mc, ref, kinds, counted=reference.counted, min_expected=config.min_expected))
        crossed = p is not None and month_psi >= config.psi_watch and p < config.alpha
        by_month.append(MonthDrift(str(m), len(pos), cell, round(month_psi, 6), p, crossed))
    since = since_month(by_month)
    e, a = mixed / max(n, 1), _shares(counts)
    # The window against the seasons' mixture: its sampling noise is that of a sample of Kish's effective size
    # 1 / sum(w_c^2 / n_c) (w_c: the window's share compared with cell c of n_c rows); one cell: exactly n_c.
    if reference.counted:
        n_eff = 1.0 / sum((w / max(n, 1)) ** 2 / max(rows, 1) for w, rows in weights.values())
        omnibus = p_value(*g_statistic(counts, e * n_eff, kinds, min_expected=config.min_expected))
        p_subject = min(1.0, 2 * min(omnibus, bin_p_value(counts, e * n_eff, config.min_expected)))
    else:
        p_subject = p_value(*g_statistic(counts, e, kinds, counted=False, min_expected=config.min_expected))
    parts = psi_parts(e, a, config.eps)
    names = binning.labels()
    top = np.argsort(-parts, kind="stable")[: config.what_changed]
    changed = tuple(BinShift(names[b], round(float(e[b]), 6), round(float(a[b]), 6), round(float(parts[b]), 6))
                    for b in top if parts[b] > 0)
    return {"key": key, "segment": seg, "n": n, "psi": round(float(parts.sum()), 6), "p": p_subject,
            "ref_rows": ref_rows, "season": season, "since": since, "changed": changed, "by_month": tuple(by_month),
            "bins": tuple(names), "e": tuple(round(float(x), 6) for x in e),
            "a": tuple(round(float(x), 6) for x in a)}
