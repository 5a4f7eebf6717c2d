"""The scorecard: optbinning's optimal binning and WoE, a logistic regression, saved as data (never pickled).

``fit_scorecard`` bins every feature with optbinning's ``BinningProcess`` (monotonic in the catalogue's
direction where it gives one: risk rising with the value is an ascending default rate; missing values in a bin
of their own, with their own WoE), keeps the characteristics with an information value of at least ``MIN_IV``,
fits optbinning's ``Scorecard`` (a logistic regression on the WoE) and drops, one refit at a time, any
characteristic whose coefficient has the wrong sign (a higher WoE, i.e. a safer bin, must lower the log-odds of
default): its points would otherwise reward risk. The result is a ``service.scoring.scorecard.ScorecardModel``,
which the service scores with numpy alone, plus optbinning's detailed table for the reports.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from optbinning import BinningProcess, Scorecard
from optbinning.binning.transformations import transform_event_rate_to_woe
from sklearn.linear_model import LogisticRegression

from service.scoring.scorecard import Bin, Characteristic, ScorecardModel

log = logging.getLogger(__name__)
MIN_IV = 0.02  # below it a characteristic is "not predictive" by the usual scorecard convention
C = 1.0  # logistic regression's inverse L2 penalty; WoE inputs are on one scale, so one value fits all
TREND = {1: "ascending", -1: "descending"}  # catalogue direction -> optbinning's default-rate trend


@dataclass(frozen=True)
class FittedScorecard:
    model: ScorecardModel
    table: pd.DataFrame  # optbinning's Scorecard.table(style="detailed") of the final fit
    optbinning: Scorecard  # the fitted optbinning object, in memory only (tests check the model against it)
    iv: dict[str, float]  # every feature's information value, kept or not
    dropped: dict[str, str]  # feature -> why it is not a characteristic


def fit_scorecard(X: np.ndarray, y: np.ndarray, features: list[dict], *, max_bins: int,
                  seed: int) -> FittedScorecard:
    """``features`` as in ``TrainingSet.features`` (name, internal name, categories, direction)."""
    if X.ndim != 2 or X.shape[1] != len(features) or len(X) != len(y):
        raise ValueError(f"X must be 2-D with one column per feature and one row per label; got X {X.shape}, "
                         f"{len(features)} features, y {y.shape}")
    if set(np.unique(y).tolist()) - {0, 1}:
        raise ValueError("y must be 0/1")
    keys = [f["internal"] for f in features]  # optbinning wants plain column names; a table's may be anything
    frame = pd.DataFrame(X, columns=keys)
    categorical = [k for k, f in zip(keys, features, strict=True) if f["categories"]]
    params = {k: {"monotonic_trend": TREND[f["direction"]]} for k, f in zip(keys, features, strict=True)
              if not f["categories"] and f["direction"] in TREND}

    def process(names: list[str]) -> BinningProcess:
        return BinningProcess(names, categorical_variables=[k for k in categorical if k in names],
                              max_n_bins=max_bins, binning_fit_params={k: params[k] for k in names if k in params},
                              selection_criteria={"iv": {"min": MIN_IV}})

    def regression() -> LogisticRegression:
        return LogisticRegression(C=C, max_iter=1000, random_state=seed)

    with warnings.catch_warnings():  # optbinning warns about pandas features it uses that pandas deprecates
        warnings.filterwarnings("ignore", module="optbinning")
        # Bin once to choose the characteristics (a feature's bins do not depend on the others), then fit the
        # Scorecard on them: re-binning for every wrong-signed coefficient cost seconds each.
        # A feature with no value at all (its source absent from the data: no link files, say) cannot be binned.
        present = [k for j, k in enumerate(keys) if not np.isnan(X[:, j]).all()]
        first = process(present)
        woe = first.fit_transform(frame[present], y, metric_missing="empirical", metric_special="empirical")
        summary = first.summary()
        iv = dict.fromkeys(keys, 0.0) | {k: float(v) for k, v in zip(summary["name"], summary["iv"], strict=True)}
        kept = list(first.get_support(names=True))
        dropped = {k: "no values in the training data" if k not in present else
                   f"information value {iv[k]:.4f} < {MIN_IV}" for k in keys if k not in kept}
        while kept:
            coefficients = dict(zip(kept, regression().fit(woe[kept], y).coef_.ravel().tolist(), strict=True))
            worst = max(kept, key=lambda k: coefficients[k])
            if coefficients[worst] <= 0:
                break
            dropped[worst] = f"coefficient {coefficients[worst]:+.4f}: a safer bin would score lower"
            kept.remove(worst)
        if not kept:
            raise ValueError(f"scorecard: no feature has an information value of at least {MIN_IV} and a "
                             "coefficient of the right sign")
        card = Scorecard(process(kept), regression(), scaling_method=None)
        card.fit(frame[kept], y, metric_missing="empirical", metric_special="empirical")
    selected = list(card.binning_process_.get_support(names=True))
    coefficients = dict(zip(selected, card.estimator_.coef_.ravel().tolist(), strict=True))
    if selected != kept or any(c > 0 for c in coefficients.values()):
        raise ValueError(f"scorecard: the final fit differs from the selection (kept {kept}, fitted {coefficients})")
    name_of = {f["internal"]: f["name"] for f in features}
    index_of = {k: j for j, k in enumerate(keys)}
    characteristics = tuple(
        _characteristic(card.binning_process_.get_binned_variable(k), features[index_of[k]], index_of[k],
                        coefficients[k], iv[k])
        for k in sorted(coefficients, key=index_of.__getitem__))
    model = ScorecardModel(tuple(f["name"] for f in features), float(card.estimator_.intercept_[0]),
                           characteristics)
    log.info("scorecard: %d characteristics of %d features (%d dropped)", len(characteristics), len(features),
             len(dropped))
    return FittedScorecard(model, card.table(style="detailed"), card, {name_of[k]: v for k, v in iv.items()},
                           {name_of[k]: why for k, why in dropped.items()})


def _woe(events: np.ndarray, non_events: np.ndarray) -> tuple[np.ndarray, float]:
    """WoE of each bin and of an unseen category, exactly as optbinning's transform computes them (with
    ``metric_missing="empirical"``): ln(share of non-defaults / share of defaults), 0 for a pure or empty bin."""
    total_e, total_ne = events.sum(), non_events.sum()
    records = events + non_events
    woe = np.zeros(len(records))
    ok = (events > 0) & (non_events > 0)
    woe[ok] = transform_event_rate_to_woe(events[ok] / records[ok], total_ne, total_e)
    return woe, float(transform_event_rate_to_woe(total_e / records.sum(), total_ne, total_e))


def _characteristic(optb: object, feature: dict, index: int, coefficient: float, iv: float) -> Characteristic:
    table = optb.binning_table  # regular bins, then optbinning's "Special" (we have no special codes), "Missing"
    events, non_events = np.asarray(table.n_event), np.asarray(table.n_nonevent)
    if events[-2] or non_events[-2]:
        raise ValueError(f"{feature['name']}: rows in optbinning's special bin, but no special codes were given")
    keep = np.r_[np.arange(len(events) - 2), len(events) - 1]  # drop the (empty) special bin
    all_woe, unknown = _woe(events, non_events)
    woe, events, counts = all_woe[keep], events[keep], (events + non_events)[keep]
    if feature["categories"]:
        groups = tuple(tuple(float(c) for c in g) for g in optb.splits)
        labels = [", ".join(_category(feature, c) for c in g) for g in groups]
        splits: tuple[float, ...] = ()
    else:
        splits = tuple(float(s) for s in optb.splits)
        edges = ["-inf", *(f"{s:.6g}" for s in splits), "inf"]
        labels = [f"[{lo}, {hi})" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
        labels[0] = "(" + labels[0][1:]
        groups = ()
    bins = tuple(Bin(label, float(w), int(n), int(e)) for label, w, n, e in
                 zip([*labels, "Missing"], woe, counts, events, strict=True))
    return Characteristic(feature["name"], index, "categorical" if feature["categories"] else "numerical", splits,
                          groups, bins, unknown if feature["categories"] else 0.0, float(coefficient), float(iv))


def _category(feature: dict, code: float) -> str:
    categories = feature["categories"]
    return str(categories[int(code)]) if float(code).is_integer() and 0 <= code < len(categories) else f"{code:g}"
