"""Alembic environment: runs on the connection handed over by service.db.session.migrate (or a URL)."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import engine_from_config, pool

from service.db.session import normalise_url
from service.db.tables import Base

target_metadata = Base.metadata
config = context.config


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = normalise_url(os.environ.get("DATABASE_URL", "sqlite:///data/smecredit.db"))
    engine = engine_from_config({"sqlalchemy.url": url}, prefix="sqlalchemy.", poolclass=pool.NullPool)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run()
