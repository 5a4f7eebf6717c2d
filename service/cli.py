"""The ``smecredit`` command line: one entry point for data, features, training and serving.

Commands import their modules lazily so that ``smecredit --help`` stays fast.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table as RichTable

app = typer.Typer(add_completion=False, no_args_is_help=True, help="SME credit scoring from operating data.")
console = Console(stderr=True)


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=2)


@app.command()
def synth(
    out: Annotated[Path, typer.Option(help="Folder to write the contract's Parquet files into")],
    entities: Annotated[int, typer.Option(min=1, max=20_000_000, help="Number of enterprises")] = 20_000,
    months: Annotated[int, typer.Option(min=13, max=120, help="Months of operating data")] = 36,
    seed: Annotated[int, typer.Option(min=0, help="Random seed; same arguments give the same files")] = 7,
    end_month: Annotated[str, typer.Option(help="Last month with data, YYYY-MM")] = "2025-10",
) -> None:
    """Generate realistic synthetic SME data that follows the data contract."""
    from rich.progress import Progress

    from training import synth as synth_mod

    try:
        cfg = synth_mod.SynthConfig(entities=entities, months=months, seed=seed, end_month=end_month)
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
) -> None:
    """Build point-in-time features for every application in a data folder."""
    from service.scoring.raw import ContractError
    from training.featurize import featurize_folder

    if out.suffix not in (".parquet", ".csv"):
        _fail(f"--out must end in .parquet or .csv, got {out.name!r}")
    started = time.perf_counter()
    try:
        n_rows, n_features = featurize_folder(data, out, log=console.log)
    except ContractError as exc:
        _fail(str(exc))
    console.print(f"wrote {n_rows:,} applications x {n_features} features to {out} "
                  f"in {time.perf_counter() - started:.1f} s")


@app.command()
def docs(
    write: Annotated[bool, typer.Option(help="Rewrite docs/data-contract.md and docs/features.md in place")] = False,
) -> None:
    """Print (or rewrite) the generated parts of the data contract and feature catalogue docs."""
    from service.docs import GENERATED, render

    for path, (begin, end, make) in GENERATED.items():
        if write:
            Path(path).write_text(render(Path(path).read_text(encoding="utf-8"), begin, end, make()), encoding="utf-8")
            console.print(f"rewrote {path}")
        else:
            print(make())


if __name__ == "__main__":
    app()
