"""rescorings: live loans rescored with their newest operating data, the warnings raised and the credit-line
recommendations made, replayable

Revision ID: 0005
Revises: 0004

Each row is written once and sealed in the audit chain (``loan.rescored``); the table is new, so there are no
earlier rows to seal.
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('rescorings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('loan_id', sa.Integer(), nullable=False),
    sa.Column('as_of', sa.Date(), nullable=False),
    sa.Column('model_version', sa.String(length=32), nullable=False),
    sa.Column('policy_version', sa.String(length=128), nullable=False),
    sa.Column('pd_then', sa.Float(), nullable=False),
    sa.Column('grade_then', sa.String(length=8), nullable=False),
    sa.Column('pd_now', sa.Float(), nullable=False),
    sa.Column('grade_now', sa.String(length=8), nullable=False),
    sa.Column('level', sa.String(length=8), nullable=True),
    sa.Column('triggers', sa.JSON(), nullable=False),
    sa.Column('reasons', sa.JSON(), nullable=False),
    sa.Column('indicators', sa.JSON(), nullable=False),
    sa.Column('features', sa.JSON(), nullable=False),
    sa.Column('exposure', sa.Float(), nullable=False),
    sa.Column('expected_loss', sa.Float(), nullable=False),
    sa.Column('line', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['loan_id'], ['loans.id'], ),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('rescorings', schema=None) as batch_op:
        batch_op.create_index('ix_rescorings_tenant_loan', ['tenant_id', 'loan_id', 'id'], unique=False)
    op.create_table('line_links',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('rescoring_id', sa.Integer(), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['rescoring_id'], ['rescorings.id'], ),
    sa.PrimaryKeyConstraint('token_hash')
    )
    with op.batch_alter_table('line_links', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_line_links_rescoring_id'), ['rescoring_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('line_links', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_line_links_rescoring_id'))
    op.drop_table('line_links')
    with op.batch_alter_table('rescorings', schema=None) as batch_op:
        batch_op.drop_index('ix_rescorings_tenant_loan')
    op.drop_table('rescorings')
