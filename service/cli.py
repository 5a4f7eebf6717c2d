"""The ``smecredit`` command line: one entry point for data, features, training and serving.

Commands import their modules lazily so that ``smecredit --help`` stays fast.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from service import __version__


def _no_type_beside_flags() -> None:
    """Typer's Rich help (0.29) prints a value type beside every option, `<bool>` beside flags (even --help),
    which take no value; click's plain help prints none there, and neither does ours (tests/test_cli_help.py)."""
    option = typer.core.TyperOption
    shown = getattr(option, "display_type_rich", None)
    if shown is None:  # another Typer: the test says whether it still needs this
        return

    def display_type_rich(self: typer.core.TyperOption, ctx: typer.Context) -> str | None:
        return None if self.is_flag else shown(self, ctx)

    option.display_type_rich = display_type_rich


_no_type_beside_flags()
app = typer.Typer(add_completion=False, no_args_is_help=True, help="SME credit scoring from operating data.\n\n"
                  "Example: smecredit synth --out data/synth && smecredit train --data data/synth --promote")
console = Console(stderr=True)
EXAMPLE_REQUEST = Path("openapi/examples/score_request.json")


def _print_version(value: bool) -> None:
    if value:
        print(f"smecredit {__version__}")
        raise typer.Exit


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                          help="Print the installed version and exit")] = False,
) -> None:
    """The options before any command."""


def _require_training(command: str) -> None:
    """The serving install and image leave out the training code and its packages: say so, not a traceback."""
    try:
        import training.pipeline  # noqa: F401 - imports the train extra's packages too
    except ModuleNotFoundError as exc:
        _fail(f"smecredit {command} needs the training code and the 'train' extra ({exc.name} is missing): "
              "pip install '.[train]' from a checkout, or build the image's train target (docs/deploy.md)")


def _fail(message: str) -> None:
    """Print the error (not as rich markup: a data file's values may hold brackets) and exit 2."""
    console.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code=2)


@app.command()
def synth(
    out: Annotated[Path, typer.Option(help="Folder to write the contract's Parquet files into")],
    entities: Annotated[int, typer.Option(min=1, max=20_000_000, help="Number of enterprises")] = 20_000,
    months: Annotated[int, typer.Option(min=13, max=120, help="Months of operating data")] = 36,
    seed: Annotated[int, typer.Option(min=0, help="Random seed; same arguments give the same files")] = 7,
    end_month: Annotated[str, typer.Option(help="Last month with data, YYYY-MM")] = "2025-10",
    shock: Annotated[list[str] | None, typer.Option(
        help="A lasting shock, repeatable: region=R,industry=I,from=YYYY-MM,revenue=-0.3,electricity=-0.25,"
             "payment_delay=+10,contributions=-0.5,late_filing=0.3 (region, industry and all but one change "
             "optional; docs/book.md)")] = None,
    shock_file: Annotated[Path | None, typer.Option(help="A YAML list of shocks with the keys of --shock")] = None,
    links: Annotated[bool, typer.Option(help="Also write the link files (links, guarantees, counterparties) and the "
                                             "planted fraud rings' ground truth; the other files are the same "
                                             "either way")] = True,
) -> None:
    """Generate realistic synthetic SME data that follows the data contract, with the lender's loan book.

    Example: smecredit synth --entities 20000 --months 36 --seed 7 --out data/synth
    """
    from rich.progress import Progress

    _require_training("synth")
    from training import synth as synth_mod

    try:
        shocks = tuple(synth_mod.parse_shock(s) for s in shock or ())
        if shock_file is not None:
            shocks += synth_mod.load_shock_file(shock_file)
        cfg = synth_mod.SynthConfig(entities=entities, months=months, seed=seed, end_month=end_month,
                                    shocks=shocks, links=links)
    except ValueError as exc:
        _fail(str(exc).replace("end_month", "--end-month"))
    started = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("generating enterprises", total=entities)
        rows = synth_mod.write(cfg, out, progress=lambda n: progress.advance(task, n))
    table = RichTable(title=f"synthetic data in {out} ({time.perf_counter() - started:.1f} s)")
    table.add_column("file")
    table.add_column("rows", justify="right")
    for name, count in rows.items():
        table.add_row(f"{name}.parquet", f"{count:,}")
    console.print(table)


@app.command()
def features(
    data: Annotated[Path, typer.Option(help="Data folder that follows the data contract")],
    out: Annotated[Path, typer.Option(help="Output file (.parquet or .csv)")],
    dask: Annotated[str | None, typer.Option(help="Build on Dask: 'local' or a scheduler address")] = None,
) -> None:
    """Build point-in-time features for every application in a data folder.

    Example: smecredit features --data data/synth --out data/features.parquet
    """
    from service.batch.features import featurize_folder
    from service.scoring.raw import ContractError

    if out.suffix not in (".parquet", ".csv"):
        _fail(f"--out must end in .parquet or .csv, got {out.name!r}")
    _setup_logging(verbose=False)  # the loader's warnings: a file read as GB18030, say
    started = time.perf_counter()
    try:
        n_rows, n_features = featurize_folder(data, out, log=console.log, dask_address=dask)
    except ContractError as exc:
        _fail(str(exc))
    console.print(f"wrote {n_rows:,} applications x {n_features} features to {out} "
                  f"in {time.perf_counter() - started:.1f} s")


RegistryOpt = Annotated[Path | None, typer.Option(help="Registry folder (default: $SMECREDIT_REGISTRY or models)")]


def _setup_logging(verbose: bool = True) -> None:
    """The service's logging configuration (service/logs.py): the same lines from the CLI as from the API."""
    from service import logs
    from service.config import get_settings

    try:
        settings = get_settings()
        level, fmt = settings.log_level, settings.log_format_in_effect
    except ValueError:  # production settings incomplete: commands that need them say so themselves
        level, fmt = "INFO", "text"
    logs.configure(level if verbose else "WARNING", fmt)


@app.command()
def train(
    data: Annotated[Path | None, typer.Option(help="Data folder that follows the data contract (exactly one of "
                                                   "--data or --table is needed)")] = None,
    table: Annotated[Path | None, typer.Option(help="Your own feature table (.csv or .parquet), with --target "
                                                    "(exactly one of --data or --table is needed)")] = None,
    target: Annotated[str | None, typer.Option(help="--table: the 0/1 outcome column")] = None,
    positive: Annotated[str | None, typer.Option(help="--table: the target value meaning 'defaulted'")] = None,
    id_column: Annotated[str | None, typer.Option("--id", help="--table: an identifier column (not a feature)")] = None,
    date_column: Annotated[str | None, typer.Option("--date", help="--table: a date column for an out-of-time split")]
    = None,
    exclude: Annotated[list[str] | None, typer.Option(help="--table: a column to leave out (repeatable)")] = None,
    categorical: Annotated[list[str] | None, typer.Option(
        help="--table: a column to treat as categorical even if it holds numbers (repeatable)")] = None,
    monotone: Annotated[list[str] | None, typer.Option(
        help="--table: COLUMN=+1 (risk rises with the value) or COLUMN=-1 (repeatable)")] = None,
    protected: Annotated[list[str] | None, typer.Option(
        help="--table: a protected attribute (repeatable): assessed for fairness, never a model input. Columns "
             "named like age, sex, gender, marital status, race, religion, nationality... are found by name")] = None,
    allow_protected: Annotated[str | None, typer.Option(
        help="--table: REASON protected columns may be model inputs (recorded in the model card)")] = None,
    config: Annotated[Path | None, typer.Option(help="Training config YAML (default: the shipped default)")] = None,
    registry: RegistryOpt = None,
    tune_trials: Annotated[int, typer.Option("--tune", min=0, max=500, help="Optuna trials before the final fit")] = 0,
    promote: Annotated[bool, typer.Option(help="Promote the new model to champion")] = False,
    policy: Annotated[Path | None, typer.Option("--policy", help="--data: the lender policy the new model is compared "
                                                                 "with the champion under (default: the shipped one)")]
    = None,
    dask: Annotated[str | None, typer.Option(help="--data: build features and fit LightGBM on Dask: 'local' or a "
                                                  "scheduler address (docs/scale-out.md)")] = None,
    model: Annotated[str, typer.Option("--model", help="The model to register: lightgbm, or scorecard (optbinning's "
                                                       "WoE scorecard, fitted beside LightGBM on the same rows; "
                                                       "promotable and served like it)")] = "lightgbm",
) -> None:
    """Train a governed LightGBM PD model, evaluate it out of time, and register the bundle.

    Exactly one of --data (a contract data folder) or --table (your own feature table, with --target) is needed.

    Example: smecredit train --data data/synth --promote
    Example: smecredit train --table data/features.parquet --target defaulted_12m \\
                 --id application_id --date application_date
    """
    import contextlib
    import functools

    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from service.scoring.raw import ContractError
    from service.scoring.registry import Registry, RegistryError, default_registry
    from service.usecases.compare import CompareError, compare_with_champion, promotion_summary

    _require_training("train")
    from training import dataset, pipeline
    from training.config import load_config
    from training.fit import fit_lightgbm, fit_lightgbm_dask

    if (data is None) == (table is None):
        _fail("give exactly one of --data (a contract data folder) or --table (your own feature table)")
    if table is not None and target is None:
        _fail("--table needs --target COLUMN")
    table_only = (target, positive, id_column, date_column, exclude, categorical, monotone, protected, allow_protected)
    if data is not None and any(v for v in table_only):
        _fail("--target, --positive, --id, --date, --exclude, --categorical, --monotone, --protected and "
              "--allow-protected go with --table, not --data")
    if dask is not None and data is None:
        _fail("--dask goes with --data (a table's features are already built)")
    if policy is not None and data is None:
        _fail("--policy goes with --data: a table model is not decided by a lender policy")
    if model not in pipeline.MODELS:
        _fail(f"--model: unknown model {model!r}; one of {', '.join(pipeline.MODELS)}")
    _setup_logging()
    started = time.perf_counter()
    try:
        cfg = load_config(config)
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                      transient=True) as progress, contextlib.ExitStack() as stack:
            task = progress.add_task("building features", total=None)

            def step(message: str) -> None:
                logging.getLogger("smecredit.train").info(message)
                progress.update(task, description=message)

            client, fit = None, fit_lightgbm
            if dask is not None:
                from service.batch.distributed import cluster

                client = stack.enter_context(cluster(dask))
                fit = functools.partial(fit_lightgbm_dask, client=client)
            if data is not None:
                ts = dataset.from_folder(data, client=client)
            else:
                ts = dataset.from_table(table, target, id_column=id_column, date_column=date_column,
                                        positive=positive, exclude=exclude or (), categorical=categorical or (),
                                        monotone=monotone or (), protected=protected or (),
                                        allow_protected=allow_protected)
            result = pipeline.train(ts, cfg, Registry(registry or default_registry()), tune_trials=tune_trials,
                                    step=step, fit=fit, model=model)
            comparison = None
            if data is not None:  # a catalog model: against the champion under the lender's policy
                step("comparing with the champion on the out-of-time applications")
                comparison = compare_with_champion(Registry(registry or default_registry()), result.version, data,
                                                   _policy_file(policy))
        if promote:
            _champion_change("promote", Registry(registry or default_registry()), version=result.version,
                             by=None, reason="promoted at training (--promote)",
                             comparison=promotion_summary(comparison) if comparison else None)
    except (ContractError, ValueError, RegistryError, CompareError) as exc:
        _fail(str(exc))
    if comparison is not None:
        _print_comparison(comparison)
    _print_summary(result, time.perf_counter() - started)  # last: its final line is the version, for scripts


def _print_summary(result, seconds: float) -> None:  # noqa: ANN001
    card = result.card
    if card.get("model_type") == "scorecard":
        _print_scorecard_summary(result, seconds)
        return
    table = RichTable(title=f"model {result.version} ({seconds:.0f} s)")
    for col in ("", "LightGBM", "challenger"):
        table.add_column(col, justify="right" if col else "left")
    for m in ("auc", "gini", "ks", "brier", "log_loss", "calibration_error"):
        table.add_row(m, f"{card['metrics']['lightgbm'][m]:.4f}", f"{card['metrics']['challenger'][m]:.4f}")
    console.print(table)
    console.print(f"trees {card['training']['trees']}, {card['training']['leaves']} leaves")
    for s in card["statements"]:  # the card's own statements (training/facts.py): the two never disagree
        console.print(f"[bold red]![/] {escape(s['text'])}" if s["flag"] else f"- {escape(s['text'])}")
    console.print(f"bundle {'registered' if result.created else 'already registered'}: {result.version}")
    print(result.version)


def _print_scorecard_summary(result, seconds: float) -> None:  # noqa: ANN001
    card = result.card
    table = RichTable(title=f"scorecard {result.version} ({seconds:.0f} s)")
    for col in ("", "scorecard", "LightGBM"):
        table.add_column(col, justify="right" if col else "left")
    for m in ("auc", "gini", "ks", "brier", "log_loss", "calibration_error"):
        table.add_row(m, f"{card['metrics']['scorecard'][m]:.4f}", f"{card['metrics']['lightgbm'][m]:.4f}")
    console.print(table)
    for s in card["statements"]:
        console.print(f"[bold red]![/] {escape(s['text'])}" if s["flag"] else f"- {escape(s['text'])}")
    console.print(f"bundle {'registered' if result.created else 'already registered'}: {result.version}")
    print(result.version)


models_app = typer.Typer(no_args_is_help=True, help="The model registry: list, show, verify, promote, rollback.\n\n"
                         "Example: smecredit models list --registry models")
app.add_typer(models_app, name="models")


def _model_of(path: Path | None, model: str | None):  # noqa: ANN202
    """The registry and the version to use: --model, else the champion (exit 2 when there is none)."""
    reg = _registry(path)
    version = model or reg.champion()
    if version is None:
        _fail(f"no champion in {reg.root}; pass --model or promote one")
    return reg, version


def _registry(path: Path | None):  # noqa: ANN202
    from service.scoring.registry import Registry, default_registry

    return Registry(path or default_registry())


@models_app.command("list")
def models_list(registry: RegistryOpt = None) -> None:
    """Registered versions, oldest first, with their out-of-time metrics.

    Example: smecredit models list --registry models
    """
    reg = _registry(registry)
    champion = reg.champion()
    table = RichTable()
    for col in ("version", "kind", "trees", "oot AUC", "KS", "Brier", "champion"):
        table.add_column(col)
    for v in reg.versions():
        md = reg.metadata(v)
        oot = md["metrics"]["oot"]
        table.add_row(v, md["kind"], str(md["training"]["trees"]), f"{oot['auc']:.4f}", f"{oot['ks']:.4f}",
                      f"{oot['brier']:.4f}", "*" if v == champion else "")
    console.print(table)


@models_app.command("show")
def models_show(version: str, registry: RegistryOpt = None) -> None:
    """Metadata of one version (without the reference distributions), as JSON.

    Example: smecredit models show m1a2b3c4d5e6   # a version from smecredit models list
    """
    import json

    from service.scoring.registry import RegistryError

    try:
        md = _registry(registry).metadata(version)
    except RegistryError as exc:
        _fail(str(exc))
    md = {k: v for k, v in md.items() if k not in ("reference", "industry_medians")}
    print(json.dumps(md, indent=1, ensure_ascii=False))


@models_app.command("verify")
def models_verify(version: str, registry: RegistryOpt = None) -> None:
    """Check every SHA-256 digest of a bundle, then that it is servable (LightGBM parses it and reproduces its
    canary rows, in a child process); exit 1 on any changed byte or any refusal.

    Example: smecredit models verify m1a2b3c4d5e6
    """
    from service.scoring.registry import RegistryError

    reg = _registry(registry)
    try:
        digests = reg.check(version)
        canary = "canary" in reg.metadata(version)
    except RegistryError as exc:
        console.print(f"[bold red]FAILED[/] {exc}")
        raise typer.Exit(code=1) from None
    console.print(f"[green]ok[/] {version}: {len(digests)} files match their digests; servable: "
                  + ("LightGBM parses the model and reproduces its canary rows" if canary else
                     "LightGBM parses the model and scores test rows (no canary stored: retrain to store one)"))


@models_app.command("promote")
def models_promote(version: str, reason: Annotated[str, typer.Option(help="Why (kept in the history)")],
                   by: Annotated[str | None, typer.Option(help="Who (default: the OS user)")] = None,
                   data: Annotated[Path | None, typer.Option(help="Compare with the champion on this data folder "
                                                                  "first (as `models compare`)")] = None,
                   policy: PolicyFileOpt = None, registry: RegistryOpt = None) -> None:
    """Make a version the champion once it passes every check (digests, servable, a catalog model); exit 2
    with the reason otherwise, leaving the champion as it was. The comparison with the outgoing champion (from
    `models compare`, `train`, or --data) is shown and recorded with the promotion's audit event.

    Example: smecredit models promote m1a2b3c4d5e6 --reason "better out-of-time AUC" --data data/synth
    """
    from service.scoring.registry import RegistryError
    from service.usecases.compare import promotion_summary, stored_comparison

    reg = _registry(registry)
    if data is not None:
        models_compare(version, data, policy, registry)
    comparison = stored_comparison(reg, version)
    if comparison is not None and data is None:
        _print_comparison(comparison)
    elif comparison is None and reg.champion() not in (None, version):
        console.print(f"[yellow]warning:[/] {version} was not compared with the champion {reg.champion()}; "
                      f"`smecredit models compare {version} --data DIR` shows what would change")
    try:
        event = _champion_change("promote", reg, version=version, by=by, reason=reason,
                                 comparison=promotion_summary(comparison) if comparison else None)
    except RegistryError as exc:
        _fail(str(exc))
    console.print(f"champion: {event.version} (was {event.previous or 'none'})")


@models_app.command("rollback")
def models_rollback(reason: Annotated[str, typer.Option(help="Why (kept in the history)")],
                    by: Annotated[str | None, typer.Option(help="Who (default: the OS user)")] = None,
                    registry: RegistryOpt = None) -> None:
    """Make the previous champion champion again.

    Example: smecredit models rollback --reason "approval rate fell after the promotion"
    """
    from service.scoring.registry import RegistryError

    try:
        event = _champion_change("rollback", _registry(registry), by=by, reason=reason)
    except RegistryError as exc:
        _fail(str(exc))
    console.print(f"champion: {event.version} (rolled back from {event.previous})")


PolicyFileOpt = Annotated[Path | None, typer.Option("--policy", help="Lender policy YAML (default: the shipped "
                                                                    "default policy)")]
DataOpt = Annotated[Path, typer.Option(help="Contract data folder with outcomes (defaulted_12m): the model's "
                                            "out-of-time applications are taken from it")]


def _policy_file(path: Path | None):  # noqa: ANN202
    from service.runtime import DEFAULT_POLICY
    from service.scoring.policy import PolicyError, load_policy

    try:
        return load_policy(path or DEFAULT_POLICY)
    except (PolicyError, OSError) as exc:
        _fail(f"--policy: {exc}")


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _print_comparison(result: dict) -> None:
    """The comparison as a risk team reads it: the two models, the swap set, the warnings."""
    table = RichTable(title=f"{result['version']} against the champion {result['against']} on "
                        f"{result['applications']:,} out-of-time applications, policy {result['policy']}")
    for column in ("", "AUC", "KS", "approved", "referred", "straight-through", "bad rate approved (exp./obs.)"):
        table.add_column(column)
    for name in ("candidate", "champion"):
        m = result[name]
        table.add_row(f"{name} {m['version']}", _num(m["auc"]), _num(m["ks"]), _pct(m["approval_rate"]),
                      _pct(m["referral_rate"]), _pct(m["straight_through"]),
                      f"{_pct(m['approved_expected_bad_rate'])} / {_pct(m['approved_observed_bad_rate'])}")
    console.print(table)
    moved = [c for c in result["swap_set"] if c["champion"] != c["candidate"] and c["n"]]
    for c in moved:
        console.print(f"  {c['champion']} -> {c['candidate']}: {c['n']:,} applications, observed bad rate "
                      f"{_pct(c['bad_rate'])}")
    for w in result["warnings"]:
        console.print(f"[yellow]warning:[/] {w}")
    keep = result["cut_offs_keeping_approval"]
    if keep:
        console.print(f"  cut-offs that keep the champion's approval rate: approve_min_score "
                      f"{keep['approve_min_score']:g}, refer_min_score {keep['refer_min_score']:g} "
                      f"(approval {_pct(keep['approval_rate'])}, referral {_pct(keep['referral_rate'])})")


@models_app.command("compare")
def models_compare(version: str, data: DataOpt, policy: PolicyFileOpt = None, registry: RegistryOpt = None) -> None:
    """A model against the current champion on its out-of-time applications: AUC, KS, calibration by grade,
    and under the policy the approval rate, bad rates and the swap set. Kept in the registry, so that
    `models promote` shows it and records it with the promotion.

    Example: smecredit models compare m1a2b3c4d5e6 --data data/synth"""
    from service.scoring.bundle import BundleError
    from service.scoring.raw import ContractError
    from service.scoring.registry import RegistryError
    from service.usecases.compare import CompareError, compare_with_champion

    reg = _registry(registry)
    try:
        result = compare_with_champion(reg, version, data, _policy_file(policy))
    except (CompareError, ContractError, RegistryError, BundleError) as exc:
        _fail(str(exc))
    if result is None:
        _fail(f"{version} is the champion, or there is none: nothing to compare with")
    _print_comparison(result)


policy_app = typer.Typer(no_args_is_help=True, help="Lender policies: cut-offs chosen for targets.\n\n"
                         "Example: smecredit policy optimise --data data/synth --max-bad-rate 0.02 "
                         "--out policies/lender-1.1.yaml")
app.add_typer(policy_app, name="policy")


def _share(option: str, value: float | None) -> None:
    if value is not None and not 0.0 < value <= 1.0:
        _fail(f"{option}: must be a share between 0 and 1 (e.g. 0.95 for 95%), got {value:g}")


@policy_app.command("optimise")
def policy_optimise(
    out: Annotated[Path, typer.Option(help="Where to write the proposed policy (YAML, for review)")],
    data: DataOpt,
    policy: PolicyFileOpt = None,
    model: Annotated[str | None, typer.Option(help="Model version (default: the champion)")] = None,
    straight_through: Annotated[float, typer.Option(help="Share decided without a person")] = 0.95,
    max_bad_rate: Annotated[float | None, typer.Option(help="Highest expected bad rate among approvals")] = None,
    approval_rate: Annotated[float | None, typer.Option(help="Approval rate to aim at (instead of a bad rate)")]
    = None,
    version: Annotated[str | None, typer.Option(help="Version of the proposed policy (default: the current one "
                                                     "+ '-cutoffs-' + today)")] = None,
    report: Annotated[Path | None, typer.Option(help="Also write the trade-off chart as an HTML page")] = None,
    force: Annotated[bool, typer.Option(help="Replace existing --out and --report files")] = False,
    registry: RegistryOpt = None,
) -> None:
    """Propose approve and refer cut-offs for targets on the model's out-of-time applications, show the
    trade-off, and write the policy with them as a new version for review (nothing is applied).

    Example: smecredit policy optimise --data data/synth --max-bad-rate 0.02 --out policies/lender-1.1.yaml"""
    import datetime

    from service.batch.compare import Targets
    from service.scoring.bundle import BundleError
    from service.scoring.raw import ContractError
    from service.scoring.registry import RegistryError
    from service.usecases.compare import CompareError, policy_with_cut_offs, propose_cut_offs

    _share("--straight-through", straight_through)
    _share("--max-bad-rate", max_bad_rate)
    _share("--approval-rate", approval_rate)
    if max_bad_rate is not None and approval_rate is not None:
        _fail("--max-bad-rate and --approval-rate: give one target for the approve cut-off, not both")
    for option, path in (("--out", out), ("--report", report)):
        if path is not None and path.exists() and not force:
            _fail(f"{option}: {path} exists; pass --force to replace it")
    reg = _registry(registry)
    version_of_model = model or reg.champion()
    if version_of_model is None:
        _fail(f"--model: no champion in {reg.root}; name a model version")
    lender = _policy_file(policy)
    try:
        result = propose_cut_offs(reg, version_of_model, data, lender,
                                  Targets(straight_through, max_bad_rate, approval_rate))
        new_version = version or f"{lender.spec.version}-cutoffs-{datetime.date.today():%Y%m%d}"
        text = policy_with_cut_offs(lender, result["proposed"]["approve_min_score"],
                                    result["proposed"]["refer_min_score"], new_version)
    except (CompareError, ContractError, RegistryError, BundleError) as exc:
        _fail(str(exc))
    for name in ("current", "proposed"):
        p = result[name]
        console.print(f"{name:9s} approve >= {p['approve_min_score']:g}, refer >= {p['refer_min_score']:g}: "
                      f"approved {_pct(p['approval_rate'])}, referred {_pct(p['referral_rate'])}, "
                      f"straight-through {_pct(p['straight_through'])}, bad rate among approvals "
                      f"{_pct(p['approved_expected_bad_rate'])} expected / "
                      f"{_pct(p['approved_observed_bad_rate'])} observed")
    for note in result["notes"]:
        console.print(f"  {note}")
    if result["referred_without_source"]:
        console.print("  referrals without some source's data (asking for it may settle them before a person looks): "
                      + ", ".join(f"{s} {n}" for s, n in result["referred_without_source"].items()))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    console.print(f"proposed policy (version {new_version}) written to {out}; review it, then load it as the "
                  "lender's policy")
    if report is not None:
        from service.web.cutoff_report import render

        report.write_text(render(result), encoding="utf-8")
        console.print(f"trade-off chart: {report}")


def _champion_change(change: str, registry, *, by: str | None, reason: str,  # noqa: ANN001, ANN202
                     version: str | None = None, comparison: dict | None = None):
    """A promotion or a rollback from the command line, audited in the database's chain (service/usecases)."""
    from service.scoring.registry import current_user
    from service.usecases import champion

    who = by or current_user()
    _, sessions = _database()
    with sessions() as session:
        if change == "promote":
            return champion.promote(session, registry=registry, version=str(version), by=who, actor=f"cli:{who}",
                                    reason=reason, comparison=comparison)
        return champion.rollback(session, registry=registry, by=who, actor=f"cli:{who}", reason=reason)


@models_app.command("export")
def models_export(
    version: Annotated[str, typer.Argument(metavar="VERSION", help="The registered version to export (smecredit "
                                                                  "models list)")],
    fmt: Annotated[str, typer.Option("--format", help="onnx (model.onnx + export.json) or mlflow (an MLflow "
                                                      "pyfunc model directory) for a LightGBM model; scorecard "
                                                      "(points.csv + scorecard.xlsx) for a scorecard")],
    out: Annotated[Path, typer.Option(help="Folder to write; must not exist unless --force")],
    force: Annotated[bool, typer.Option(help="Replace an existing --out (only once the new export is complete)")]
    = False,
    registry: RegistryOpt = None,
) -> None:
    """Write a bundle in a standard format, checked against the bundle before it is kept (docs/notebooks.md);
    needs the optional extra: pip install 'smecredit\\[export]'.

    Example: smecredit models export m1a2b3c4d5e6 --format onnx --out exports/m1a2b3c4d5e6
    """
    from service.export import ExportError, export_model

    _setup_logging(verbose=False)
    try:
        result = export_model(_registry(registry), version, fmt, out, force=force)
    except ExportError as exc:
        _fail(str(exc))  # the message names the extra as smecredit[export]: _fail prints it as it is
    console.print(f"[green]exported[/] {result.version} as {result.format} to {escape(str(result.out))}: "
                  f"{escape(result.summary)}")


@models_app.command("history")
def models_history(registry: RegistryOpt = None) -> None:
    """The append-only log of registrations, promotions and rollbacks.

    Example: smecredit models history --registry models
    """
    table = RichTable()
    for col in ("at", "event", "version", "previous", "by", "reason"):
        table.add_column(col)
    for e in _registry(registry).events():
        table.add_row(e.at, e.event, e.version, e.previous or "", e.by, e.reason)
    console.print(table)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes")] = 1,
) -> None:
    """Serve the scoring API (settings from SMECREDIT_* environment variables; DATABASE_URL for PostgreSQL).

    Example: smecredit serve --host 127.0.0.1 --port 8000 --workers 2
    """
    import uvicorn

    from service import logs
    from service.config import get_settings

    try:
        settings = get_settings()
    except ValueError as exc:
        _fail(str(exc))
    logs.configure(settings.log_level, settings.log_format_in_effect)
    # uvicorn's own access log prints raw paths (tokens, decision ids): ours logs route templates instead.
    # service.edge:EdgeProtocol is uvicorn's httptools protocol plus the head-size limit, the head and body
    # deadlines and the connection and in-flight caps, all from the same settings (each worker reads them).
    # log_config None: uvicorn's own lines go through the service's configuration (service/logs.py).
    config = {"app": "service.main:served_app", "factory": True, "http": "service.edge:EdgeProtocol", "ws": "none",
              "server_header": False, "timeout_graceful_shutdown": 30, "log_level": settings.log_level.lower(),
              "access_log": False, "log_config": None}
    if workers == 1:
        uvicorn.run(host=host, port=port, **config)
        return
    # A listening socket per worker (SO_REUSEPORT), so that the kernel spreads connections evenly: see
    # service/supervisor.py for why uvicorn's shared socket does not.
    from service.supervisor import Supervisor

    raise typer.Exit(Supervisor(host, port, workers, {**config, "host": host, "port": port}).run())


keys_app = typer.Typer(no_args_is_help=True, help="API keys per tenant: create, list, revoke.\n\n"
                       "Example: smecredit keys list --tenant bank-a")
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant (lender) name; created if new")],
    scopes: Annotated[str, typer.Option(help="Comma-separated: score, review, admin, platform")] = "score",
    policy: Annotated[str | None, typer.Option(help="Policy name for a new tenant (<policies_dir>/<name>.yaml)")]
    = None,
    label: Annotated[str | None, typer.Option(help="A note to recognise the key by")] = None,
) -> None:
    """Create an API key and print it once; only its hash is stored.

    Example: smecredit keys create --tenant bank-a --scopes score,review --label "loan origination"
    """
    from service.db import repo

    _, sessions = _database()
    with sessions.begin() as session:
        t = repo.get_or_create_tenant(session, name=tenant, policy=policy)
        try:
            key = repo.create_api_key(session, tenant=t, scopes=[s.strip() for s in scopes.split(",") if s.strip()],
                                      label=label)
        except ValueError as exc:
            _fail(str(exc))
    console.print(f"tenant {tenant}: new key with scopes {scopes} (shown once, store it now):")
    print(key)


@keys_app.command("list")
def keys_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys (default: every tenant's)")] = None,
) -> None:
    """Every API key, oldest first, revoked ones included: its prefix, tenant, scopes, label, the day it was
    created and the day it was revoked (UTC; the audit trail has the times); never the key or its hash.

    Example: smecredit keys list --tenant bank-a
    """
    from service.db import repo

    _, sessions = _database()
    with sessions() as session:
        found = None if tenant is None else _tenant(session, tenant)
        keys = repo.list_api_keys(session, tenant=found)
    table = RichTable(title=f"{len(keys)} API key(s)" + (f" of {tenant}" if tenant else ""))
    for col in ("prefix", "tenant", "scopes", "label", "created", "revoked"):  # fits 80 columns: scopes, label wrap
        table.add_column(col, no_wrap=col in ("prefix", "created", "revoked"), overflow="fold")
    for k in keys:
        table.add_row(k.prefix, escape(k.tenant), ", ".join(k.scopes), escape(k.label or ""),
                      f"{k.created_at:%Y-%m-%d}", f"{k.revoked_at:%Y-%m-%d}" if k.revoked_at else "no")
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(prefix: Annotated[str, typer.Argument(help="The key's prefix: the part after 'sk_' "
                                                           "(smecredit keys list)")]) -> None:
    """Revoke an API key: refused at once on every replica when Redis is configured (SMECREDIT_REDIS_URL),
    otherwise once their cached entry expires (SMECREDIT_KEY_CACHE_SECONDS, 5 s by default).

    Example: smecredit keys revoke 3f9a1c2b7d4e   # a prefix from smecredit keys list
    """
    from service.config import get_settings
    from service.db import repo
    from service.runtime import announce_revocation

    _, sessions = _database()
    with sessions() as session:
        if not repo.revoke_api_key(session, prefix=prefix, actor="cli"):
            _fail(f"no active key with prefix {prefix!r}")
        session.commit()
    settings = get_settings()
    if announce_revocation(settings.redis_url, prefix):
        console.print(f"revoked key sk_{prefix}_... (every replica told through Redis)")
    else:
        console.print(f"revoked key sk_{prefix}_...; replicas refuse it within {settings.key_cache_seconds:g} s")


@app.command()
def demo(
    tenant: Annotated[str, typer.Option(help="Demo tenant name")] = "demo",
    request: Annotated[Path, typer.Option(help="Example request to show")] = EXAMPLE_REQUEST,
) -> None:
    """Create a demo tenant and a fresh all-scopes API key; print them with an example request.

    Example: smecredit demo --tenant demo --request openapi/examples/score_request.json
    """
    from service.db import repo

    _, sessions = _database()
    with sessions.begin() as session:
        t = repo.get_or_create_tenant(session, name=tenant)
        key = repo.create_api_key(session, tenant=t, scopes=["score", "review", "admin", "platform"],
                                  label="make run")
    print(f"""
Demo tenant '{tenant}', API key (scopes score, review, admin, platform; shown once):

    export SMECREDIT_KEY={key}

Score the example application (a synthetic small business) once the service is up:

    curl -s -X POST http://127.0.0.1:8000/v1/scores \\
      -H "Authorization: Bearer $SMECREDIT_KEY" -H "Content-Type: application/json" \\
      -d @{request}

API documentation: http://127.0.0.1:8000/docs
""")


audit_app = typer.Typer(no_args_is_help=True, help="The audit trail: verify the hash chain and the decisions.\n\n"
                        "Example: smecredit audit verify")
app.add_typer(audit_app, name="audit")


def _tenant(session, name: str):  # noqa: ANN001, ANN202
    """The tenant named on the command line, or exit 2 naming the tenants there are."""
    from service.db import repo

    found = repo.get_tenant_by_name(session, name=name)
    if found is None:
        _fail(f"--tenant: no tenant named {name!r} (tenants: {', '.join(repo.tenant_names(session)) or 'none'})")
    return found


def _database():  # noqa: ANN202
    """The settings and a session factory on a migrated database: every command that touches it starts here."""
    from service.config import get_settings
    from service.db.session import make_engine, migrate, session_factory

    settings = get_settings()
    engine = make_engine(settings.database_url)
    migrate(engine)
    return settings, session_factory(engine)


@audit_app.command("verify")
def audit_verify(
    anchor: Annotated[Path | None, typer.Option(help="An anchor written by 'audit anchor': also catch the newest "
                                                     "events being deleted")] = None,
) -> None:
    """Walk the hash-chained audit trail and cross-check every decision, review, consent, API key and tenant;
    exit 1 on any edit, insertion, deletion or reordering.

    Example: smecredit audit verify --anchor anchor.json   # written by smecredit audit anchor --out anchor.json
    """
    import json

    from service import audit

    anchored = None
    if anchor is not None:
        try:
            anchored = audit.Anchor.from_json(json.loads(anchor.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            _fail(f"--anchor {anchor}: {exc}")
    _, sessions = _database()
    with sessions() as session:
        count, problems = audit.verify(session, anchored=anchored)
    if problems:
        for p in problems[:50]:
            console.print(f"[bold red]FAILED[/] {p.where}: {p.what}")
        console.print(f"{len(problems)} problem(s) in {count} audit events")
        raise typer.Exit(code=1)
    reaches = f"; it reaches the anchor at event {anchored.count}" if anchored else ""
    console.print(f"[green]ok[/] {count} audit events chain correctly; every decision, review, consent, key and "
                  f"tenant matches its record{reaches}")


@audit_app.command("anchor")
def audit_anchor(
    out: Annotated[Path | None, typer.Option(help="Also write the anchor to this file (JSON)")] = None,
) -> None:
    """Print the chain's head (event count and newest hash) as JSON: keep it outside the database (a log store,
    a ticket) and pass it to 'audit verify --anchor' to catch the newest events being deleted.

    Example: smecredit audit anchor --out anchor.json
    """
    import json

    from service import audit

    _, sessions = _database()
    with sessions() as session:
        head = audit.anchor(session)
    text = json.dumps(head.to_json())
    if out is not None:
        out.write_text(text + "\n", encoding="utf-8")
    print(text)


monitor_app = typer.Typer(no_args_is_help=True, help="After the decision: drift, back-tests, early warning.\n\n"
                          "Example: smecredit monitor drift --since 2025-01-01 --html drift.html")
app.add_typer(monitor_app, name="monitor")


@monitor_app.command("replay")
def monitor_replay(rescoring_id: Annotated[int, typer.Argument(help="The rescoring's id")],
                   registry: RegistryOpt = None) -> None:
    """Recompute a recorded rescoring (POST /v1/monitoring/rescore) from its feature snapshot and lead indicators
    with its model and policy versions; exit 1 if anything differs.

    Example: smecredit monitor replay 42
    """
    from service.errors import NotFound
    from service.runtime import DEFAULT_POLICY
    from service.scoring.bundle import BundleError
    from service.usecases.rescore import replay_rescoring

    settings, sessions = _database()
    dirs = [DEFAULT_POLICY.parent] + ([settings.policies_dir] if settings.policies_dir else [])
    with sessions() as session:
        try:
            result = replay_rescoring(session, rescoring_id=rescoring_id, registry=registry or settings.registry,
                                      policy_dirs=dirs)
        except (NotFound, BundleError, ValueError) as exc:
            _fail(getattr(exc, "detail", str(exc)))
    if result.differences:
        for d in result.differences:
            console.print(f"[bold red]DIFFERS[/] {d}")
        raise typer.Exit(code=1)
    r = result.rescoring
    console.print(f"[green]identical[/]: loan {r.loan_id} as of {r.as_of}: PD {r.pd_then:.4f} -> {r.pd_now:.4f}, "
                  f"grade {r.grade_then} -> {r.grade_now}, {r.level or 'no warning'} {', '.join(r.triggers)}")


@monitor_app.command("portfolio")
def monitor_portfolio(
    data: Annotated[Path, typer.Option(help="Data folder with the book (loans.parquet) and the newest months")],
    registry: RegistryOpt = None,
    model: Annotated[str | None, typer.Option(help="Model version (default: the champion)")] = None,
    policy: Annotated[Path | None, typer.Option(help="Policy YAML (default: the shipped default)")] = None,
    as_of: Annotated[str | None, typer.Option(help="Monitor as of this month, YYYY-MM (default: after the book "
                                                   "date)")] = None,
    top: Annotated[int, typer.Option(min=1, help="Warnings to print")] = 20,
    evaluate: Annotated[int, typer.Option(min=0, max=36, help="Also replay the last N months and measure how "
                                                                "early the warnings came")] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write every warning as JSON")] = None,
    html: Annotated[Path | None, typer.Option(help="Write the HTML report")] = None,
    dask: Annotated[str | None, typer.Option(help="Rescore on Dask: 'local' or a scheduler address")] = None,
) -> None:
    """Rescore every live loan with the same engine, add the operating signals, list the warnings by
    expected loss, and recommend each credit line's next step (raise, hold, cut, freeze) with the largest changes.

    Example: smecredit monitor portfolio --data data/synth --evaluate 12 --html portfolio.html
    """
    import dataclasses
    import json

    import numpy as np

    from service.monitoring.lines import counts as line_counts
    from service.runtime import DEFAULT_POLICY
    from service.scoring.bundle import BundleError, load_bundle
    from service.scoring.engine import Engine
    from service.scoring.policy import PolicyError, load_policy
    from service.scoring.raw import ContractError, load_folder, month_index
    from service.scoring.registry import RegistryError
    from service.usecases.portfolio import evaluate_warnings
    from service.usecases.portfolio import monitor_portfolio as run_monitor

    reg, version = _model_of(registry, model)
    month = None
    if as_of is not None:
        try:
            month = int(month_index(np.array([np.datetime64(as_of, "M")]))[0])
        except ValueError:
            _fail(f"--as-of must be YYYY-MM, got {as_of!r}")
    try:
        engine = Engine(load_bundle(reg.path(version)))
        lender = load_policy(policy or DEFAULT_POLICY)
        folder = load_folder(data)
        scorer = None
        if dask is not None:
            from service.batch.distributed import score_book_distributed

            def scorer(*, engine: Engine, **kw: object) -> object:  # noqa: ARG001 - the workers load their own
                return score_book_distributed(bundle_dir=reg.path(version), address=dask, **kw)
        run = run_monitor(data=folder, engine=engine, policy=lender, as_of_month=month, score=scorer)
        quality = evaluate_warnings(data=folder, engine=engine, policy=lender, months=evaluate) if evaluate else None
    except (ContractError, BundleError, RegistryError, PolicyError, ValueError) as exc:
        _fail(str(exc))
    table = RichTable(title=f"early warnings as of {run.as_of}: {len(run.warnings)} of {run.watched} live loans "
                            f"({run.model_version}, {run.policy_version})")
    for col in ("loan", "level", "triggers", "PD then", "PD now", "grade", "exposure", "expected loss", "reasons"):
        table.add_column(col)
    for w in run.warnings[:top]:
        table.add_row(w.loan_id, w.level, ", ".join(w.triggers), f"{w.pd_then:.3f}", f"{w.pd_now:.3f}",
                      f"{w.grade_then}->{w.grade_now}", f"{w.exposure:,.0f}", f"{w.expected_loss:,.0f}",
                      ", ".join(r.group for r in w.reasons))
    console.print(table)
    _print_line_recommendations(run.recommendations, top)
    if quality is not None:
        q = quality.quality
        rate = "n/a" if q.detection_rate is None else f"{q.detection_rate:.1%}"
        alarms = "n/a" if q.false_alarm_rate is None else f"{q.false_alarm_rate:.1%}"
        console.print(f"replayed {quality.months[0]}..{quality.months[-1]}: {q.warned_ahead} of {q.defaults} "
                      f"defaults warned at least a month ahead ({rate}), median lead {q.median_lead_months} "
                      f"months; {q.false_alarms} of {q.live_non_defaulting} loans that did not default were warned "
                      f"({alarms})")
    if json_out is not None:
        body = {"as_of": run.as_of, "watched": run.watched, "model_version": run.model_version,
                "policy_version": run.policy_version, "warnings": [dataclasses.asdict(w) for w in run.warnings],
                "line_counts": line_counts(run.recommendations),
                "recommendations": [r.to_json() for r in run.recommendations]}
        if quality is not None:
            body["evaluation"] = {**dataclasses.asdict(quality.quality), "months": quality.months,
                                  "warnings_per_month": quality.warnings_per_month,
                                  "detection_rate": quality.quality.detection_rate,
                                  "false_alarm_rate": quality.quality.false_alarm_rate}
        json_out.write_text(json.dumps(body, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    if html is not None:
        from service.web.portfolio_report import render_portfolio

        html.write_text(render_portfolio(run, quality), encoding="utf-8")
        console.print(f"wrote {html}")


def _print_line_recommendations(recs: list, top: int) -> None:
    """Counts by action, then the largest changes of limit of each action (a freeze: its frozen undrawn part)."""
    from service.monitoring.lines import counts

    by_action = ", ".join(f"{n} {a}" for a, n in counts(recs).items())
    table = RichTable(title=f"credit lines: {len(recs)} live lines ({by_action}); largest changes")
    for col in ("loan", "action", "limit", "recommended", "change", "reasons"):
        table.add_column(col)
    each = max(1, -(-top // 3))  # recs come grouped by action, largest change first
    shown = [r for a in ("freeze", "cut", "raise") for r in [r for r in recs if r.action == a and r.change][:each]]
    for r in shown:
        table.add_row(r.loan_id, r.action, f"{r.current_limit:,.0f}", f"{r.recommended_limit:,.0f}",
                      f"{r.change:+,.0f}", ", ".join(c.code for c in r.reasons))
    console.print(table)


data_app = typer.Typer(no_args_is_help=True, help="Raw data at rest: key rotation and retention.\n\n"
                       "Example: smecredit data retention --days 180")
app.add_typer(data_app, name="data")


@data_app.command("rotate")
def data_rotate() -> None:
    """Re-encrypt stored raw data under the first key of SMECREDIT_DATA_KEYS (then the old key can go).

    Example: smecredit data rotate   # once the new key is first in SMECREDIT_DATA_KEYS, the old one after it
    """
    from service.crypto import Keyring, KeyringError
    from service.db import repo

    settings, sessions = _database()
    try:
        keyring = Keyring.parse(settings.data_keys.get_secret_value())
        with sessions() as session:
            count = repo.rotate_raw_inputs(session, keyring=keyring)
            repo.append_audit(session, tenant_id=None, actor="cli", action="data.rotated", subject=keyring.current,
                              payload={"rows": count})
            session.commit()
    except KeyringError as exc:
        _fail(str(exc))
    console.print(f"re-encrypted {count} row(s) under key {keyring.current!r}")


@data_app.command("retention")
def data_retention(
    days: Annotated[int | None, typer.Option(min=1, help="Keep raw data this many days (default: setting)")] = None,
) -> None:
    """Delete encrypted raw request data older than the retention period. Decision records are never deleted.

    Example: smecredit data retention --days 180
    """
    import datetime as dt

    from service.db import repo
    from service.db.session import checkpoint_after_purge

    settings, sessions = _database()
    keep = days or settings.raw_retention_days
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=keep)
    with sessions() as session:
        purged = repo.purge_raw_before(session, cutoff=cutoff)
        session.commit()
        checkpoint_after_purge(session.get_bind())
    console.print(f"deleted {purged} raw record(s) older than {keep} days; decision records kept")


graph_app = typer.Typer(no_args_is_help=True, help="The related-party graph the service matches applicants "
                        "against.\n\nExample: smecredit graph build --data data/synth")
app.add_typer(graph_app, name="graph")


@graph_app.command("build")
def graph_build(
    data: Annotated[Path, typer.Option(help="Contract data folder with the link files (links, guarantees, "
                                            "counterparties) and every firm's monthly records")],
    registry: RegistryOpt = None,
) -> None:
    """Index the folder's firms, links, defaults and arrears, and publish the index as the one the service uses
    (REGISTRY/graph/<version>; earlier versions are kept). A running service picks it up with the next model it
    loads, or at restart.

    Example: smecredit graph build --data data/synth --registry models
    """
    from service.scoring.graph import GraphError
    from service.scoring.raw import ContractError
    from service.scoring.registry import default_registry
    from service.usecases.graph import build_graph

    try:
        built = build_graph(data, registry or default_registry())
    except (ContractError, GraphError, OSError) as exc:
        _fail(str(exc))
    console.print(f"graph {built['version']}: {built['firms']:,} firms, {built['entities']:,} shared entities, "
                  f"{built['guarantees']:,} guarantees, {built['trade_rows']:,} trade rows; built for applications to "
                  f"{built['applications_to_month']}")


fraud_app = typer.Typer(no_args_is_help=True, help="The application fraud score, trained on known fraud rings.\n\n"
                        "Example: smecredit fraud train --data data/synth")
app.add_typer(fraud_app, name="fraud")


@fraud_app.command("train")
def fraud_train(
    data: Annotated[Path, typer.Option(help="Contract folder with the link files and ground_truth_rings.parquet "
                                            "(enterprise_id, ring_id): the firms known to be in fraud rings")],
    registry: RegistryOpt = None,
    seed: Annotated[int, typer.Option(help="LightGBM seed (same data, seed: same model bytes)")] = 7,
    target_false_rejection: Annotated[float, typer.Option(
        help="Share of honest applications the threshold may flag, at most, on the validation months")] = 0.02,
) -> None:
    """Train the fraud score on the known rings (out of time: the latest applications are the test) and publish
    it as the one the service uses (REGISTRY/fraud/<version>; earlier versions are kept). The policy's fraud
    checks read it as fraud_score and fraud_flag.

    Example: smecredit fraud train --data data/synth --registry models
    """
    _require_training("fraud train")
    _setup_logging(verbose=False)
    from service.scoring.fraud import FraudModelError
    from service.scoring.raw import ContractError
    from service.scoring.registry import default_registry
    from training.fraud import FraudConfig, train_from_folder

    try:
        trained, version = train_from_folder(
            data, FraudConfig(seed=seed, target_false_rejection=target_false_rejection),
            registry=registry or default_registry())
    except (ContractError, FraudModelError, ValueError, OSError) as exc:
        _fail(str(exc))
    m = trained.metrics["test"]
    console.print(f"fraud model {version}: threshold {trained.metadata.threshold:.4f}; out of time: detection "
                  f"{m['detection_rate']:.1%}, false rejections {m['false_rejection_rate']:.2%}, precision "
                  f"{m['precision']:.1%}, AUC {m['auc']:.4f}, rings caught {m['rings_caught']}/{m['rings']}")


@app.command()
def replay(decision_id: str, registry: RegistryOpt = None) -> None:
    """Recompute a past decision from its stored feature snapshot, model bundle and policy; exit 1 if it
    differs in any way.

    Example: smecredit replay 9b2f4c1d0e8a4f6b8c3d2e1f0a9b8c7d   # the decision_id of a POST /v1/scores response
    """
    from service import audit
    from service.db.tables import Decision
    from service.runtime import DEFAULT_POLICY
    from service.scoring.bundle import BundleError

    settings, sessions = _database()
    with sessions() as session:
        decision = session.get(Decision, decision_id)
    if decision is None:
        _fail(f"no decision {decision_id!r} in the database")
    dirs = [DEFAULT_POLICY.parent] + ([settings.policies_dir] if settings.policies_dir else [])
    try:
        result = audit.replay(decision, registry=registry or settings.registry, policy_dirs=dirs)
    except (BundleError, ValueError) as exc:
        _fail(str(exc))
    table = RichTable(title=f"replay of {decision_id} ({decision.model_version}, {decision.policy_version})")
    for col in ("", "recorded", "replayed"):
        table.add_column(col)
    s = result.scored
    for label, a, b in (("pd", decision.pd, s.pd), ("score", decision.score, s.score),
                        ("grade", decision.grade, s.grade), ("decision", decision.decision, s.outcome.decision)):
        table.add_row(label, repr(a), repr(b))
    console.print(table)
    if result.differences:
        for d in result.differences:
            console.print(f"[bold red]DIFFERS[/] {d}")
        raise typer.Exit(code=1)
    console.print("[green]identical[/]: PD, score, grade, decision, offer, reasons and every contribution")


@app.command()
def score(
    data: Annotated[Path, typer.Option(help="Data folder that follows the data contract")],
    out: Annotated[Path, typer.Option(help="Output file (.parquet or .csv)")],
    registry: RegistryOpt = None,
    model: Annotated[str | None, typer.Option(help="Model version (default: the champion)")] = None,
    policy: Annotated[Path | None, typer.Option(help="Policy YAML (default: the shipped default)")] = None,
    dask: Annotated[str | None, typer.Option(help="Score on Dask: 'local' or a scheduler address")] = None,
) -> None:
    """Score every application of a data folder offline, with the same code as the API.

    Example: smecredit score --data data/synth --out scores.parquet --registry models
    """
    from service.batch.features import write_table
    from service.batch.score import score_folder
    from service.runtime import DEFAULT_POLICY
    from service.scoring.bundle import BundleError
    from service.scoring.policy import PolicyError, load_policy
    from service.scoring.raw import ContractError
    from service.scoring.registry import RegistryError

    if out.suffix not in (".parquet", ".csv"):
        _fail(f"--out must end in .parquet or .csv, got {out.name!r}")
    reg, version = _model_of(registry, model)
    _setup_logging(verbose=False)  # the loader's warnings: a file read as GB18030, say
    started = time.perf_counter()
    try:
        table = score_folder(data, reg.path(version), load_policy(policy or DEFAULT_POLICY), dask_address=dask)
    except (ContractError, BundleError, RegistryError, PolicyError, ValueError) as exc:
        _fail(str(exc))
    write_table(table, out)
    counts = {d: table.column("decision").to_pylist().count(d) for d in ("approve", "refer", "decline")}
    console.print(f"scored {table.num_rows:,} applications with {version} in {time.perf_counter() - started:.1f} s: "
                  + ", ".join(f"{k} {v:,}" for k, v in counts.items()))


@app.command()
def openapi(
    write: Annotated[bool, typer.Option(help="Write openapi/openapi.json instead of printing")] = False,
) -> None:
    """The OpenAPI document generated from the app (committed as openapi/openapi.json).

    Example: smecredit openapi --write
    """
    from service.openapi_doc import openapi_json

    text = openapi_json()
    if write:
        Path("openapi/openapi.json").write_text(text, encoding="utf-8")
        console.print("wrote openapi/openapi.json")
    else:
        print(text, end="")


@app.command()
def example(
    data: Annotated[Path, typer.Option(help="Data folder to take the applicant from")],
    out: Annotated[Path, typer.Option(help="Where to write the request JSON")],
    application_id: Annotated[str | None, typer.Option(help="Default: the first with every source")] = None,
) -> None:
    """Write a valid POST /v1/scores request built from a data folder.

    Example: smecredit example --data data/synth --application-id A00000022-0 \\
                 --out openapi/examples/score_request.json
    """
    import json

    from service.batch.requests import request_for
    from service.scoring.raw import ContractError, load_folder

    try:
        body = request_for(load_folder(data), application_id)
    except (ContractError, ValueError) as exc:
        _fail(str(exc))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(body, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    console.print(f"wrote {out} (application {body['application']['application_id']})")


@app.command()
def docs(
    write: Annotated[bool, typer.Option(help="Rewrite docs/data-contract.md and docs/features.md in place")] = False,
) -> None:
    """Print (or rewrite) the generated parts of the data contract and feature catalogue docs.

    Example: smecredit docs --write
    """
    from service.docs import GENERATED, render

    for path, (begin, end, make) in GENERATED.items():
        if write:
            Path(path).write_text(render(Path(path).read_text(encoding="utf-8"), begin, end, make()), encoding="utf-8")
            console.print(f"rewrote {path}")
        else:
            print(make())


# --- monitor backtest / monitor performance (issue 10, item 3: performance before labels mature) ----------


@monitor_app.command("backtest")
def monitor_backtest(
    data: Annotated[Path, typer.Option(help="Data folder with outcomes (applications.defaulted_12m)")],
    model: Annotated[str | None, typer.Option(help="Model version (default: the champion)")] = None,
    registry: RegistryOpt = None,
    policy: Annotated[Path | None, typer.Option(help="Policy YAML (default: the shipped default)")] = None,
    by: Annotated[str, typer.Option(help="Vintage: month or quarter of application")] = "month",
    alpha: Annotated[float, typer.Option(help="Level of the Jeffreys test")] = 0.05,
    two_sided: Annotated[bool, typer.Option(help="Also flag grades whose realised rate is significantly below")]
    = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the full result as JSON")] = None,
    html: Annotated[Path | None, typer.Option(help="Write the HTML report")] = None,
) -> None:
    """Back-test PDs by vintage and grade on a labelled folder: predicted PD vs realised default rate with the
    Jeffreys test, expected vs realised default rate and AUC per vintage; exit 1 when a grade is flagged.

    Example: smecredit monitor backtest --data data/synth --by quarter --html backtest.html
    """
    import json

    from service.runtime import DEFAULT_POLICY
    from service.scoring.bundle import BundleError
    from service.scoring.policy import PolicyError, load_policy
    from service.scoring.raw import ContractError
    from service.scoring.registry import RegistryError
    from service.usecases.backtest import backtest_folder
    from service.web.backtest_report import render

    reg, version = _model_of(registry, model)
    if by not in ("month", "quarter"):
        _fail(f"--by must be month or quarter, got {by!r}")
    if not 0 < alpha < 0.5:
        _fail(f"--alpha must be between 0 and 0.5 (exclusive), got {alpha}")
    try:
        result = backtest_folder(folder=data, bundle_dir=reg.path(version),
                                 policy=load_policy(policy or DEFAULT_POLICY), by=by, alpha=alpha,
                                 two_sided=two_sided)
    except (ContractError, BundleError, RegistryError, PolicyError, ValueError) as exc:
        _fail(str(exc))
    b = result.backtest
    pct = lambda v: "-" if v is None else f"{100 * v:.2f}%"  # noqa: E731
    table = RichTable(title=f"back-test of {result.model_version}: {result.mature_applications:,} mature of "
                            f"{result.applications:,} applications (mature up to {result.mature_until})")
    for col in ("grade", "n", "defaults", "PD", "realised", f"Jeffreys {100 * alpha:g}%..{100 * (1 - alpha):g}%",
                "p-value", "flag"):
        table.add_column(col, justify="left" if col in ("grade", "flag") else "right")
    for t in b.grades:
        table.add_row(t.grade, f"{t.n:,}", f"{t.defaults:,}", pct(t.mean_pd), pct(t.realised_rate),
                      f"{pct(t.interval[0])}..{pct(t.interval[1])}", f"{t.p_value:.4f}",
                      f"[bold red]{t.flag}[/]" if t.flag else "")
    console.print(table)
    vt = RichTable(title=f"by vintage ({by})")
    for col in ("vintage", "n", "expected DR", "band", "realised DR", "expected AUC", "realised AUC", "flags"):
        vt.add_column(col, justify="left" if col in ("vintage", "flags") else "right")
    auc = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for v in b.vintages:
        e = v.estimate
        vt.add_row(v.vintage + ("" if v.mature else "*"), f"{e.n:,}", pct(e.expected_default_rate),
                   f"{pct(e.default_rate_band[0])}..{pct(e.default_rate_band[1])}", pct(e.realised_default_rate),
                   auc(e.expected_auc), auc(e.realised_auc), ", ".join(e.flags))
    console.print(vt)
    console.print("* not mature yet: expected values only")
    if json_out is not None:
        json_out.write_text(json.dumps(result.to_json(), indent=1) + "\n", encoding="utf-8")
    if html is not None:
        html.write_text(render(result), encoding="utf-8")
    if b.flagged:
        console.print(f"[bold red]flagged[/]: grade(s) {', '.join(b.flagged)} at {100 * alpha:g}%")
        raise typer.Exit(code=1)
    console.print("[green]ok[/]: no grade flagged")


@monitor_app.command("performance")
def monitor_performance(
    since: Annotated[str, typer.Option(help="First day of decisions, YYYY-MM-DD (UTC)")],
    until: Annotated[str | None, typer.Option(help="Last day, inclusive, YYYY-MM-DD (default: today)")] = None,
    tenant: Annotated[str | None, typer.Option(help="Tenant name (default: every tenant)")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the result as JSON")] = None,
) -> None:
    """Expected default rate and AUC of recent decisions, from their calibrated PDs (before outcomes mature).

    Example: smecredit monitor performance --since 2025-01-01 --tenant demo
    """
    import datetime as dt
    import json

    from service.usecases.backtest import WindowError, expected_performance

    dates = {}
    for name, value in (("since", since), ("until", until)):
        try:
            dates[name] = dt.date.fromisoformat(value) if value is not None else None
        except ValueError:
            _fail(f"--{name} must be a date YYYY-MM-DD, got {value!r}")
    _, sessions = _database()
    with sessions() as session:
        tenant_id = None if tenant is None else _tenant(session, tenant).id
        try:
            r = expected_performance(session, tenant_id=tenant_id, since=dates["since"], until=dates["until"])
        except WindowError as exc:
            _fail(f"--{exc.field}: {exc.rule}")
    pct = lambda v: "-" if v is None else f"{100 * v:.2f}%"  # noqa: E731
    auc = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    table = RichTable(title=f"expected performance of {r.decisions:,} decisions, {r.since} to {r.until}"
                            + (f" ({tenant})" if tenant else " (every tenant)"))
    for col in ("vintage", "n", "expected DR", "band", "expected AUC", "AUC band", "matured", "their expected DR",
                "realised DR", "realised AUC", "flags"):
        table.add_column(col, justify="left" if col in ("vintage", "flags") else "right")
    rows = [(v.vintage, v.estimate, v.matured) for v in r.vintages] + (
        [("all", r.overall, r.matured)] if r.overall else [])
    for label, e, m in rows:
        table.add_row(label, f"{e.n:,}", pct(e.expected_default_rate),
                      f"{pct(e.default_rate_band[0])}..{pct(e.default_rate_band[1])}", auc(e.expected_auc),
                      f"{auc(e.auc_band[0])}..{auc(e.auc_band[1])}" if e.auc_band else "-",
                      f"{m.n:,}" if m else "0", pct(m.expected_default_rate) if m else "-",
                      pct(m.realised_default_rate) if m else "-", auc(m.realised_auc) if m else "-",
                      ", ".join(m.flags) if m else "")
    console.print(table)
    console.print(f"realised outcomes: {r.realised_source}")
    if json_out is not None:
        json_out.write_text(json.dumps(r.to_json(), indent=1, default=str) + "\n", encoding="utf-8")


@app.command()
def stress(
    data: Annotated[Path, typer.Option(help="Data folder with the borrowers' operating data up to the book date")],
    scenario: Annotated[str, typer.Option(help="A shipped scenario (mild, severe, extreme) or a scenario YAML file")],
    book: Annotated[Path | None, typer.Option(help="The loan book file (the data contract's loans; default: the "
                                                   "data folder's loans.parquet)")] = None,
    registry: RegistryOpt = None,
    model: Annotated[str | None, typer.Option(help="Model version (default: the champion)")] = None,
    policy: Annotated[Path | None, typer.Option(help="Policy YAML (default: the shipped default)")] = None,
    html: Annotated[Path | None, typer.Option(help="Write the HTML report here")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report as JSON here")] = None,
) -> None:
    """Apply a macro scenario to the book's live borrowers, rescore them, and report PD, expected loss, grade
    migration, approval and concentration per segment, baseline vs stressed (docs/stress.md).

    Example: smecredit stress --data data/synth --scenario severe --html stress.html
    """
    from service.monitoring.stress import ScenarioError, load_scenario
    from service.runtime import DEFAULT_POLICY
    from service.scoring.bundle import BundleError, load_bundle
    from service.scoring.engine import Engine
    from service.scoring.policy import PolicyError, load_policy
    from service.scoring.raw import ContractError
    from service.scoring.registry import RegistryError
    from service.usecases.stress import stress_folder
    from service.web.stress_report import render_report

    reg, version = _model_of(registry, model)
    started = time.perf_counter()
    try:
        chosen = load_scenario(scenario)
        engine = Engine(load_bundle(reg.path(version)))
        report = stress_folder(book=book, data=data, scenario=chosen, engine=engine,
                               policy=load_policy(policy or DEFAULT_POLICY))
    except (ScenarioError, ContractError, BundleError, RegistryError, PolicyError, ValueError) as exc:
        _fail(str(exc))
    t = report.totals
    table = RichTable(title=f"stress '{chosen.name}' on the book of {report.as_of_month}: {t.loans:,} live loans "
                            f"({report.model_version}, {time.perf_counter() - started:.1f} s)")
    for col in ("segment", "loans", "PD base", "PD stressed", "EL base", "EL stressed", "EL change", "approval"):
        table.add_column(col, justify="left" if col == "segment" else "right")

    def row(label: str, x) -> None:  # noqa: ANN001
        change = "n/a" if x.el_change_pct is None else f"{x.el_change_pct:+.1%}"
        table.add_row(label, f"{x.loans:,}", f"{x.pd_baseline:.2%}", f"{x.pd_stressed:.2%}", f"{x.el_baseline:,.0f}",
                      f"{x.el_stressed:,.0f}", change, f"{x.approval_baseline:.0%} -> {x.approval_stressed:.0%}")

    row("book", t)
    for s in report.segments:
        row(f"{s.dimension}: {s.label}", s.totals)
    console.print(table)
    for line in report.explanation:
        console.print(f"- {line}")
    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(render_report(report), encoding="utf-8")
        console.print(f"wrote {html}")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(report.model_dump_json(indent=1) + "\n", encoding="utf-8")
        console.print(f"wrote {json_out}")


@monitor_app.command("drift")
def monitor_drift(
    since: Annotated[str, typer.Option(help="First application date of the window, YYYY-MM-DD")],
    until: Annotated[str | None, typer.Option(help="Last application date, inclusive, YYYY-MM-DD (default: today)")]
    = None,
    tenant: Annotated[str | None, typer.Option(help="The tenant's decisions (default: every tenant's)")] = None,
    data: Annotated[Path | None, typer.Option(help="Score this data folder offline instead of reading decisions")]
    = None,
    segment: Annotated[str | None, typer.Option(help="all, region, industry, region=R or industry=I")] = None,
    html: Annotated[Path | None, typer.Option(help="Write the HTML report")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the full result as JSON")] = None,
    config: Annotated[Path | None, typer.Option(help="Thresholds YAML (default: service/monitoring/drift.yaml)")]
    = None,
    model: Annotated[str | None, typer.Option(help="Model version (default: the champion)")] = None,
    registry: RegistryOpt = None,
) -> None:
    """Drift of the applications dated in a window (decisions in the database, or a data folder) against the
    model's training references: PSI and a G-test for the score, PD, every feature and reason group, per
    segment, each month against the same season; flagged subjects first, with what changed and since when.

    Example: smecredit monitor drift --since 2025-01-01 --html drift.html
    Example: smecredit monitor drift --data data/synth --since 2025-01-01 --segment region
    """
    import datetime
    import json

    from service.monitoring.drift import load_drift_config
    from service.scoring.bundle import BundleError, load_bundle
    from service.scoring.raw import ContractError, business_today
    from service.scoring.registry import RegistryError
    from service.usecases import drift as usecase
    from service.web.drift_report import render_drift_report

    dates = {}
    for name, value in (("since", since), ("until", until)):
        try:
            dates[name] = datetime.date.fromisoformat(value) if value is not None else business_today()
        except ValueError:
            _fail(f"--{name}: {value!r} is not a date (YYYY-MM-DD)")
    first, last = dates["since"], dates["until"]
    reg, version = _model_of(registry, model)
    if tenant is not None and data is not None:
        _fail("--tenant selects decisions in the database; a --data folder has no tenants")
    try:
        cfg = load_drift_config(config)
        bundle = load_bundle(reg.path(version))
        if data is not None:
            result = usecase.drift_of_folder(folder=data, bundle=bundle, since=first, until=last, segment=segment,
                                             config=cfg)
        else:

            _, sessions = _database()
            with sessions() as session:
                found = None if tenant is None else _tenant(session, tenant)
                result = usecase.drift_of_decisions(session, bundle=bundle, tenant=found, since=first, until=last,
                                                    segment=segment, config=cfg)
    except usecase.DriftInputError as exc:
        _fail(f"--{exc.field}: {exc.message}")
    except (ContractError, BundleError, RegistryError, ValueError, OSError) as exc:
        _fail(str(exc))
    console.print(result.message)
    if result.report is not None:
        flagged = [i for i in result.report.items if i.flagged]
        table = RichTable(title=f"flagged: {len(flagged)} (act first)")
        for col in ("status", "segment", "subject", "PSI", "since", "what changed"):
            table.add_column(col)
        for i in flagged[:40]:
            changed = "; ".join(f"{b.bin} {b.reference_share:.0%}→{b.window_share:.0%}" for b in i.what_changed)
            table.add_row(i.status, i.segment, f"{i.kind}:{i.subject}", f"{i.psi:.3f}", (i.since or "")[:7], changed)
        console.print(table)
    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(render_drift_report(result), encoding="utf-8")
        console.print(f"wrote {html}")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result.to_json(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        console.print(f"wrote {json_out}")


if __name__ == "__main__":
    app()
