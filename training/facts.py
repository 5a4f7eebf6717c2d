"""What a model card says, in one place: the facts (numbers computed by the pipeline) and the statements made
from them. The HTML card, model_card.json and the CLI summary all read the same facts and the same statements,
so none of them can say what the others do not, and each statement exists only when the value behind it was
computed: "constraints held" needs constraints and a check, "fairness flags: none" needs a fairness check.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from training.protected import protected_reason

INTENDED_USE = (
    "Estimate the probability that a small or micro enterprise applying for a working-capital or "
    "equipment loan becomes 90+ days past due within 12 months, from its operating data (tax filings and "
    "invoices, payment flows, electricity, social insurance, optional bureau data), to support an automated "
    "decision that a lender's policy completes and a human can review."
)
TABLE_USE = "A bring-your-own-table model: intended use as stated by the risk team that trained it."
LIMITATIONS = [
    "Trained and tested on the data fingerprinted below; performance elsewhere must be re-validated out of time.",
    "Outcomes of declined applicants are unobserved (selection bias); reject inference is not applied.",
]
PSI_WATCH = 0.1  # a feature's PSI above this is worth watching
PSI_SHIFTED = 0.25  # above this the feature has shifted
THIN_FILES = "Thin files (few months or sources) get wider uncertainty; see robustness to withheld sources."


@dataclass(frozen=True)
class Statement:
    topic: str  # inputs, fairness, monotone, shape, challenger, calibration, stability, explanations
    text: str
    flag: bool = False  # True: a reader must look (a violation, a protected input, a check that could not run)


def card_facts(version: str, metadata: dict, report: dict) -> dict:
    """The card's numbers, from the bundle's metadata and the pipeline's report (model_card.json)."""
    kind = metadata["kind"]
    facts = {
        "version": version,
        "kind": kind,
        "target": metadata["target"],
        "intended_use": INTENDED_USE if kind == "catalog" else TABLE_USE,
        "limitations": LIMITATIONS + ([THIN_FILES] if kind == "catalog" else []),
        "data": metadata["data"],
        "split": metadata["training"]["split"],
        "training": {k: v for k, v in metadata["training"].items() if k != "split"},
        "inputs": metadata["inputs"],
        "scorer": metadata["scorer"],
        "approval_cutoff": report["approval_cutoff"],
        "fairness_min_ratio": metadata["config"]["fairness_min_ratio"],
        "metrics": {"lightgbm": report["oot"], "challenger": report["challenger_oot"], "validation": report["valid"]},
        "champion_beats_challenger": report["champion_beats_challenger"],
        "psi": report["psi"],
        "monotone": report["monotone"],
        "monotone_all_held": report["monotone_all_held"],
        "segments": report["segments"],
        "fairness": report["fairness"],
        "robustness": report["robustness"],
        "importance": report["importance"],
        "libraries": metadata["libraries"],
        "seed": metadata["seed"],
    }
    return facts | {"statements": [asdict(s) for s in statements(facts)]}


def _names(names: list[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def input_statements(facts: dict) -> list[Statement]:
    inputs = facts["inputs"]
    protected = inputs["protected"]
    out = []
    for p in protected:
        if p["input"]:
            out.append(Statement("inputs", f"'{p['name']}' ({p['why']}) is a model input, allowed by the risk team: "
                                           f"{inputs['allow_protected']}", flag=True))
        else:
            out.append(Statement("inputs", f"'{p['name']}' ({p['why']}) is not a model input; it is used only for "
                                           "the fairness checks."))
    # The check behind "not a model input": every input's name, read again by the detector.
    looks = [n for n in inputs["features"] if protected_reason(n) and n not in {p["name"] for p in protected}]
    if looks:
        out.append(Statement("inputs", f"Model inputs whose names suggest a protected attribute: {_names(looks)}.",
                             flag=True))
    if not protected:
        out.append(Statement("inputs", f"No protected attribute was found by name among the {inputs['columns']} "
                                       "columns, and none was declared (--protected).", flag=True))
    if inputs["excluded"]:
        out.append(Statement("inputs", f"Left out by the risk team (--exclude): {_names(inputs['excluded'])}."))
    return out


def fairness_statements(facts: dict) -> list[Statement]:
    fairness = facts["fairness"]
    if not fairness:
        return [Statement("fairness", "Fairness was not assessed: the data has no protected attribute to "
                                      "compare groups on.", flag=True)]
    cutoff = facts["approval_cutoff"]
    out = [Statement("fairness", f"Approval rates are compared at PD < {cutoff['pd']:.4g}: {cutoff['rule']}.")]
    for name, f in fairness.items():
        rated = [g for g in f["groups"] if g["n"]]
        low = min(rated, key=lambda g: g["approval_rate"])
        high = max(rated, key=lambda g: g["approval_rate"])
        verdict = "FLAGGED: under the four-fifths rule" if f["flagged"] else "within the four-fifths rule"
        out.append(Statement(
            "fairness", f"'{name}': approval at PD < {facts['approval_cutoff']['pd']:.4g} ranges from "
                        f"{low['approval_rate']:.1%} ('{low['group']}') to {high['approval_rate']:.1%} "
                        f"('{high['group']}'), ratio {f['approval_rate_ratio']:.3f} "
                        f"(minimum {facts['fairness_min_ratio']:g}): {verdict}.", flag=f["flagged"]))
    flagged = [n for n, f in fairness.items() if f["flagged"]]
    out.append(Statement("fairness", f"Fairness flags: {_names(flagged) if flagged else 'none'} (assessed on "
                                     f"{_names(list(fairness))}).", flag=bool(flagged)))
    return out


def monotone_statements(facts: dict) -> list[Statement]:
    checks = facts["monotone"]
    if not checks:
        return [Statement("monotone", "No monotone constraints were set.")]
    broken = [m for m in checks if not m["held"]]
    swept = [m for m in checks if m["rows_checked"]]
    if broken:
        return [Statement("monotone", "Monotone constraints VIOLATED: " + ", ".join(
            f"'{m['feature']}' in {m['violations']} of {m['rows_checked']} rows" for m in broken) + ".", flag=True)]
    rows = max((m["rows_checked"] for m in swept), default=0)
    text = f"All {len(checks)} monotone constraints held on the fitted model"
    if len(swept) < len(checks):
        text += f" ({len(checks) - len(swept)} could not be swept: fewer than two distinct values)"
    return [Statement("monotone", f"{text}; each was swept over its observed range for {rows} sample rows.")]


def shape_statements(facts: dict) -> list[Statement]:
    shape = facts["training"]["shape"]
    chosen = next(c for c in shape["candidates"] if c["name"] == shape["chosen"])
    cost = f"{chosen['trees']} trees, {chosen['leaves']} leaves in all"
    if shape["method"] == "configured":
        return [Statement("shape", f"The configured shape was used ({chosen['num_leaves']} leaves, depth "
                                   f"{chosen['max_depth']}; {cost}); no other shape was tried.")]
    return [Statement("shape", f"Shape chosen by {shape['method']} on {shape['selected_on']}: "
                               f"{shape['chosen']} (validation AUC {chosen['valid_auc']:.4f}; {cost}) among "
                               f"{len(shape['candidates'])} candidates.")]


def challenger_statements(facts: dict) -> list[Statement]:
    lgbm, challenger = facts["metrics"]["lightgbm"]["auc"], facts["metrics"]["challenger"]["auc"]
    where = "out of time" if facts["split"]["method"] == "out_of_time" else "out of fold"
    built = (" The challenger is optbinning's scorecard (monotone WoE bins with a missing bin, logistic "
             "regression) on the same training rows; smecredit train --model scorecard registers it.")
    if facts["champion_beats_challenger"]:
        return [Statement("challenger", f"LightGBM beats the scorecard challenger {where}: AUC {lgbm:.4f} "
                                        f"against {challenger:.4f}." + built)]
    return [Statement("challenger", f"The scorecard challenger is at least as good {where}: AUC {challenger:.4f} "
                                    f"against LightGBM's {lgbm:.4f}." + built, flag=True)]


def calibration_statements(facts: dict) -> list[Statement]:
    m = facts["metrics"]["lightgbm"]
    on = "the validation period" if facts["split"]["method"] == "out_of_time" else "the out-of-fold predictions"
    return [Statement("calibration", f"Calibrated (Platt) on {on}; on the evaluation rows the mean PD is "
                                     f"{m['mean_pd']:.4f} against an observed default rate of "
                                     f"{m['default_rate']:.4f}. Recalibrate when the default rate drifts.")]


def stability_statements(facts: dict) -> list[Statement]:
    psi = facts["psi"]
    if "score" not in psi:
        return [Statement("stability", f"Stability was not measured: {psi['note']}.")]
    shifted = [k for k, v in psi["features"].items() if v > PSI_SHIFTED]
    watch = [k for k, v in psi["features"].items() if PSI_WATCH < v <= PSI_SHIFTED]
    text = f"Score PSI between training and test {psi['score']:.4f}"
    if shifted:
        text += f"; features shifted (PSI > {PSI_SHIFTED:g}): {_names(shifted)}"
    if watch:
        text += f"; features to watch (PSI > {PSI_WATCH:g}): {_names(watch)}"
    if not shifted and not watch:
        text += f"; no feature PSI above {PSI_WATCH:g}"
    return [Statement("stability", text + ".", flag=psi["score"] > PSI_SHIFTED or bool(shifted))]


def explanation_statements(facts: dict) -> list[Statement]:
    check = facts["importance"]["shap_cross_check"]
    if "max_abs_difference" not in check:
        return [Statement("explanations", f"The cross-check against the shap package could not run: "
                                          f"{check['error']}.", flag=True)]
    diff = check["max_abs_difference"]
    return [Statement("explanations", f"TreeSHAP contributions agree with the shap package to {diff:.1e} on "
                                      f"{check['rows']} rows.", flag=diff > 1e-6)]


def statements(facts: dict) -> list[Statement]:
    """Every sentence the card and the CLI summary make, each from a value in ``facts``."""
    return [*input_statements(facts), *fairness_statements(facts), *monotone_statements(facts),
            *shape_statements(facts), *challenger_statements(facts), *calibration_statements(facts),
            *stability_statements(facts), *explanation_statements(facts)]
