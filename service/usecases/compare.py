"""Comparing a model with the champion, and proposing cut-offs, once for the CLI's train, promote and policy
commands (the computations are service/batch/compare.py).

Both run on the candidate's own out-of-time applications: those dated on or after the start of its test period
(recorded in its metadata) whose outcome is known, read from a contract data folder. A comparison is kept in
the registry (``comparisons/<version>.json``) so that promotion can show it later and store it with the event.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import numpy as np

from service.batch.compare import Decided, Targets, compare, decide_all, optimise
from service.scoring.bundle import load_bundle
from service.scoring.engine import Engine
from service.scoring.policy import Policy, PolicyError
from service.scoring.raw import RawData, load_folder
from service.scoring.registry import Registry

COMPARISONS = "comparisons"


class CompareError(ValueError):
    """Why a comparison or an optimisation cannot run (a message naming the option and the rule)."""


def out_of_time(raw: RawData, version: str, metadata: dict) -> tuple[RawData, np.ndarray]:
    """The applications of the model's test period with a known outcome, and those outcomes."""
    start = metadata.get("training", {}).get("split", {}).get("test_from")
    if not start:
        raise CompareError(f"model {version} records no out-of-time test period (trained without a date split)")
    apps = raw.applications
    if "defaulted_12m" not in apps:
        raise CompareError("--data: applications has no defaulted_12m column; comparing needs outcomes")
    rows = np.flatnonzero((apps["application_date"] >= np.datetime64(dt.date.fromisoformat(start)))
                          & ~np.isnan(apps["defaulted_12m"]))
    if not len(rows):
        raise CompareError(f"--data: no application with an outcome from {start} on (the model's test period)")
    return raw.select(rows), apps["defaulted_12m"][rows].astype(np.int64)


def _engine(registry: Registry, version: str) -> Engine:
    bundle = load_bundle(registry.path(version))
    if bundle.kind != "catalog":
        raise CompareError(f"model {version} is a '{bundle.kind}' model: only catalog models are decided by a "
                           "lender policy")
    return Engine(bundle)


def compare_with_champion(registry: Registry, version: str, data: Path | RawData, policy: Policy) -> dict | None:
    """``version`` against the current champion on ``version``'s out-of-time applications, kept in the registry.
    None when there is no other champion to compare with."""
    champion = registry.champion()
    if champion is None or champion == version:
        return None
    candidate = _engine(registry, version)
    raw, y = out_of_time(load_folder(data) if isinstance(data, Path) else data, version, candidate.bundle.metadata)
    result = {"version": version, "against": champion, "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              **compare(decide_all(candidate, raw, policy), decide_all(_engine(registry, champion), raw, policy), y,
                        policy)}
    folder = registry.root / COMPARISONS
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{version}.json").write_text(json.dumps(result, indent=1, sort_keys=True), encoding="utf-8")
    return result


def stored_comparison(registry: Registry, version: str) -> dict | None:
    """The last comparison of ``version``, if it was against the champion now in place."""
    path = registry.root / COMPARISONS / f"{version}.json"
    if not path.exists():
        return None
    result = json.loads(path.read_text(encoding="utf-8"))
    return result if result.get("against") == registry.champion() else None


def promotion_summary(result: dict) -> dict:
    """What the promotion event keeps of a comparison: the headline figures and the warnings."""
    keys = ("auc", "ks", "approval_rate", "straight_through", "approved_expected_bad_rate",
            "approved_observed_bad_rate")
    return {"against": result["against"], "policy": result["policy"], "applications": result["applications"],
            **{model: {k: result[model][k] for k in keys} for model in ("candidate", "champion")},
            "swap_set": result["swap_set"], "warnings": result["warnings"],
            "cut_offs_keeping_approval": result["cut_offs_keeping_approval"]}


def decided(registry: Registry, version: str, data: Path, policy: Policy) -> tuple[Decided, np.ndarray]:
    engine = _engine(registry, version)
    raw, y = out_of_time(load_folder(data), version, engine.bundle.metadata)
    return decide_all(engine, raw, policy), y


def propose_cut_offs(registry: Registry, version: str, data: Path, policy: Policy, targets: Targets) -> dict:
    d, y = decided(registry, version, data, policy)
    try:
        return {"model": version, **optimise(d, y, policy, targets)}
    except ValueError as exc:
        raise CompareError(str(exc)) from exc


_CUT_OFF = re.compile(r"^(\s*)(approve_min_score|refer_min_score|version)(\s*:\s*)(.*?)(\s*(#.*)?)$", re.M)


def policy_with_cut_offs(policy: Policy, approve: float, refer: float, version: str) -> str:
    """The policy's own YAML text (comments and all) with new cut-offs and version, checked by loading it."""
    values = {"approve_min_score": f"{approve:g}", "refer_min_score": f"{refer:g}", "version": json.dumps(version)}
    seen: set[str] = set()

    def replace(m: re.Match) -> str:
        key = m.group(2)
        if key == "version" and m.group(1):  # an indented "version:" belongs to another section
            return m.group(0)
        seen.add(key)
        return f"{m.group(1)}{key}{m.group(3)}{values[key]}{m.group(5)}"

    text = _CUT_OFF.sub(replace, policy.source_text)
    if seen != set(values):
        raise CompareError(f"--policy: could not find {', '.join(sorted(set(values) - seen))} in the policy file")
    try:
        new = Policy.from_yaml(text, source="the proposed policy")
    except PolicyError as exc:
        raise CompareError(str(exc)) from exc
    if (new.spec.cut_offs.approve_min_score, new.spec.cut_offs.refer_min_score) != (approve, refer):
        raise CompareError("--policy: the cut-offs are written in a form this command cannot rewrite")
    return text
