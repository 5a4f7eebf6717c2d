"""Publishing the lender's related-party graph: a data folder's firms and links, indexed for online scoring."""

from __future__ import annotations

from pathlib import Path

from service.scoring.graph import publish_graph
from service.scoring.raw import ContractError, load_folder


def build_graph(data: Path, registry: Path) -> dict:
    """Index every firm of the contract folder ``data`` (it must hold the link files) and make the index the one
    the service matches applicants against. Returns the published version and what it holds."""
    folder = load_folder(data)  # raises ContractError listing every problem of every file
    if folder.graph is None:
        raise ContractError(str(data), "the folder has none of the link files (links, guarantees, "
                                       "counterparties): there is no graph to build")
    index = folder.graph
    version = publish_graph(index, registry)
    return {"version": version, "firms": index.n_firms, "entities": len(index.entity_keys),
            "guarantees": len(index.g_firm) // 2, "trade_rows": len(index.t_firm),
            "applications_to_month": index.last_month_date()}
