"""The command line as a newcomer meets it: --version, an example in every command's help that parses with that
command, no `<bool>` placeholders, `keys list`, and train's one-of-two input said in its help and its error."""

from __future__ import annotations

import importlib.metadata
import inspect
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from service import cli
from service.cli import app
from service.config import get_settings
from service.db.repo import sha256_hex

runner = CliRunner()


def flat(text: str) -> str:
    return " ".join(text.split())


Command = typer.core.TyperCommand | typer.core.TyperGroup


def walk(command: Command, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Command]]:
    """Every group and command of the app, from the app itself down (a new command is found without a list)."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from walk(sub, (*path, name))


COMMANDS = dict(walk(typer.main.get_command(app)))


def examples(command: Command) -> list[str]:
    """The 'Example:' lines of a command's help, continuation lines joined, without the leading 'Example:'."""
    lines = inspect.cleandoc(command.help or "").splitlines()
    found = []
    for i, line in enumerate(lines):
        if line.startswith("Example:"):
            text = line.removeprefix("Example:").strip()
            while text.endswith("\\"):
                i += 1
                text = text[:-1].rstrip() + " " + lines[i].strip()
            found.append(text)
    return found


def parse(example: str) -> list[tuple[str, ...]]:
    """Each `smecredit ...` of an example parsed by the command it names: unknown options, a missing required
    option or a value of the wrong type raise the usage errors a terminal would show."""
    parsed = []
    for part in example.split("&&"):
        words = shlex.split(part, comments=True)
        assert words[0] == "smecredit", example
        path: tuple[str, ...] = ()
        words = words[1:]
        while words and path + (words[0],) in COMMANDS:
            path, words = path + (words[0],), words[1:]
        command = COMMANDS[path]
        assert not isinstance(command, typer.core.TyperGroup), f"{example!r} names no command"
        command.make_context(" ".join(("smecredit", *path)), words)
        parsed.append(path)
    return parsed


def test_the_walk_finds_every_command() -> None:
    leaves = [p for p, c in COMMANDS.items() if not isinstance(c, typer.core.TyperGroup)]
    assert len(leaves) >= 32 and ("keys", "list") in COMMANDS and ("monitor", "drift") in COMMANDS


def test_version_prints_the_installed_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"smecredit {importlib.metadata.version('smecredit')}"


class TestHelp:
    @pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "smecredit")
    def test_every_command_shows_an_example_and_no_bool_placeholder(self, path: tuple[str, ...]) -> None:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, result.output
        assert "Example: smecredit" in result.output
        assert "<bool>" not in result.output

    @pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "smecredit")
    def test_every_example_parses_with_the_command_it_names(self, path: tuple[str, ...]) -> None:
        command = COMMANDS[path]
        found = examples(command)
        assert found, f"no example in the help of {' '.join(path) or 'smecredit'}"
        for example in found:
            named = parse(example)
            assert path in named or any(p[:len(path)] == path for p in named), (example, path)

    def test_an_example_with_a_wrong_option_is_caught(self) -> None:
        with pytest.raises(typer.TyperException, match="No such option: --out"):
            parse("smecredit stress --data data/synth --scenario severe --out stress.html")
        with pytest.raises(typer.TyperException, match="Missing parameter: scenario"):
            parse("smecredit stress --data data/synth")
        with pytest.raises(typer.TyperException, match="valid integer"):
            parse("smecredit monitor replay latest")

    def test_the_readme_command_lines_parse(self) -> None:
        readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
        lines = [line.removeprefix(".venv/bin/") for line in readme.splitlines()
                 if line.startswith(".venv/bin/smecredit ")]
        assert len(lines) >= 25
        named = {path for line in lines for path in parse(line)}
        assert {("keys", "list"), ("keys", "revoke"), ("train",)} <= named

    def test_brackets_in_help_survive_rich_markup(self) -> None:
        result = runner.invoke(app, ["models", "export", "--help"])
        assert "pip install 'smecredit[export]'" in flat(result.output)


class TestTrainInput:
    def test_help_says_exactly_one_of_data_or_table(self) -> None:
        result = runner.invoke(app, ["train", "--help"])
        assert "Exactly one of --data (a contract data folder) or --table (your own feature table, with --target) " \
               "is needed" in flat(result.output)

    @pytest.mark.parametrize("args", [[], ["--data", "data/synth", "--table", "t.csv", "--target", "y"]],
                             ids=["neither", "both"])
    def test_neither_or_both_exit_2_naming_both(self, args: list[str]) -> None:
        result = runner.invoke(app, ["train", *args])
        assert result.exit_code == 2
        assert "give exactly one of --data (a contract data folder) or --table (your own feature table)" \
               in flat(result.output)


class TestKeysList:
    def rows(self, output: str) -> dict[str, dict[str, str]]:
        """The table's rows by prefix, as {column: cell}."""
        lines = [[c.strip() for c in line.split("│")[1:-1]] for line in output.splitlines() if "│" in line]
        header = [c.strip() for c in next(line for line in output.splitlines() if "┃" in line).split("┃")[1:-1]]
        return {cells[0]: dict(zip(header, cells, strict=True)) for cells in lines}

    def test_created_and_revoked_keys_without_the_keys(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("SMECREDIT_DATABASE_URL", f"sqlite:///{tmp_path}/db.sqlite")
        monkeypatch.setattr(cli, "console", Console(stderr=True, width=200))  # one line per row, to read cells
        get_settings.cache_clear()
        try:
            created = [runner.invoke(app, ["keys", "create", "--tenant", "bank-a", "--scopes", "score,review",
                                           "--label", "origination"]),
                       runner.invoke(app, ["keys", "create", "--tenant", "bank-b"])]
            keys = [r.output.strip().splitlines()[-1] for r in created]
            prefixes = [k.split("_")[1] for k in keys]
            revoked = runner.invoke(app, ["keys", "revoke", prefixes[1]])
            listed = runner.invoke(app, ["keys", "list"])
            of_a = runner.invoke(app, ["keys", "list", "--tenant", "bank-a"])
            unknown = runner.invoke(app, ["keys", "list", "--tenant", "bank-z"])
        finally:
            get_settings.cache_clear()
        assert all(r.exit_code == 0 for r in (*created, revoked, listed, of_a)), [r.output for r in created]
        rows = self.rows(listed.output)
        assert list(rows) == prefixes
        a, b = rows[prefixes[0]], rows[prefixes[1]]
        assert a == {"prefix": prefixes[0], "tenant": "bank-a", "scopes": "review, score", "label": "origination",
                     "created": a["created"], "revoked": "no"}
        assert b == {"prefix": prefixes[1], "tenant": "bank-b", "scopes": "score", "label": "",
                     "created": b["created"], "revoked": b["revoked"]}
        assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", day) for day in (a["created"], b["created"], b["revoked"]))
        assert b["revoked"] >= b["created"]
        assert list(self.rows(of_a.output)) == prefixes[:1]
        for secret in (*keys, *(sha256_hex(k) for k in keys)):
            assert secret not in listed.output and secret[3:20] not in listed.output
        assert unknown.exit_code == 2 and "--tenant: no tenant named 'bank-z' (tenants: bank-a, bank-b)" \
            in flat(unknown.output)
