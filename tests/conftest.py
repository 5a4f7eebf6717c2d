"""Shared fixtures: small synthetic data folders generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from service.scoring.raw import RawData, load_folder
from training.synth import SynthConfig, write

pytest_plugins = ["tests.api_fixtures"]


def make_synth(folder: Path, entities: int, months: int = 36, seed: int = 7, links: bool = False) -> Path:
    """A synthetic folder. Without ``links`` (the default here) the firms are unlinked: no link files, no
    contagion, no fraud rings, the data every test before the graph was written for; the graph, fraud and
    contagion tests ask for ``links`` (``linked_dir``), as `make run` does."""
    write(SynthConfig(entities=entities, months=months, seed=seed, links=links), folder)
    return folder


def to_csv(src: Path, dst: Path) -> Path:
    """The same data folder as CSV files (what a risk team often hands over)."""
    dst.mkdir(parents=True, exist_ok=True)
    for p in src.glob("*.parquet"):
        pacsv.write_csv(pq.read_table(p), dst / f"{p.stem}.csv")
    return dst


@pytest.fixture(scope="session")
def small_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synth(tmp_path_factory.mktemp("synth") / "small", entities=3000)


@pytest.fixture(scope="session")
def small_raw(small_dir: Path) -> RawData:
    return load_folder(small_dir)


@pytest.fixture(scope="session")
def linked_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3,000 firms with links, guarantees, trade, contagion and planted fraud rings (ground truth)."""
    return make_synth(tmp_path_factory.mktemp("synth") / "linked", entities=3000, links=True)


@pytest.fixture(scope="session")
def linked_raw(linked_dir: Path) -> RawData:
    return load_folder(linked_dir)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synth(tmp_path_factory.mktemp("synth") / "tiny", entities=60, months=24, links=True)  # every file


@pytest.fixture(scope="session")
def mid_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The issues' reference data set, as `make run` makes it: 20,000 linked enterprises, 36 months, seed 7."""
    return make_synth(tmp_path_factory.mktemp("synth") / "mid", entities=20_000, links=True)
