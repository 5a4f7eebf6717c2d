"""loans: the book of loans booked on approved decisions, with their monthly servicing

Revision ID: 0004
Revises: 0003

Every write to a loan is sealed by the audit chain (``loan.created``, ``loan.serviced``), as reviews and consents
are; the table is new, so there are no earlier rows to seal.
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('loans',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('decision_id', sa.String(length=32), nullable=False),
    sa.Column('loan_ref', sa.String(length=64), nullable=False),
    sa.Column('applicant_ref', sa.String(length=64), nullable=False),
    sa.Column('product', sa.String(length=16), nullable=False),
    sa.Column('limit', sa.Float(), nullable=False),
    sa.Column('drawn', sa.Float(), nullable=False),
    sa.Column('outstanding', sa.Float(), nullable=False),
    sa.Column('term_months', sa.Integer(), nullable=False),
    sa.Column('apr', sa.Float(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('days_past_due', sa.Integer(), nullable=False),
    sa.Column('origination_date', sa.Date(), nullable=False),
    sa.Column('default_month', sa.Date(), nullable=True),
    sa.Column('as_of_month', sa.Date(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['decision_id'], ['decisions.id'], ),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('decision_id'),
    sa.UniqueConstraint('tenant_id', 'loan_ref', name='uq_loans_tenant_ref')
    )
    with op.batch_alter_table('loans', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_loans_applicant_ref'), ['applicant_ref'], unique=False)
        batch_op.create_index('ix_loans_tenant_id', ['tenant_id', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('loans', schema=None) as batch_op:
        batch_op.drop_index('ix_loans_tenant_id')
        batch_op.drop_index(batch_op.f('ix_loans_applicant_ref'))
    op.drop_table('loans')
