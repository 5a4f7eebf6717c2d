"""The cost of the explanation on top of the score, per request and in batch.

    .venv/bin/python benchmarks/bench_explain.py [--data DIR]

Baseline in the same run: the model's prediction alone (raw margin). Then exact TreeSHAP contributions
(pred_contrib, which also gives the margin), then the whole engine without and with the explanation parts
(reasons and re-scored recourse) for one applicant, and TreeSHAP over a batch.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.batch.chunks import build_all  # noqa: E402
from service.runtime import DEFAULT_POLICY  # noqa: E402
from service.scoring.bundle import load_bundle  # noqa: E402
from service.scoring.engine import Engine  # noqa: E402
from service.scoring.policy import load_policy  # noqa: E402
from service.scoring.raw import load_folder  # noqa: E402
from service.scoring.registry import Registry  # noqa: E402
from training.config import load_config  # noqa: E402
from training.dataset import from_folder  # noqa: E402
from training.pipeline import train  # noqa: E402
from training.synth import SynthConfig, write  # noqa: E402


def per_call_us(fn, calls: int) -> tuple[float, float]:
    times = []
    for k in range(calls):
        t0 = time.perf_counter()
        fn(k)
        times.append(time.perf_counter() - t0)
    a = np.array(times[20:]) * 1e6
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "smecredit-bench" / "synth-20000")
    args = parser.parse_args()
    if not (args.data / "profile.parquet").exists():
        write(SynthConfig(entities=20_000, months=36, seed=7), args.data)
    with tempfile.TemporaryDirectory() as tmp:
        version = train(from_folder(args.data), load_config(None), Registry(tmp)).version
        engine = Engine(load_bundle(Path(tmp) / version))
    policy = load_policy(DEFAULT_POLICY)
    data = load_folder(args.data)
    fm = build_all(data)
    X = fm.values
    rows = np.random.default_rng(0).choice(len(X), 600, replace=False)
    singles = [data.select(np.array([i])) for i in rows]
    b = engine.bundle
    lines = ["| step, one applicant | p50 | p99 |", "|---|---|---|"]
    for label, fn in (
        ("baseline: prediction only (raw margin)", lambda k: b.margin(X[rows[k]][None, :])),
        ("exact TreeSHAP (pred_contrib)", lambda k: b.contributions(X[rows[k]][None, :])),
        ("engine.score, all of it (features, TreeSHAP, policy, reasons, recourse)",
         lambda k: engine.score(singles[k], policy)),
    ):
        p50, p99 = per_call_us(fn, len(rows))
        lines.append(f"| {label} | {p50:,.0f} µs | {p99:,.0f} µs |")
    adverse = [k for k in range(len(rows)) if engine.score(singles[k], policy)[0].outcome.decision != "approve"]
    p50, p99 = per_call_us(lambda k: engine.score(singles[adverse[k % len(adverse)]], policy), len(rows))
    lines.append(f"| engine.score on refer/decline applicants only (reasons and recourse computed) | {p50:,.0f} µs "
                 f"| {p99:,.0f} µs |")
    lines += ["", "| batch of 20,000 rows | total | per row |", "|---|---|---|"]
    batch = X[:20_000]
    for label, fn in (("baseline: prediction only", lambda: b.booster.predict(batch, raw_score=True)),
                      ("exact TreeSHAP", lambda: b.booster.predict(batch, pred_contrib=True))):
        t0 = time.perf_counter()
        fn()
        total = time.perf_counter() - t0
        lines.append(f"| {label} | {total * 1e3:,.0f} ms | {total / len(batch) * 1e6:,.1f} µs |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
