"""Post-loan monitoring at scale: rescoring a whole book and raising early warnings, in one process and on Dask.

    .venv/bin/python benchmarks/bench_portfolio.py [--sizes 100000 1000000] [--months 24] [--workers 2]

For each size a synthetic folder with its loan book is generated once (``training.synth.write``, seed 7) and
reused. Nothing is trained when ``models/`` has a champion; otherwise one model is trained once on a small
folder (20,000 x 36, seed 7) into the work folder. Every measurement runs in a fresh child process, so that peak
memory (VmHWM, see ``peak_rss``) belongs to that job alone:

- load: ``load_folder`` (read + validate + link, the book included): the baseline every run pays;
- one process: ``score_book`` on every live loan as of the month after the book date, then ``assess`` (the
  warnings, ranked) and ``explain`` (reasons for the warned loans only); tracemalloc gives the peak of
  ``score_book``'s own allocations (numpy arrays, above the loaded data);
- Dask: ``score_book_distributed`` on a LocalCluster of ``--workers`` worker processes (one thread each), then the
  same ``assess`` + ``explain`` on the coordinator; the workers' peak RSS is read on each worker.

The two paths' results are compared through a digest of every per-loan array (they must be equal).
Prints markdown for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import describe  # noqa: E402 - a sibling module (benchmarks/ is the script's directory)

from service.batch.chunks import CHUNK_APPLICATIONS  # noqa: E402
from service.runtime import DEFAULT_POLICY  # noqa: E402
from service.scoring.registry import Registry  # noqa: E402

GIB = 2**30


def machine() -> str:
    import dask
    import lightgbm

    return describe(f"numpy {np.__version__}", f"LightGBM {lightgbm.__version__}", f"dask {dask.__version__}")


def status_gib(field: str) -> float:
    status = Path("/proc/self/status").read_text().splitlines()
    return int(next(line.split()[1] for line in status if line.startswith(f"{field}:"))) * 1024 / GIB


def peak_rss() -> float:
    """This process's peak resident set so far, GiB: VmHWM, the high-water mark of its own address space.
    Not getrusage's ru_maxrss, which a process started by fork + exec inherits from its parent's peak (a Dask
    worker would report the coordinator's loaded data as its own)."""
    return status_gib("VmHWM")


def cpu_seconds() -> float:
    """User + system CPU time of this process (all its threads)."""
    t = os.times()
    return t.user + t.system


def digest(scores) -> str:  # noqa: ANN001 - BookScores
    """One digest of every per-loan array, to check the two paths agree without shipping them between runs."""
    h = hashlib.sha256()
    for name in ("rows", "features_now", "points_now", "pd_then", "pd_now", "exposure", "lgd"):
        h.update(np.ascontiguousarray(getattr(scores, name)).tobytes())
    for name in ("grade_then", "grade_now"):
        h.update("".join(map(str, getattr(scores, name))).encode())
    h.update(scores.signals.fired.tobytes())
    for name in sorted(scores.signals.indicators):
        h.update(scores.signals.indicators[name].tobytes())
    return h.hexdigest()[:16]


# --- the child: one measured job in a fresh process --------------------------------------------------------


def child(mode: str, folder: Path, bundle: Path, workers: int, chunk: int, max_gib: float) -> dict:
    from service.monitoring.warning import assess
    from service.scoring.bundle import load_bundle
    from service.scoring.engine import Engine
    from service.scoring.policy import load_policy
    from service.scoring.raw import load_folder
    from service.usecases.portfolio import LossParameters, live_loans, score_book

    # A shared machine: past this much address space numpy raises MemoryError here, rather than the kernel's
    # OOM killer picking someone else's process. Address space runs ~2 GiB above the resident set (measured).
    limit = int(max_gib * GIB)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    out: dict = {"mode": mode}
    t0 = time.perf_counter()
    data = load_folder(folder)
    out["load_s"], out["load_peak_gib"] = time.perf_counter() - t0, peak_rss()
    out["firms"], out["loans"] = data.n_enterprises, len(data.book["loan_id"])
    out["monthly_rows"] = sum(len(t["month"]) for t in data.monthly.values())
    engine, policy, loss = Engine(load_bundle(bundle)), load_policy(DEFAULT_POLICY), LossParameters.shipped()
    as_of = int(np.max(data.book["as_of_month"])) + 1
    rows = live_loans(data.book, as_of)
    out["live"] = len(rows)

    if mode == "local":
        t0, c0 = time.perf_counter(), cpu_seconds()
        tracemalloc.start()
        scores = score_book(data=data, engine=engine, policy=policy, rows=rows, as_of_month=as_of, loss=loss)
        out["score_traced_gib"] = tracemalloc.get_traced_memory()[1] / GIB
        tracemalloc.stop()
    else:
        from dask.distributed import Client, LocalCluster

        from service.batch.distributed import score_book_distributed

        t_cluster = time.perf_counter()
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            out["cluster_start_s"] = time.perf_counter() - t_cluster
            with Client(cluster) as client:
                before = client.run(cpu_seconds)
            t0, c0 = time.perf_counter(), cpu_seconds()
            scores = score_book_distributed(data=data, bundle_dir=bundle, policy=policy, rows=rows, as_of_month=as_of,
                                            loss=loss, address=cluster.scheduler_address, chunk=chunk)
            out["score_s"], out["score_cpu_s"] = time.perf_counter() - t0, cpu_seconds() - c0
            with Client(cluster) as client:
                peaks, after = client.run(peak_rss), client.run(cpu_seconds)
            out["coordinator_cpu_s"] = out["score_cpu_s"]
            out["score_cpu_s"] += sum(after[w] - before[w] for w in after)
            out["worker_peak_gib"] = sorted(peaks.values())
    if mode == "local":
        out["score_s"], out["score_cpu_s"] = time.perf_counter() - t0, cpu_seconds() - c0
    out["score_peak_gib"] = peak_rss()

    t0 = time.perf_counter()
    warnings = assess(scores.borrowers(), policy.spec.early_warning, policy.grades)
    out["assess_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    warnings = scores.explain(warnings, engine)
    out["explain_s"] = time.perf_counter() - t0
    out["warnings"] = len(warnings)
    out["act"] = sum(w.level == "act" for w in warnings)
    out["peak_gib"], out["peak_virtual_gib"] = peak_rss(), status_gib("VmPeak")
    out["digest"] = digest(scores)
    return out


# --- the parent: data, model, children, table --------------------------------------------------------------


def champion(workdir: Path) -> Path:
    """The champion of models/ when there is one; otherwise a model trained once on a small folder."""
    for root in (ROOT / "models", workdir / "registry"):
        if (root / "champion.json").exists():
            return root / Registry(root).champion()
    from training.config import load_config
    from training.dataset import from_folder
    from training.pipeline import train
    from training.synth import SynthConfig, write

    small = workdir / "synth-20000"
    if not (small / "profile.parquet").exists():
        write(SynthConfig(entities=20_000, months=36, seed=7), small)
    registry = Registry(workdir / "registry")
    version = train(from_folder(small), load_config(None), registry).version
    registry.promote(version, by="bench_portfolio", reason="benchmark model (models/ has no champion)")
    return workdir / "registry" / version


def folder_for(workdir: Path, firms: int, months: int) -> tuple[Path, float | None]:
    """The synthetic folder (generated once, timed when generated here)."""
    from training.synth import SynthConfig, write

    folder = workdir / f"book-{firms}x{months}"
    if (folder / "loans.parquet").exists():
        return folder, None
    t0 = time.perf_counter()
    write(SynthConfig(entities=firms, months=months, seed=7), folder)
    return folder, time.perf_counter() - t0


def run_child(mode: str, folder: Path, bundle: Path, args: argparse.Namespace) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", mode, "--data", str(folder), "--bundle",  # noqa: S603
                           str(bundle), "--workers", str(args.workers), "--chunk", str(args.chunk),
                           "--max-gib", str(args.max_gib)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"mode": mode, "error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1],
                "returncode": proc.returncode}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def rows_for(firms: int, months: int, r: dict) -> list[str]:
    size = f"{firms:,} x {months}"
    if "error" in r:
        return [f"| {size} | {r['mode']} | failed: {r['error']} (exit {r['returncode']}) | | | | | |"]
    path = "one process" if r["mode"] == "local" else f"Dask, {len(r['worker_peak_gib'])} workers"
    total = r["score_s"] + r["assess_s"] + r["explain_s"]
    memory = f"{r['peak_gib']:.1f} GiB"
    if r["mode"] == "local":
        memory += f" (score_book's arrays: {r['score_traced_gib']:.1f} GiB traced)"
    else:
        memory += f"; workers {' / '.join(f'{g:.1f}' for g in r['worker_peak_gib'])} GiB"
    return [f"| {size} | {path} | {r['live']:,} | {r['load_s']:.1f} s, {r['load_peak_gib']:.1f} GiB "
            f"| {r['score_s']:.1f} s ({r['score_cpu_s']:.0f} s CPU) | {r['assess_s']:.1f} s + {r['explain_s']:.1f} s "
            f"| {total:.1f} s "
            f"| {memory} | {r['warnings']:,} ({r['act']:,} act) |"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--months", type=int, default=24, help="months of data (24: the book and one window)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=CHUNK_APPLICATIONS, help="loans per Dask piece")
    parser.add_argument("--max-gib", type=float, default=20.0, help="address-space limit of each measured process")
    parser.add_argument("--paths", nargs="+", choices=("local", "dask"), default=["local", "dask"])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "smecredit-bench")
    parser.add_argument("--child", choices=("local", "dask"), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--bundle", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.data, args.bundle, args.workers, args.chunk, args.max_gib)))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    bundle = champion(args.workdir)
    lines = [f"Date: {dt.date.today()}. Machine: {machine()}. Model: {bundle.name}.", "",
             "| firms x months | path | live loans | load (baseline) | rescore (CPU, all processes) | assess + explain "
             "| total | peak RSS | warnings |", "|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for firms in args.sizes:
        folder, synth_s = folder_for(args.workdir, firms, args.months)
        if synth_s is not None:
            notes.append(f"generated {firms:,} x {args.months} in {synth_s:.0f} s")
        results = [run_child(mode, folder, bundle, args) for mode in args.paths]
        for r in results:
            lines += rows_for(firms, args.months, r)
            print(lines[-1], file=sys.stderr, flush=True)
        ok = [r for r in results if "error" not in r]
        if len(ok) == 2:
            same = ok[0]["digest"] == ok[1]["digest"]
            notes.append(f"{firms:,}: {ok[0]['loans']:,} loans, {ok[0]['monthly_rows']:,} monthly rows; "
                         f"one process and Dask {'identical' if same else 'DIFFER'} (digest {ok[0]['digest']}"
                         f"{'' if same else ' vs ' + ok[1]['digest']}); Dask: cluster start "
                         f"{ok[1]['cluster_start_s']:.1f} s, not in the total; rescoring CPU "
                         f"{ok[1]['coordinator_cpu_s']:.0f} s on the coordinator (cutting and sending pieces, "
                         f"gathering), {ok[1]['score_cpu_s'] - ok[1]['coordinator_cpu_s']:.0f} s on the workers")
    print("\n".join(lines + [""] + [f"- {n}" for n in notes]))


if __name__ == "__main__":
    main()
