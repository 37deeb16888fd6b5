"""Each run says when it was last put on the queue and when its worker last showed life.

``queued_at`` lets the watchdog find a planned run whose task was lost (a broker that
restarted without persistence); ``heartbeat_at`` lets it tell a long erasure that is still
going from one whose worker died.  ``data_subject_request.purged_at`` records when a
closed request's personal data was purged at the end of its retention.

Revision ID: 0008_run_progress
Revises: 0007_request_hold_runs
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_run_progress"
down_revision = "0007_request_hold_runs"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("system_run") as batch:
        batch.add_column(sa.Column("queued_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(), nullable=True))
    with op.batch_alter_table("data_subject_request") as batch:
        batch.add_column(sa.Column("purged_at", sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table("data_subject_request") as batch:
        batch.drop_column("purged_at")
    with op.batch_alter_table("system_run") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("queued_at")
