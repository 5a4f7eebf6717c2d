"""explanation links of their own; every row that affects a decision or a data subject's rights sealed

Revision ID: 0003
Revises: 0002

- ``explanation_links``: a decision may have several valid links (an idempotent retry adds one rather than
  replacing the link the first response carried). Existing tokens move there with their expiry.
- Reviews, consents, API keys and tenants are now sealed by the audit chain (a digest of each row in the event
  that wrote it). Rows written before this revision get one ``audit.baseline`` event that seals them as they
  are now, so that ``smecredit audit verify`` covers them from here on.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.orm import Session

from service.db import repo  # the digest and the chain are the application's own

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('explanation_links',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('decision_id', sa.String(length=32), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['decision_id'], ['decisions.id'], ),
    sa.PrimaryKeyConstraint('token_hash')
    )
    with op.batch_alter_table('explanation_links', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_explanation_links_decision_id'), ['decision_id'], unique=False)
    op.execute("INSERT INTO explanation_links (token_hash, decision_id, expires_at, created_at) "
               "SELECT token_hash, id, token_expires_at, created_at FROM decisions "
               "WHERE token_hash IS NOT NULL AND token_expires_at IS NOT NULL")
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.drop_column('token_expires_at')
        batch_op.drop_column('token_hash')

    _seal_existing_rows()


# The sealed columns as they stand at this revision (repo.SEALED declares the current ones): a later revision
# that adds a sealed column reseals, and upgrading from before this one still reads only what exists here.
SEALED_AT_0003 = {
    "tenants": ("id", "name", "policy", "created_at"),
    "api_keys": ("id", "tenant_id", "prefix", "key_hash", "scopes", "label", "created_at", "revoked_at"),
    "reviews": ("id", "decision_id", "tenant_id", "status", "requested_by", "request_note", "reviewer", "outcome",
                "reason", "created_at", "decided_at"),
    "consents": ("id", "tenant_id", "applicant_ref", "decision_id", "source", "granted", "recorded_at"),
}


def _seal_existing_rows() -> None:
    """One audit.baseline event sealing every row of the sealed tables as it stands."""
    bind = op.get_bind()
    sealed = {}
    for table, columns in SEALED_AT_0003.items():
        t = sa.Table(table, sa.MetaData(), autoload_with=bind)  # the types as they stand at this revision
        for row in bind.execute(sa.select(*(t.c[c] for c in columns)).order_by(t.c.id)).mappings():
            sealed[f"{table}:{row['id']}"] = repo.digest_record(dict(row))
    if sealed:
        with Session(bind=bind) as session:
            repo.append_audit(session, tenant_id=None, actor="migration", action=repo.BASELINE,
                              subject="sealed rows", payload={"tables": list(SEALED_AT_0003)}, sealed=sealed)
            session.flush()


def downgrade() -> None:
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('token_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('token_expires_at', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('explanation_links', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_explanation_links_decision_id'))
    op.drop_table('explanation_links')
