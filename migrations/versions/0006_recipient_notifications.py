"""Recipients told of an erasure (GDPR Art. 19) and their acknowledgements.

Revision ID: 0006_recipient_notifications
Revises: 0005_dpo_workspace
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_recipient_notifications"
down_revision = "0005_dpo_workspace"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "recipient_notification",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("system", sa.String(length=64), nullable=False),
        sa.Column("recipient", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("acknowledged_at", sa.DateTime(), nullable=True),
        sa.Column("acknowledged_by", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["request_id"], ["data_subject_request.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("request_id", "system", "recipient"),
    )
    op.create_index(
        "ix_recipient_notification_request_id", "recipient_notification", ["request_id"]
    )


def downgrade():
    op.drop_index("ix_recipient_notification_request_id", table_name="recipient_notification")
    op.drop_table("recipient_notification")
