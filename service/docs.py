"""Docs that are generated from code: the data contract and the feature catalogue, between markers."""

from __future__ import annotations

from collections.abc import Callable

from service.scoring.catalog import catalog_markdown
from service.scoring.raw import contract_markdown

GENERATED: dict[str, tuple[str, str, Callable[[], str]]] = {
    "docs/data-contract.md": ("<!-- contract:begin -->", "<!-- contract:end -->", contract_markdown),
    "docs/features.md": ("<!-- catalog:begin -->", "<!-- catalog:end -->", catalog_markdown),
}


def generated_part(text: str, begin: str, end: str) -> str:
    return text.split(begin, 1)[1].split(end, 1)[0].strip("\n")


def render(text: str, begin: str, end: str, body: str) -> str:
    head, rest = text.split(begin, 1)
    body = body.strip("\n")
    return f"{head}{begin}\n{body}\n{end}{rest.split(end, 1)[1]}"
