"""The layers of docs/architecture.md, checked on every import statement (lazy ones inside functions included):
no import cycle among the project's modules, and no import that runs up the layers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "training")
# module prefix -> prefixes it must never import (project modules or libraries)
FORBIDDEN = {
    "service.scoring": ("service.api", "service.db", "service.usecases", "service.web", "service.batch", "training",
                        "fastapi", "sqlalchemy", "pandas"),
    "service.monitoring": ("service.api", "service.db", "service.usecases", "service.web", "training", "fastapi",
                           "sqlalchemy"),
    "service.api": ("training",),
    "service.db": ("service.api", "service.usecases", "training"),
    "service.usecases": ("service.api", "training"),
    "service.batch": ("service.api", "service.db", "training"),
    "training": ("service.api", "service.db", "service.usecases"),
}


def _imports() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            deps: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    deps.add(node.module)
                    deps.update(f"{node.module}.{a.name}" for a in node.names)  # `from service import logs`
                elif isinstance(node, ast.Import):
                    deps.update(a.name for a in node.names)
            found[name] = deps
    return found


IMPORTS = _imports()


def _project(dep: str) -> str | None:
    """The project module ``dep`` names (a name imported from a module resolves to that module)."""
    while dep and dep not in IMPORTS:
        dep = dep.rpartition(".")[0]
    return dep or None


def test_there_are_modules_to_check() -> None:
    assert len(IMPORTS) > 80 and "service.scoring.engine" in IMPORTS


def upward(imports: dict[str, set[str]], layer: str) -> list[str]:
    return sorted(f"{module} imports {dep}" for module, deps in imports.items()
                  if module == layer or module.startswith(layer + ".")
                  for dep in deps for banned in FORBIDDEN[layer] if dep == banned or dep.startswith(banned + "."))


def cycles_of(graph: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return cycles


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_import_runs_up_the_layers(layer: str) -> None:
    assert upward(IMPORTS, layer) == []


def test_no_import_cycle() -> None:
    graph = {m: {p for d in deps if (p := _project(d)) and p != m} for m, deps in IMPORTS.items()}
    # A package's __init__ and its own modules are one unit, not a cycle of the code's layers.
    graph = {m: {d for d in ds if not m.startswith(d + ".")} for m, ds in graph.items()}
    assert cycles_of(graph) == []


def test_the_checks_find_what_they_look_for() -> None:
    """A guard: both checks fail on a planted cycle and a planted upward import (they must not pass by seeing
    nothing)."""
    assert cycles_of({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    planted = {"service.scoring.features": {"numpy", "service.db.repo"}}
    assert upward(planted, "service.scoring") == ["service.scoring.features imports service.db.repo"]
