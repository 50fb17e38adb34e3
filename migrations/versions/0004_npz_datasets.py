"""npz datasets: a dataset's format (csv or npz) and the profile of an .npz's arrays

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 06:10:00
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('format', sa.String(length=8), server_default='csv',
                                      nullable=False))
        batch_op.add_column(sa.Column('profile', sa.JSON().with_variant(
            postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.drop_column('profile')
        batch_op.drop_column('format')
