"""Remember when the verification email and its reminder went out.

Revision ID: 0002_verification_reminders
Revises: 389da67e4c5e
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_verification_reminders"
down_revision = "389da67e4c5e"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("data_subject_request") as batch:
        batch.add_column(sa.Column("verify_sent_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("reminder_sent_at", sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table("data_subject_request") as batch:
        batch.drop_column("reminder_sent_at")
        batch.drop_column("verify_sent_at")
