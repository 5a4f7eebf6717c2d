"""The scorecard's bundle (``smecredit train --model scorecard``): scorecard.json, points.csv, iv.csv, metadata,
and a card that states only what was computed for the scorecard, beside the LightGBM model of the same run."""

from __future__ import annotations

import html
import json

import numpy as np

from service.scoring.bundle import (
    CARD_FILES,
    IV_FILE,
    METADATA_FILE,
    POINTS_FILE,
    SCORECARD_FILE,
    Canary,
    canonical_json,
    stable_numbers,
)
from service.scoring.score import Scorer
from service.scoring.scorecard import POINTS_COLUMNS, ScorecardModel, csv_text, points_table
from training import evaluate as ev
from training.scorecard import MIN_IV

IV_COLUMNS = ("feature", "iv", "characteristic", "why_not")
HOW_BUILT = ("optbinning: BinningProcess (optimal binning, at most {max_bins} bins per feature, monotonic in the "
             "catalogue's direction where it gives one, missing values in a bin of their own, characteristics with "
             "an information value of at least {min_iv}) and Scorecard (logistic regression on the WoE, "
             "characteristics with a wrong-signed coefficient dropped), on the LightGBM model's training rows; "
             "Platt calibration on the same validation data")


def scorecard_json(model: ScorecardModel) -> bytes:
    """Full-precision doubles (JSON keeps them exactly): the bins and WoE are the model, not a report."""
    return (json.dumps(model.to_json(), sort_keys=True, ensure_ascii=False, indent=1, allow_nan=False) + "\n"
            ).encode("utf-8")


def labels_of(features: list[dict]) -> dict[str, tuple[str, str]]:
    return {f["name"]: (f.get("label_en") or f["name"], f.get("label_zh") or f["name"]) for f in features}


def iv_rows(iv: dict[str, float], dropped: dict[str, str], features: list[dict]) -> list[dict]:
    return [{"feature": f["name"], "iv": iv.get(f["name"]), "characteristic": f["name"] not in dropped,
             "why_not": dropped.get(f["name"])} for f in features]


def monotone_checks(model: ScorecardModel, features: list[dict]) -> list[dict]:
    """For each characteristic with a catalogue direction: do its regular bins' WoE move the right way
    (risk rising with the value: WoE falling)? Computed on the saved bins, not assumed from the solver."""
    out = []
    for c in model.characteristics:
        direction = features[c.index].get("direction", 0)
        if c.kind != "numerical" or not direction:
            continue
        woe = np.array([b.woe for b in c.bins[:-1]])
        steps = np.diff(woe) * direction
        out.append({"feature": c.feature, "direction": direction, "held": bool((steps <= 1e-12).all())})
    return out


def scorecard_card(version: str, metadata: dict) -> tuple[dict, str]:
    """The card: every statement made from a value in ``metadata``."""
    m, lgbm, t = metadata["metrics"]["oot"], metadata["metrics"]["lightgbm_oot"], metadata["training"]
    where = "out of time" if t["split"].get("method") == "out_of_time" else "out of fold"
    checks = t["scorecard"]["monotone"]
    statements = [
        f"A scorecard: {t['characteristics']} characteristics of {len(metadata['features'])} features. Built with "
        + t["scorecard"]["how"] + ".",
        f"AUC {where}: scorecard {m['auc']:.4f}, LightGBM {lgbm['auc']:.4f} on the same rows "
        f"({'the scorecard is at least as good' if m['auc'] >= lgbm['auc'] else 'LightGBM is better'}).",
        (f"Monotone binning held for all {len(checks)} characteristics with a catalogue direction."
         if all(c["held"] for c in checks) else
         "Monotone binning NOT held for: " + ", ".join(c["feature"] for c in checks if not c["held"]) + ".")
        if checks else "No characteristic has a catalogue direction: no monotone binning was asked for.",
        "Reasons are the points lost below each characteristic's best bin (the adverse-action method).",
    ]
    flags = [False, False, bool(checks) and not all(c["held"] for c in checks), False]
    card = {"version": version, "model_type": "scorecard", "metrics": {"scorecard": m, "lightgbm": lgbm},
            "training": {"characteristics": t["characteristics"], "split": t["split"]},
            "statements": [{"topic": "scorecard", "text": s, "flag": f} for s, f in zip(statements, flags,
                                                                                        strict=True)]}
    items = "".join(f"<li>{'! ' if f else ''}{html.escape(s)}</li>" for s, f in zip(statements, flags, strict=True))
    rows = "".join(f"<tr><td>{html.escape(r['feature'])}</td><td>{html.escape(r['bin'])}</td><td>{r['count']}</td>"
                   f"<td>{r['woe']:.4f}</td><td>{r['points']:.2f}</td><td>{r['points_lost']:.2f}</td></tr>"
                   for r in metadata["points_preview"])
    page = (f"<!doctype html><html lang='en'><meta charset='utf-8'><title>Scorecard {version}</title>"
            f"<h1>Scorecard {version}</h1><ul>{items}</ul><h2>Points table</h2><table><tr><th>feature</th>"
            f"<th>bin</th><th>count</th><th>WoE</th><th>points</th><th>points lost</th></tr>{rows}</table></html>\n")
    return card, page


def scorecard_files(ts, cfg, f, scorer: Scorer, lightgbm_report: dict, reference: dict,  # noqa: ANN001
                    common: dict) -> tuple[dict[str, bytes], dict, dict]:
    """Every file of the scorecard's bundle, its metadata and card. ``f`` is the pipeline's ``Fitted``,
    ``common`` the metadata entries shared with a LightGBM bundle (features, inputs, data, config...)."""
    from service.scoring.bundle import sha256_bytes, version_of

    fitted = f.challenger
    model_bytes = scorecard_json(fitted.model)
    model = ScorecardModel.from_json(json.loads(model_bytes))  # what the service will parse
    idx = np.unique(np.linspace(0, len(ts.y) - 1, 4).astype(int))
    canary = Canary.of(model, np.vstack([ts.X[idx], np.full((1, ts.X.shape[1]), np.nan)]))
    test_pd = f.challenger_test_pd
    valid_pd = scorer.calibration.pd(model.margin(ts.X[f.valid_rows]))
    drop = {"calibration_by_decile"}
    scorer = Scorer.from_json(stable_numbers(scorer.to_json()))  # as metadata.json stores it, and the service reads
    table = points_table(model, scorer, labels_of(ts.features))
    metadata = {"canary": canary.to_json()} | stable_numbers(common | {
        "model_type": "scorecard",
        "scorer": scorer.to_json(),
        "metrics": {"oot": {k: v for k, v in ev.binary_metrics(ts.y[f.test_rows], test_pd).items() if k not in drop},
                    "valid": {k: v for k, v in ev.binary_metrics(ts.y[f.valid_rows], valid_pd).items()
                              if k not in drop},
                    "lightgbm_oot": {k: v for k, v in lightgbm_report["oot"].items() if k not in drop}},
        "reference": reference,
        "training": {"trees": 0, "characteristics": len(model.characteristics), "split": f.split,
                     "scorecard": {"how": HOW_BUILT.format(max_bins=cfg.challenger_bins, min_iv=MIN_IV),
                                   "dropped": fitted.dropped, "monotone": monotone_checks(model, ts.features)},
                     "source_masking_rate": cfg.source_masking_rate},
        "points_preview": [{k: r[k] for k in ("feature", "bin", "count", "woe", "points", "points_lost")}
                           for r in table],
    })
    files = {SCORECARD_FILE: model_bytes, POINTS_FILE: csv_text(POINTS_COLUMNS, table).encode("utf-8"),
             IV_FILE: csv_text(IV_COLUMNS, iv_rows(fitted.iv, fitted.dropped, ts.features)).encode("utf-8"),
             METADATA_FILE: canonical_json(metadata)}
    version = version_of(sha256_bytes(model_bytes), sha256_bytes(files[METADATA_FILE]))
    card_json, card_html = scorecard_card(version, metadata)
    files |= {CARD_FILES[0]: card_html.encode("utf-8"), CARD_FILES[1]: canonical_json(card_json)}
    return files, metadata, card_json
