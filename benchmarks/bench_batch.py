"""Batch scoring with explanations, per core: what `smecredit score` does, phase by phase, in one process.

    .venv/bin/python benchmarks/bench_batch.py [--sizes 100000 1000000] [--root DIR] [--model BUNDLE_DIR]

For each size: a synthetic folder of that many firms x 36 months (seed 7; generated under --root when missing),
then the steps of ``service.batch.score.score_folder`` plus the write of the `score` command, each timed in wall
and CPU seconds: load and validate the files (the I/O floor every pipeline pays: the baseline), features
(``build_all``), the engine (``Engine.score``: exact TreeSHAP, PD, score, grade, policy, reasons and re-scored
recourse for every refer and decline), the result table and its Parquet file. LightGBM runs single-threaded
(``Bundle`` passes num_threads=1) and numpy calls no BLAS here, so the engine uses one core; reading Parquet
uses Arrow's thread pool. The model: --model, else one trained on 20,000 firms (seed 7). Prints markdown.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import lightgbm
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import describe  # noqa: E402 - a sibling module (benchmarks/ is the script's directory)

from service.batch.chunks import build_all  # noqa: E402
from service.batch.features import write_table  # noqa: E402
from service.batch.scored import scored_table  # noqa: E402
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


def machine() -> str:
    return describe(f"numpy {np.__version__}", f"LightGBM {lightgbm.__version__}")


class Clock:
    """Wall and process CPU seconds of each phase."""

    def __init__(self) -> None:
        self.phases: dict[str, tuple[float, float]] = {}

    def run(self, name: str, fn, *args: object, **kwargs: object) -> object:  # noqa: ANN001
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn(*args, **kwargs)
        self.phases[name] = (time.perf_counter() - wall, time.process_time() - cpu)
        return result


def bench_size(firms: int, root: Path, engine: Engine) -> list[str]:
    folder = root / f"synth-{firms}"
    if not (folder / "profile.parquet").exists():
        write(SynthConfig(entities=firms, months=36, seed=7), folder)
    policy = load_policy(DEFAULT_POLICY)
    clock = Clock()
    data = clock.run("load + validate (baseline)", load_folder, folder)
    fm = clock.run("features", build_all, data)
    scored = clock.run("engine: TreeSHAP, PD, policy, reasons, recourse", engine.score, data, policy, fm=fm)
    table = clock.run("result table", scored_table, data, engine.version, scored)
    with tempfile.TemporaryDirectory() as tmp:
        clock.run("write Parquet", write_table, table, Path(tmp) / "scores.parquet")
    n = len(scored)
    decisions = Counter(s.outcome.decision for s in scored)
    explained = decisions["refer"] + decisions["decline"]
    lines = [f"**{firms:,} firms x 36 months: {n:,} applications** ({decisions['approve']:,} approve, "
             f"{decisions['refer']:,} refer, {decisions['decline']:,} decline; {explained:,} with reasons and "
             f"recourse)", "", "| phase | wall | CPU | applications/s (wall) |", "|---|---|---|---|"]
    for name, (wall, cpu) in clock.phases.items():
        lines.append(f"| {name} | {wall:.1f} s | {cpu:.1f} s | {n / wall:,.0f} |")
    wall = sum(w for w, _ in clock.phases.values())
    cpu = sum(c for _, c in clock.phases.values())
    after_load = [(w, c) for name, (w, c) in clock.phases.items() if not name.startswith("load")]
    lines.append(f"| **all (the `score` command's work)** | **{wall:.1f} s** | **{cpu:.1f} s** | "
                 f"**{n / wall:,.0f}** |")
    lines.append(f"| all but the load | {sum(w for w, _ in after_load):.1f} s | {sum(c for _, c in after_load):.1f} s"
                 f" | {n / sum(w for w, _ in after_load):,.0f} |")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    lines += ["", f"Per core: {n / cpu:,.0f} applications per CPU-second over all phases, "
                  f"{n / wall:,.0f} per wall second in one process; peak RSS {peak:.1f} GiB.", ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "smecredit-bench")
    parser.add_argument("--model", type=Path, help="a bundle folder (default: train one on 20,000 firms)")
    args = parser.parse_args()
    if args.model is None:
        train_folder = args.root / "synth-20000"
        if not (train_folder / "profile.parquet").exists():
            write(SynthConfig(entities=20_000, months=36, seed=7), train_folder)
        with tempfile.TemporaryDirectory() as tmp:
            version = train(from_folder(train_folder), load_config(None), Registry(tmp)).version
            engine = Engine(load_bundle(Path(tmp) / version))
    else:
        engine = Engine(load_bundle(args.model))
    out = ["## Engine: batch scoring", "",
           f"Command: `.venv/bin/python benchmarks/bench_batch.py --sizes {' '.join(map(str, args.sizes))}`",
           f"Date: {dt.date.today().isoformat()}. Machine: {machine()}. Model {engine.version} "
           f"({engine.bundle.booster.num_trees()} trees); LightGBM num_threads=1.", ""]
    for firms in args.sizes:
        out += bench_size(firms, args.root, engine)
    print("\n".join(out))


if __name__ == "__main__":
    main()
