"""Staff may pause the runs of a request: no system starts until they resume it.

Revision ID: 0007_request_hold_runs
Revises: 0006_recipient_notifications
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_request_hold_runs"
down_revision = "0006_recipient_notifications"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("data_subject_request") as batch:
        batch.add_column(
            sa.Column("runs_paused", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade():
    with op.batch_alter_table("data_subject_request") as batch:
        batch.drop_column("runs_paused")
