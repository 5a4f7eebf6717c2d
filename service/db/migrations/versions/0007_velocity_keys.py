"""velocity_keys: keyed references of each decision's applicant firm and of the owners, legal representatives,
phones and receiving accounts it named, for the fraud checks' velocity counts

Revision ID: 0007
Revises: 0006

The table is new and its rows are written with each decision from now on: decisions made before it count for
nothing in a velocity window (the references were never stored in a form that could be keyed afterwards).
"""

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('velocity_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('applicant_ref', sa.String(length=64), nullable=False),
    sa.Column('decision_id', sa.String(length=32), nullable=False),
    sa.Column('purpose', sa.String(length=32), nullable=False),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('velocity_keys', schema=None) as batch_op:
        batch_op.create_index('ix_velocity_keys_lookup', ['tenant_id', 'key', 'decided_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('velocity_keys', schema=None) as batch_op:
        batch_op.drop_index('ix_velocity_keys_lookup')
    op.drop_table('velocity_keys')
