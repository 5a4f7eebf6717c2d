"""Model shape: out-of-time AUC against serving cost (prediction and exact TreeSHAP for one row).

    .venv/bin/python benchmarks/bench_model_shape.py [--data DIR]

Every shape is trained on the same out-of-time split as `smecredit train` (default config otherwise), and
timed in the same run beside the baseline named in issue 3: 400 trees of 31 leaves, no early stopping.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.config import load_config  # noqa: E402
from training.dataset import from_folder  # noqa: E402
from training.fit import fit_lightgbm, lgb_params  # noqa: E402
from training.pipeline import augment_with_withheld_sources, out_of_time_split  # noqa: E402
from training.synth import SynthConfig, write  # noqa: E402

SHAPES = [  # (num_leaves, max_depth, learning_rate)
    (4, 2, 0.05), (7, 3, 0.03), (7, 3, 0.05), (7, 3, 0.1), (15, 4, 0.05), (15, 5, 0.05), (31, 6, 0.05),
    (31, -1, 0.05),
]


def per_row_us(fn, rows: np.ndarray, repeat: int = 300) -> float:
    for r in rows[:20]:
        fn(r[None, :])
    t0 = time.perf_counter()
    for k in range(repeat):
        fn(rows[k % len(rows)][None, :])
    return (time.perf_counter() - t0) / repeat * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "smecredit-bench" / "synth-20000")
    args = parser.parse_args()
    if not (args.data / "profile.parquet").exists():
        write(SynthConfig(entities=20_000, months=36, seed=7), args.data)
    cfg = load_config(None)
    ts = from_folder(args.data)
    split = out_of_time_split(ts, cfg)
    X, y = augment_with_withheld_sources(ts, split.train, cfg.source_masking_rate, cfg.seed)
    Xv, yv, Xt, yt = ts.X[split.valid], ts.y[split.valid], ts.X[split.test], ts.y[split.test]
    rows = Xt[:300]
    print("| shape | trees | OOT AUC | predict, 1 row | TreeSHAP, 1 row |")
    print("|---|---|---|---|---|")
    base_cfg = cfg.lightgbm.model_copy(update={"num_leaves": 31, "max_depth": -1, "num_boost_round": 400})
    base = lgb.train(lgb_params(base_cfg, seed=cfg.seed, monotone=ts.monotone),
                     lgb.Dataset(X, y, feature_name=list(ts.names), categorical_feature=ts.categorical,
                                 params={"verbose": -1}), num_boost_round=400)
    results = [("baseline: 400 trees x 31 leaves, no early stopping", base, 400)]
    for leaves, depth, lr in SHAPES:
        shape_cfg = cfg.lightgbm.model_copy(update={"num_leaves": leaves, "max_depth": depth, "learning_rate": lr})
        b = fit_lightgbm(shape_cfg, X, y, Xv, yv, names=ts.names, categorical=ts.categorical,
                         monotone=ts.monotone, seed=cfg.seed)
        results.append((f"{leaves} leaves, depth {depth}, rate {lr}", b, b.best_iteration))
    for label, b, trees in results:
        it = trees
        auc = roc_auc_score(yt, b.predict(Xt, raw_score=True, num_iteration=it))
        pred = per_row_us(lambda r, b=b, it=it: b.predict(r, raw_score=True, num_iteration=it, num_threads=1), rows)
        shap = per_row_us(lambda r, b=b, it=it: b.predict(r, pred_contrib=True, num_iteration=it, num_threads=1),
                          rows)
        print(f"| {label} | {trees} | {auc:.4f} | {pred:,.0f} µs | {shap:,.0f} µs |")


if __name__ == "__main__":
    main()
