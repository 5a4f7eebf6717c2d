"""The related-party graph, measured on the generator's ground truth (issue 15, part 4).

    .venv/bin/python benchmarks/bench_graph.py [--data DIR] [--entities 20000]

1. The credit model's out-of-time AUC with the graph features against without them: the same folder trained
   twice, once without its link files (the lender has no related-party data), same config and seed.
2. Contagion in the scores: applicants with a linked firm that defaulted in the 12 months before, scored with the
   index as it is and with those defaults taken out of it (the same applicants, the same model): the PD rise is
   what the neighbours' defaults do to the score.
3. Application fraud: the fraud model trained on the planted rings (its own out-of-time test), then the default
   policy's fraud checks with it on the last fifth of application months: ring applications flagged by a fraud
   check (detection) and honest applications flagged (false rejection).
4. Latency for one applicant: engine.score with the graph against the same engine without it, in the same run;
   the graph features alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_explain import per_call_us  # noqa: E402
from benchmarks.machine import describe  # noqa: E402
from service.batch.chunks import build_all  # noqa: E402
from service.runtime import DEFAULT_POLICY  # noqa: E402
from service.scoring.bundle import load_bundle  # noqa: E402
from service.scoring.catalog import FEATURE_NAMES  # noqa: E402
from service.scoring.engine import Engine  # noqa: E402
from service.scoring.fraud import load_fraud_model  # noqa: E402
from service.scoring.graph import EventLog, applicant_rows, build_index, graph_features  # noqa: E402
from service.scoring.policy import load_policy  # noqa: E402
from service.scoring.raw import LINK_SOURCES, RawData, load_folder, month_index  # noqa: E402
from service.scoring.registry import Registry  # noqa: E402
from training.config import load_config  # noqa: E402
from training.dataset import from_folder  # noqa: E402
from training.fraud import FraudConfig, train_from_folder  # noqa: E402
from training.pipeline import train  # noqa: E402
from training.synth import GROUND_TRUTH_FILE, SynthConfig, write  # noqa: E402


def without_links(folder: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for p in folder.glob("*.parquet"):
        if p.stem not in LINK_SOURCES:
            shutil.copy(p, out / p.name)
    return out


def trained(folder: Path, registry: Path) -> tuple[Engine, dict]:
    reg = Registry(registry)
    version = train(from_folder(folder), load_config(None), reg).version
    return Engine(load_bundle(registry / version)), reg.metadata(version)


def without_neighbour_defaults(data: RawData) -> RawData:
    """``data`` whose index knows nothing of the firms that defaulted (neither their defaults nor their arrears);
    every firm's own monthly data unchanged: the scores had those firms not got into trouble, as their neighbours'
    features see it."""
    defaulted = np.zeros(data.n_enterprises, dtype=bool)
    bureau = data.monthly.get("bureau")
    if bureau is not None:
        defaulted[bureau["enterprise_row"][bureau["worst_dpd"] >= 90]] = True
    events = EventLog()
    for source, table in data.monthly.items():
        keep = ~defaulted[table["enterprise_row"]]
        events.add_monthly(source, {k: v[keep] for k, v in table.items()})
    return dataclasses.replace(data, graph=build_index(data, events))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entities", type=int, default=20_000)
    parser.add_argument("--data", type=Path, default=None)
    args = parser.parse_args()
    folder = args.data or Path(tempfile.gettempdir()) / "smecredit-bench" / f"synth-graph-{args.entities}"
    if not (folder / "profile.parquet").exists():
        write(SynthConfig(entities=args.entities, months=36, seed=7), folder)
    print(f"machine: {describe(f'lightgbm {lgb.__version__}', f'numpy {np.__version__}')}")
    print(f"data: {folder} ({args.entities:,} firms, 36 months, seed 7)\n")

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        engine, with_graph = trained(folder, Path(tmp) / "with")
        t_with = time.perf_counter() - t0
        fraud_trained, fraud_version = train_from_folder(folder, FraudConfig(), out=Path(tmp) / "fraud")
        engine = Engine(engine.bundle, fraud=load_fraud_model(Path(tmp) / "fraud"))
        t0 = time.perf_counter()
        _, without = trained(without_links(folder, Path(tmp) / "plain"), Path(tmp) / "without")
        t_without = time.perf_counter() - t0
    print("## 1. Credit model, out of time\n")
    print("| model | OOT AUC | KS | Brier | training |\n|---|---|---|---|---|")
    for label, md, t in (("without graph features (no link files)", without, t_without),
                         ("with graph features", with_graph, t_with)):
        oot = md["metrics"]["oot"]
        print(f"| {label} | {oot['auc']:.4f} | {oot['ks']:.4f} | {oot['brier']:.4f} | {t:.0f} s |")

    data = load_folder(folder)
    policy = load_policy(DEFAULT_POLICY)
    fm = build_all(data)
    X = fm.values
    apps = data.applications
    month = month_index(apps["application_date"])
    oot = month >= np.quantile(month, 0.8)

    print("\n## 2. Contagion in the scores\n")
    defaults = X[:, FEATURE_NAMES.index("graph_neighbour_defaults_12m")]
    hit = np.flatnonzero(oot & (defaults > 0))
    calm = without_neighbour_defaults(data)
    pd_as_is = np.array([s.pd for s in engine.score(data.select(hit), policy)])
    pd_calm = np.array([s.pd for s in engine.score(calm.select(hit), policy)])
    y = apps["defaulted_12m"]
    print(f"{len(hit)} out-of-time applicants had a linked firm default in the 12 months before; their observed "
          f"default rate {y[hit].mean():.1%} against {y[oot & (defaults == 0)].mean():.1%} for the others.\n")
    print("| same applicants, same model | mean PD | median PD |\n|---|---|---|")
    print(f"| the defaulted neighbours' trouble taken out of the index | {pd_calm.mean():.2%} | "
          f"{np.median(pd_calm):.2%} |")
    print(f"| the index as it is | {pd_as_is.mean():.2%} | {np.median(pd_as_is):.2%} |")
    print(f"\nPD rose for {np.mean(pd_as_is > pd_calm):.0%} of them, fell for {np.mean(pd_as_is < pd_calm):.0%} "
          f"(median ratio {np.median(pd_as_is / pd_calm):.2f}).")

    print("\n## 3. Application fraud checks on the planted rings (out of time)\n")
    truth = set(pq.read_table(folder / GROUND_TRUTH_FILE)["enterprise_id"].to_pylist())
    ring = np.array([e in truth for e in data.profile["enterprise_id"][apps["enterprise_row"]]])
    rows = np.flatnonzero(oot)
    scored = engine.score(data.select(rows), policy)
    r = ring[rows]
    m = fraud_trained.metrics["test"]
    print(f"The fraud model alone ({fraud_version}, its own out-of-time test months, threshold "
          f"{fraud_trained.metadata.threshold:.4f}): detection {m['detection_rate']:.1%}, false rejections "
          f"{m['false_rejection_rate']:.2%}, precision {m['precision']:.1%}, AUC {m['auc']:.4f}, rings caught "
          f"{m['rings_caught']}/{m['rings']}.\n")
    print("The default policy's fraud checks (velocity counts are read from decision records online and are not "
          "part of this offline run):\n")
    print("| check | ring applications flagged | honest applications flagged |\n|---|---|---|")
    for code in sorted(policy.fraud_codes):
        hit = np.array([any(h.code == code for h in s.outcome.rule_hits) for s in scored])
        print(f"| {code} | {hit[r].mean():.1%} | {hit[~r].mean():.2%} |")
    flagged = np.array([any(h.code in policy.fraud_codes for h in s.outcome.rule_hits) for s in scored])
    stopped = np.array([s.outcome.decision != "approve" for s in scored])
    print(f"| any fraud check (detection / false rejection) | {flagged[r].mean():.1%} | {flagged[~r].mean():.2%} |")
    print(f"| not approved, any reason | {stopped[r].mean():.1%} | {stopped[~r].mean():.1%} |")
    print(f"\n({r.sum()} ring and {(~r).sum()} honest applications in the last fifth of application months.)")

    print("\n## 4. One applicant: latency\n")
    sample = np.random.default_rng(0).choice(rows, min(600, len(rows)), replace=False)
    singles = [data.select(np.array([i])) for i in sample]
    bare = [dataclasses.replace(s, graph=None) for s in singles]
    ids = data.profile["enterprise_id"]
    print("| step | p50 | p99 |\n|---|---|---|")
    for label, fn in (
        ("baseline: engine.score without the graph", lambda k: engine.score(bare[k], policy)),
        ("engine.score with the graph", lambda k: engine.score(singles[k], policy)),
        ("graph features alone (lookups and gathers)", lambda k: graph_features(
            data.graph, applicant_rows(data.graph, ids[apps["enterprise_row"][sample[k:k + 1]]], None)[1],
            firm=np.array([data.graph.row(ids[apps["enterprise_row"][sample[k]]])]),
            registered=data.profile["registration_date"][apps["enterprise_row"][sample[k:k + 1]]],
            application_day=apps["application_date"][sample[k:k + 1]])),
    ):
        p50, p99 = per_call_us(fn, len(sample))
        print(f"| {label} | {p50:,.0f} µs | {p99:,.0f} µs |")
    t0 = time.perf_counter()
    index = build_index(data)
    print(f"\nbuilding the index of {index.n_firms:,} firms: {time.perf_counter() - t0:.2f} s "
          f"({len(index.entity_keys):,} entities, {index.group_label.shape[0]} months of groups)")


if __name__ == "__main__":
    main()
