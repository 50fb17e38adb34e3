"""pause: a job's pause request, and the attempts that stopped on purpose

The new statuses (``paused`` for jobs and sweeps) need nothing here: status columns are
VARCHAR(16) holding the enum's value (service/store/models.py).

Revision ID: 0006_pause
Revises: 0005
Create Date: 2026-12-03 09:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0006_pause'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pause_requested', sa.Boolean(),
                                      server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('stopped_attempts', sa.Integer(), server_default='0',
                                      nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('stopped_attempts')
        batch_op.drop_column('pause_requested')
