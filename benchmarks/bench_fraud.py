"""Fraud model benchmark: detection on the generator's planted rings, out of time, and the cost of scoring.

    .venv/bin/python benchmarks/bench_fraud.py [--entities 20000] [--data DIR] [--seed 7]

Trains the fraud model (training/fraud.py) on a synthetic folder and reports, on the latest 20% of
applications: detection rate, false-rejection rate, precision and AUC at the threshold chosen on the
validation part, per application and per ring; the same model trained without the graph features and without
the circular-invoicing feature beside it (what the graph adds), and the model's results for applicants who did
not consent to "links" (their related-party features missing); training time; and the time of one
application's fraud score (n=1, timeit over many calls) and of a batch. Prints markdown for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
import timeit
from pathlib import Path

import lightgbm as lgb
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import describe  # noqa: E402 - a sibling module (benchmarks/ is the script's directory)

from service.scoring.catalog import FEATURE_NAMES  # noqa: E402
from service.scoring.fraud import load_fraud_model  # noqa: E402
from training.fraud import FraudConfig, FraudSet, fraud_set, save, train_fraud  # noqa: E402
from training.synth import SynthConfig, write  # noqa: E402


def without(fs: FraudSet, names: list[str]) -> FraudSet:
    X = fs.X.copy()
    X[:, [FEATURE_NAMES.index(n) for n in names]] = np.nan
    return dataclasses.replace(fs, X=X)


def row(label: str, m: dict) -> str:
    return (f"| {label} | {m['ring_applications']} / {m['applications']} | {m['detection_rate']:.1%} | "
            f"{m['false_rejection_rate']:.2%} | {m['precision']:.1%} | {m['auc']:.4f} | "
            f"{m['rings_caught']} / {m['rings']} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entities", type=int, default=20_000)
    ap.add_argument("--data", type=Path, help="a synthetic folder with ground_truth_rings.parquet")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.data
        if folder is None:
            folder = Path(tmp) / "synth"
            write(SynthConfig(entities=args.entities, months=36, seed=args.seed), folder)
        cfg = FraudConfig(seed=args.seed)
        t0 = time.perf_counter()
        fs = fraud_set(folder)
        t_features = time.perf_counter() - t0
        t0 = time.perf_counter()
        trained = train_fraud(fs, cfg)
        t_train = time.perf_counter() - t0
        version = save(trained, Path(tmp) / "fraud")
        model = load_fraud_model(Path(tmp) / "fraud")
        graph = [n for n in FEATURE_NAMES if n.startswith("graph_")]
        ablations = {"without graph features": train_fraud(without(fs, graph), cfg).metrics["test"],
                     "without graph_circular_invoicing_share":
                         train_fraud(without(fs, ["graph_circular_invoicing_share"]), cfg).metrics["test"]}

        x1 = np.ascontiguousarray(fs.X[-1:])  # one application, as the service scores it
        calls = 20_000
        per_call = min(timeit.repeat(lambda: model.score(x1), number=calls, repeat=5)) / calls
        batch = min(timeit.repeat(lambda: model.score(fs.X), number=3, repeat=3)) / 3

    test, split = trained.metrics["test"], trained.metadata.split
    print(f"## Fraud model ({describe(f'lightgbm {lgb.__version__}', f'numpy {np.__version__}')})\n")
    print(f"{len(fs.y):,} applications of {folder.name}, {int(fs.y.sum())} from planted rings; trained before "
          f"{split['valid_from']}, threshold chosen on {split['valid_from']} .. {split['test_from']} for at most "
          f"{cfg.target_false_rejection:.0%} honest applications flagged (threshold "
          f"{trained.metadata.threshold:.4f}), tested from {split['test_from']} (out of time). Version {version}.\n")
    print("| model | ring / all applications (test) | detection | false rejections | precision | AUC | "
          "rings caught |")
    print("|---|---|---|---|---|---|---|")
    print(row("fraud model (catalogue + graph features)", test))
    print(row("the same model, applicants without links consent", trained.metrics["test_without_links"]))
    for label, m in ablations.items():
        print(row(label, m))
    print(f"\nRings with no application before the test period: {test['unseen_rings_caught']} of "
          f"{test['unseen_rings']} caught ({test['unseen_detection_rate']:.1%} of their applications).")
    top = ", ".join(f"{k} {v:.1%}" for k, v in list(trained.metrics["importance_gain"].items())[:4])
    print(f"Gain importance: {top}.\n")
    print(f"Features for every application {t_features:.1f} s; training with its evaluation {t_train:.2f} s "
          "(1 thread); "
          f"one application's fraud score {per_call * 1e6:.1f} µs (n=1, best of 5 x {calls:,} calls); "
          f"{len(fs.y):,} applications in {batch * 1e3:.1f} ms.")


if __name__ == "__main__":
    main()
