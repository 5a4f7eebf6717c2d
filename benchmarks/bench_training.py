"""Training cost: wall time and peak memory of `smecredit train` for 10k, 100k and 1M enterprises.

    .venv/bin/python benchmarks/bench_training.py [--sizes 10000 100000 1000000] [--dask]

Each size is generated (24 months, seed 7) and trained in a fresh process under `/usr/bin/time -v`, beside
the baseline of `smecredit features` on the same folder (the share of the cost that is feature building).
Peak memory is the largest resident set of the command (training reads the folder a range of enterprises at a
time, so at 1M it stays under 4 GiB: docs/benchmarks.md, "Training at 1M firms: memory"). With ``--dask`` the
same folder is also trained with `train --dask local` (one worker process per core); its peak is the largest
single process, client or worker.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

SMECREDIT = str(Path(sys.executable).with_name("smecredit"))


def timed(args: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (GiB) of one command."""
    out = subprocess.run(["/usr/bin/time", "-v", *args], capture_output=True, text=True, check=True)  # noqa: S603
    wall = re.search(r"Elapsed \(wall clock\) time .*: (?:(\d+):)?(\d+):([\d.]+)", out.stderr)
    h, m, s = (float(g) if g else 0.0 for g in wall.groups())
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr).group(1))
    return h * 3600 + m * 60 + s, rss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "smecredit-bench")
    parser.add_argument("--dask", action="store_true", help="also time `train --dask local`")
    args = parser.parse_args()
    print("| enterprises | applications | features only (baseline) | train (features, withheld rows, fit, card) "
          "| peak RSS, train |" + (" train --dask local | peak RSS (largest process) |" if args.dask else ""))
    print("|---|---|---|---|---|" + ("---|---|" if args.dask else ""))
    for n in args.sizes:
        data = args.workdir / f"train-{n}"
        if not (data / "profile.parquet").exists():
            subprocess.run([SMECREDIT, "synth", "--entities", str(n), "--months", "24", "--out", str(data)],  # noqa: S603
                           check=True, capture_output=True)
        apps = subprocess.run([sys.executable, "-c", "import pyarrow.parquet as pq, sys; "  # noqa: S603
                               f"print(pq.ParquetFile('{data}/applications.parquet').metadata.num_rows)"],
                              capture_output=True, text=True, check=True).stdout.strip()
        f_wall, f_rss = timed([SMECREDIT, "features", "--data", str(data), "--out", str(data / "features.parquet")])
        t_wall, t_rss = timed([SMECREDIT, "train", "--data", str(data), "--registry", str(data / "registry")])
        row = f"| {n:,} | {int(apps):,} | {f_wall:.0f} s, {f_rss:.1f} GiB | {t_wall:.0f} s | {t_rss:.1f} GiB |"
        if args.dask:
            d_wall, d_rss = timed([SMECREDIT, "train", "--data", str(data), "--registry", str(data / "registry"),
                                   "--dask", "local"])
            row += f" {d_wall:.0f} s | {d_rss:.1f} GiB |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
