"""Stress tests, once for the CLI (a book file and a data folder) and the API (the book in the database).

Both end in ``service.monitoring.stress.stress_book``: the live loans rescored by ``Engine.score`` on their
operating data as it is and under the scenario, compared per segment.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from service.crypto import Keyring, KeyringError
from service.db import repo
from service.errors import NotFound
from service.monitoring.stress import (
    Scenario,
    StressConfig,
    StressReport,
    book_loans,
    load_config,
    loans_from_requests,
    stress_book,
)
from service.scoring.engine import Engine
from service.scoring.policy import Policy
from service.scoring.raw import ContractError, Table, load_book, load_folder
from service.usecases.loans import book_table


def stress_folder(*, book: Path | None, data: Path, scenario: Scenario, engine: Engine, policy: Policy,
                  config: StressConfig | None = None) -> StressReport:
    """A loan book file (or the data folder's own loans file) against the operating data of a data folder
    (``smecredit stress``)."""
    config = config or load_config()
    folder = load_folder(data)
    if book is not None:
        table, name = load_book(book), book.name
    elif folder.book is not None:
        table, name = folder.book, "loans"
    else:
        raise ContractError(str(data), "no loan book: pass --book FILE or put loans.parquet in the data folder")
    return stress_book(engine, policy, book_loans(folder, table, config, file=name), scenario, config)


@dataclass(frozen=True)
class StoredBook:
    """The tenant's loans as the database keeps them: the book's columns, and the decision each came from."""

    loans: Table  # the columns of the data contract's ``loans`` source
    decision_ids: list[str]  # one per loan


def stored_book(session: Session, *, tenant_id: int) -> StoredBook:
    """The tenant's loan book from the database (loans booked with POST /v1/loans); 404 when it is empty."""
    table = book_table(session, tenant_id=tenant_id)
    if len(table["loan_id"]) == 0:
        raise NotFound("this tenant has no loans to stress; book approved decisions with POST /v1/loans")
    return StoredBook(loans=table, decision_ids=[str(d) for d in table["application_id"]])


def stress_stored(session: Session, *, tenant_id: int, keyring: Keyring, engine: Engine, policy: Policy,
                  scenario: Scenario, config: StressConfig | None = None) -> StressReport:
    """The tenant's book in the database, each loan rescored from the raw operating data its decision stored.
    Loans whose raw data is gone (consent withdrawn, retention) are counted in ``missing_raw``, not dropped
    silently."""
    config = config or load_config()
    book = stored_book(session, tenant_id=tenant_id)
    requests: list[dict | None] = []
    for decision_id in book.decision_ids:
        try:
            payload = repo.read_raw_input(session, keyring=keyring, decision_id=decision_id)
        except KeyringError:
            payload = None  # a key removed from the keyring: counted with the purged ones
        requests.append(payload)
    loans, missing = loans_from_requests(requests, book.loans, config)
    return stress_book(engine, policy, loans, scenario, config, missing_raw=missing)
