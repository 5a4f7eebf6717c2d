"""Generated documentation stays in step with the code that defines it."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.docs import GENERATED, generated_part

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted(GENERATED))
def test_generated_docs_are_current(path: str) -> None:
    begin, end, make = GENERATED[path]
    assert generated_part((ROOT / path).read_text(encoding="utf-8"), begin, end) == make().strip("\n"), (
        f"{path} is stale: run `smecredit docs --write`")
