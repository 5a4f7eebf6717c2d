"""Feature benchmarks: batch throughput and one applicant's latency, each beside a baseline from the same run.

    .venv/bin/python benchmarks/bench_features.py [--sizes 20000 100000] [--synth-1m]

Baselines: for batch, reading and validating the files (the I/O floor every pipeline pays); for one applicant,
the obvious pandas implementation (filter the records, pivot the window) of three payment features, which is
what the hot path must not do. Prints markdown for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import describe  # noqa: E402 - a sibling module (benchmarks/ is the script's directory)

from service.batch.chunks import build_all  # noqa: E402
from service.scoring.features import build_features  # noqa: E402
from service.scoring.raw import RawData, load_folder  # noqa: E402
from training.synth import SynthConfig, write  # noqa: E402


def machine() -> str:
    return describe(f"numpy {np.__version__}", f"pandas {pd.__version__}")


def pandas_baseline(pay: pd.DataFrame, enterprise_id: str, date: np.datetime64) -> tuple[float, float, float]:
    """The obvious implementation: filter, window, pivot, compute; three payment features."""
    first = pd.Timestamp(date).to_period("M").to_timestamp()
    window = pay[(pay.enterprise_id == enterprise_id) & (pay.month < first)
                 & (pay.month >= first - pd.DateOffset(months=24))]
    series = window.set_index("month")["inflow"].reindex(pd.date_range(end=first - pd.DateOffset(months=1),
                                                                       periods=24, freq="MS"))
    last3 = series.iloc[-3:]
    return last3.mean(), last3.std(ddof=0) / last3.mean(), series.iloc[-12:].mean()


def percentiles(samples: list[float]) -> tuple[float, float]:
    a = np.array(samples) * 1e6
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def bench_size(entities: int, root: Path) -> list[str]:
    folder = root / f"synth-{entities}"
    if not (folder / "profile.parquet").exists():
        write(SynthConfig(entities=entities, months=36, seed=7), folder)
    t0 = time.perf_counter()
    data = load_folder(folder)
    t_load = time.perf_counter() - t0
    n_apps = len(data.applications["application_id"])
    t0 = time.perf_counter()
    build_all(data)
    t_feat = time.perf_counter() - t0
    return [f"| {entities:,} x 36 | {n_apps:,} | {t_load:.2f} s | {t_feat:.2f} s | {n_apps / t_feat:,.0f} |"]


def bench_single(data: RawData, folder: Path, samples: int = 2000) -> list[str]:
    rng = np.random.default_rng(0)
    rows = rng.choice(len(data.applications["application_id"]), size=samples)
    singles = [data.select(np.array([i])) for i in rows]
    for s in singles[:50]:
        build_features(s)  # warm-up
    ours = []
    for s in singles:
        t0 = time.perf_counter()
        build_features(s)
        ours.append(time.perf_counter() - t0)
    pay = pd.read_parquet(folder / "payments.parquet")
    pay["month"] = pd.to_datetime(pay["month"])
    base = []
    for i in rows[:300]:
        ent, date = data.applications["enterprise_id"][i], data.applications["application_date"][i]
        t0 = time.perf_counter()
        pandas_baseline(pay, ent, date)
        base.append(time.perf_counter() - t0)
    (o50, o99), (b50, b99) = percentiles(ours), percentiles(base)
    return [
        "| path | features | p50 | p99 |",
        "|---|---|---|---|",
        f"| `build_features`, one applicant, all sources | 58 | {o50:,.0f} µs | {o99:,.0f} µs |",
        f"| baseline: pandas filter + pivot over the payments file | 3 | {b50:,.0f} µs | {b99:,.0f} µs |",
    ]


def bench_synth_1m(root: Path) -> list[str]:
    out = root / "synth-1m"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "service.cli", "synth", "--entities", "1000000", "--months", "24",  # noqa: S603 (fixed argv)
                    "--out", str(out)], check=True, capture_output=True)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    size = sum(p.stat().st_size for p in out.glob("*.parquet")) / 2**30
    return [f"| synth 1,000,000 x 24 months | {wall:.0f} s | {peak:.2f} GiB | {size:.2f} GiB on disk |"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--synth-1m", action="store_true", help="also time the 1M-enterprise generator (~3 min)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "smecredit-bench")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    lines = [f"Date: {dt.date.today()}. Machine: {machine()}.", "",
             "| data | applications | load + validate (baseline) | features | applications/s |",
             "|---|---|---|---|---|"]
    for n in args.sizes:
        lines += bench_size(n, args.workdir)
    folder = args.workdir / f"synth-{args.sizes[0]}"
    lines += [""] + bench_single(load_folder(folder), folder)
    if args.synth_1m:
        lines += ["", "| job | wall | peak RSS | output |", "|---|---|---|---|"] + bench_synth_1m(args.workdir)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
